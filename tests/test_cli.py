"""The article-classifier command line, end to end through a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

from schemas import ClassifiedArticleEvent

REPO = Path(__file__).resolve().parent.parent
DEMO_CORPUS = REPO / "model" / "samples" / "demo.jsonl"
SAMPLE_ARTICLES = REPO / "model" / "samples" / "articles.jsonl"


def run_cli(
    *args: str | Path, stdin: bytes = b"", env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    clean_env = {k: v for k, v in os.environ.items() if not k.startswith("ARTICLE_CLASSIFIER_")}
    return subprocess.run(
        [sys.executable, "-m", "service", *map(str, args)],
        input=stdin,
        capture_output=True,
        env={**clean_env, **(env or {})},
        timeout=300,
        check=False,
        cwd=REPO,
    )


@pytest.fixture(scope="module")
def demo_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "demo-model"
    result = run_cli("train", "--data", DEMO_CORPUS, "--out", out, "--name", "demo")
    assert result.returncode == 0, result.stderr.decode()
    return out


def test_train_writes_an_artifact_and_prints_cross_validated_metrics(demo_model: Path) -> None:
    """train writes the data files next to a model.json manifest naming the model."""
    manifest = json.loads((demo_model / "model.json").read_text())
    assert manifest["name"] == "demo"
    assert sorted(p.name for p in demo_model.iterdir()) == [
        "arrays.npz",
        "model.json",
        "params.json",
    ]


def test_classify_turns_each_sample_into_a_valid_output_line_in_order(demo_model: Path) -> None:
    """Every sample article becomes one ClassifiedArticleEvent line, in input order."""
    result = run_cli("classify", "--model", demo_model, "--input", SAMPLE_ARTICLES)
    assert result.returncode == 0, result.stderr.decode()
    inputs = [json.loads(line) for line in SAMPLE_ARTICLES.read_text().splitlines()]
    outputs = [
        ClassifiedArticleEvent.model_validate_json(line) for line in result.stdout.splitlines()
    ]
    assert [o.article_id for o in outputs] == [i["article_id"] for i in inputs]
    assert all(o.classification.section is not None for o in outputs)
    assert all(o.classification.model.name == "demo" for o in outputs)
    assert b"classified 24 article(s), 0 invalid" in result.stderr


def test_classify_is_deterministic(demo_model: Path) -> None:
    """Two runs on the same input give the same classifications."""
    first = run_cli("classify", "--model", demo_model, "--input", SAMPLE_ARTICLES)
    second = run_cli("classify", "--model", demo_model, "--input", SAMPLE_ARTICLES)

    def classifications(stdout: bytes) -> list[object]:
        return [json.loads(line)["classification"] for line in stdout.splitlines()]

    assert classifications(first.stdout) == classifications(second.stdout)


def test_classify_reports_invalid_lines_on_stderr_and_keeps_going(demo_model: Path) -> None:
    """Invalid lines are named by number and reason on stderr; valid ones are still classified."""
    lines = [
        b'{"article_id": "ok-1", "title": "Striker scores twice in cup final"}',
        b"{not json",
        b"",
        b'{"title": "no id"}',
        b'{"article_id": "ok-2", "body": "Parliament votes on the budget today."}',
        b'{"article_id": "bad-utf8", "title": "caf\xe9"}',
    ]
    result = run_cli("classify", "--model", demo_model, stdin=b"\n".join(lines) + b"\n")
    assert result.returncode == 0
    assert [json.loads(line)["article_id"] for line in result.stdout.splitlines()] == [
        "ok-1",
        "ok-2",
    ]
    stderr = result.stderr.decode()
    assert "line 2: invalid_json:" in stderr
    assert "line 4: schema_violation: article_id:" in stderr
    assert "line 6: invalid_utf8:" in stderr
    assert "Traceback" not in stderr


def test_strict_classify_fails_when_any_line_was_invalid(demo_model: Path) -> None:
    """--strict turns a skipped invalid line into a non-zero exit status."""
    stdin = b'{"article_id": "ok", "title": "Markets rally"}\n{oops\n'
    result = run_cli("classify", "--model", demo_model, "--strict", stdin=stdin)
    assert result.returncode == 1
    assert len(result.stdout.splitlines()) == 1


def test_options_come_from_the_environment_and_flags_win(demo_model: Path, tmp_path: Path) -> None:
    """ARTICLE_CLASSIFIER_MODEL stands in for --model, and an explicit --model overrides it."""
    stdin = b'{"article_id": "a", "title": "Election results are in"}\n'
    from_env = run_cli("classify", stdin=stdin, env={"ARTICLE_CLASSIFIER_MODEL": str(demo_model)})
    assert from_env.returncode == 0, from_env.stderr.decode()
    assert len(from_env.stdout.splitlines()) == 1
    overridden = run_cli(
        "classify",
        "--model",
        demo_model,
        stdin=stdin,
        env={"ARTICLE_CLASSIFIER_MODEL": str(tmp_path / "missing")},
    )
    assert overridden.returncode == 0, overridden.stderr.decode()


def test_a_bad_environment_value_is_a_usage_error() -> None:
    """An environment variable its option cannot parse exits 2 with the variable named."""
    result = run_cli("classify", "--model", "x", env={"ARTICLE_CLASSIFIER_MAX_EVENT_BYTES": "lots"})
    assert result.returncode == 2
    assert b"ARTICLE_CLASSIFIER_MAX_EVENT_BYTES='lots'" in result.stderr


def test_evaluate_json_prints_one_object_with_both_heads(demo_model: Path) -> None:
    """evaluate --json prints a single JSON object with section and tag metrics."""
    result = run_cli("evaluate", "--model", demo_model, "--data", DEMO_CORPUS, "--json")
    assert result.returncode == 0, result.stderr.decode()
    (line,) = result.stdout.splitlines()
    report = json.loads(line)
    assert 0.0 <= report["sections"]["accuracy"] <= 1.0
    assert 0.0 <= report["tags"]["micro_f1"] <= 1.0


def test_evaluate_prints_a_per_label_table(demo_model: Path) -> None:
    """Plain evaluate prints a table that names every section of the demo corpus."""
    result = run_cli("evaluate", "--model", demo_model, "--data", DEMO_CORPUS)
    assert result.returncode == 0, result.stderr.decode()
    for section in ("politics", "world", "business", "sport", "technology", "entertainment"):
        assert section in result.stdout.decode()


def test_a_missing_model_is_a_clear_error_not_a_traceback(tmp_path: Path) -> None:
    """Pointing at a directory without a model fails with one line and status 1."""
    result = run_cli("classify", "--model", tmp_path, stdin=b"")
    assert result.returncode == 1
    assert b"Traceback" not in result.stderr
    assert b"error:" in result.stderr


def test_a_tampered_model_is_refused(demo_model: Path, tmp_path: Path) -> None:
    """A model whose data file no longer matches its manifest is never loaded."""
    copy = tmp_path / "tampered"
    copy.mkdir()
    for item in demo_model.iterdir():
        (copy / item.name).write_bytes(item.read_bytes())
    data = bytearray((copy / "arrays.npz").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / "arrays.npz").write_bytes(bytes(data))
    result = run_cli("classify", "--model", copy, stdin=b"")
    assert result.returncode == 1
    assert b"sha256" in result.stderr.lower()


def test_train_fails_on_a_bad_line_naming_file_and_line(tmp_path: Path) -> None:
    """A corpus with a malformed line fails the run and says where; --skip-invalid skips it."""
    corpus = tmp_path / "corpus.jsonl"
    good = DEMO_CORPUS.read_text().splitlines()
    corpus.write_text("\n".join([*good[:100], "{broken", *good[100:]]) + "\n")
    failed = run_cli("train", "--data", corpus, "--out", tmp_path / "m")
    assert failed.returncode == 1
    assert f"{corpus}:101".encode() in failed.stderr
    skipped = run_cli("train", "--data", corpus, "--out", tmp_path / "m", "--skip-invalid")
    assert skipped.returncode == 0, skipped.stderr.decode()
    assert b"skipped 1 invalid line(s)" in skipped.stderr


@pytest.mark.parametrize("command", ["train", "evaluate", "classify", "serve"])
def test_every_subcommand_has_help_naming_its_environment_variables(command: str) -> None:
    """--help works for each subcommand and shows the ARTICLE_CLASSIFIER_* variables."""
    result = run_cli(command, "--help")
    assert result.returncode == 0
    assert b"[env: ARTICLE_CLASSIFIER_" in result.stdout


def test_train_chooses_words_and_char_ngrams_for_section_labels_alone(tmp_path: Path) -> None:
    """train without --features on a section archive (no tags) writes a model of words and
    character n-grams, and its manifest says the data chose them; --help says so too."""
    corpus = tmp_path / "sections.jsonl"
    lines = DEMO_CORPUS.read_text().splitlines()[::3]
    corpus.write_text(
        "".join(
            json.dumps({k: v for k, v in json.loads(line).items() if k != "tags"}) + "\n"
            for line in lines
        )
    )
    out = tmp_path / "sections"
    trained = run_cli("train", "--data", corpus, "--out", out)
    assert trained.returncode == 0, trained.stderr.decode()
    params = json.loads((out / "model.json").read_text())["params"]
    assert params["features"] == "word+char"
    assert params["features_chosen_by"] == "data: section labels only"
    assert b"word+char when the records carry section labels" in b" ".join(
        run_cli("train", "--help").stdout.split()
    )


def test_train_takes_the_feature_set_and_refuses_an_unknown_one(tmp_path: Path) -> None:
    """train --features char writes a character n-gram model that classify runs; an
    unknown feature set is a usage error naming the choices."""
    out = tmp_path / "chars"
    trained = run_cli("train", "--data", DEMO_CORPUS, "--out", out, "--features", "char")
    assert trained.returncode == 0, trained.stderr.decode()
    assert json.loads((out / "model.json").read_text())["params"]["features"] == "char"
    classified = run_cli(
        "classify", "--model", out, stdin=b'{"article_id": "a", "title": "Cup final tonight"}\n'
    )
    assert classified.returncode == 0, classified.stderr.decode()
    assert json.loads(classified.stdout)["classification"]["section"]["label"]
    refused = run_cli("train", "--data", DEMO_CORPUS, "--out", tmp_path / "x", "--features", "nope")
    assert refused.returncode == 2
    assert b"'word', 'char', 'word+char' or 'auto'" in refused.stderr
