"""One configuration per command: each command's flags, environment variables, secrets from
files and errors come from its settings class (``service.config``)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import typing
from pathlib import Path

import pytest
from conftest import ROOT, only_environment, serve_settings

from service.config.cli import check_environment, known_variables, settings_for
from service.config.commands import COMMANDS, ConfigError, ReclassifySettings, env_name


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ARTICLE_CLASSIFIER_")}
    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        capture_output=True,
        text=True,
        env={**clean, **(env or {})},
        cwd=ROOT,
        timeout=120,
        check=False,
    )


def _bare(annotation: object) -> object:
    """The annotation without Optional and Annotated metadata."""
    if typing.get_origin(annotation) is typing.Annotated:
        return _bare(typing.get_args(annotation)[0])
    arguments = [a for a in typing.get_args(annotation) if a is not type(None)]
    if type(None) in typing.get_args(annotation) and len(arguments) == 1:
        return _bare(arguments[0])
    return annotation


def test_a_variable_means_one_thing_in_every_command() -> None:
    """A field name (and so its environment variable) shared by commands has one type."""
    seen: dict[str, tuple[str, object]] = {}
    for command, settings_cls in COMMANDS.items():
        for name, field in settings_cls.model_fields.items():
            kind = _bare(field.annotation)
            if name in seen:
                other, other_kind = seen[name]
                assert kind == other_kind, f"{env_name(name)}: {other} and {command} differ"
            else:
                seen[name] = (command, kind)


def test_the_output_options_of_three_commands_have_three_variables() -> None:
    """train, dataset and keygen all take --out, each with a variable of its own."""
    names = {
        command: {
            env_name(name)
            for name, field in COMMANDS[command].model_fields.items()
            if (field.json_schema_extra or {}).get("flag") == "out"  # type: ignore[union-attr]
        }
        for command in ("train", "dataset", "keygen")
    }
    assert names == {
        "train": {"ARTICLE_CLASSIFIER_ARTIFACT_OUT"},
        "dataset": {"ARTICLE_CLASSIFIER_DATASET_OUT"},
        "keygen": {"ARTICLE_CLASSIFIER_KEYS_OUT"},
    }


def test_a_misspelt_variable_is_an_error_naming_the_closest_setting() -> None:
    """ARTICLE_CLASSIFIER_BOOTSTRAP_SERVER (no S) stops any command, naming the real one."""
    with pytest.raises(ConfigError, match="did you mean ARTICLE_CLASSIFIER_BOOTSTRAP_SERVERS"):
        check_environment({"ARTICLE_CLASSIFIER_BOOTSTRAP_SERVER": "kafka:9092"})
    result = _cli("keygen", "--out", "x", env={"ARTICLE_CLASSIFIER_MODLE": "/m"})
    assert result.returncode == 2
    assert "ARTICLE_CLASSIFIER_MODLE is not a setting of any command" in result.stderr
    assert "did you mean ARTICLE_CLASSIFIER_MODEL?" in result.stderr


def test_a_variable_of_another_command_is_not_an_error() -> None:
    """The service's variables in the environment of an offline command are left alone."""
    check_environment({"ARTICLE_CLASSIFIER_API_PORT": "8080", "PATH": "/bin"})
    assert "ARTICLE_CLASSIFIER_SASL_PLAIN_PASSWORD_FILE" in known_variables()


def test_flags_win_over_the_environment_and_empty_means_unset() -> None:
    """A flag overrides its variable; an empty variable leaves the default, except for a
    text option where empty is a value (no feedback consumer)."""
    settings = serve_settings(
        "--model",
        "m",
        "--batch-size",
        "32",
        env={
            "ARTICLE_CLASSIFIER_BATCH_SIZE": "64",
            "ARTICLE_CLASSIFIER_MAX_IN_FLIGHT_BATCHES": "2",
            "ARTICLE_CLASSIFIER_MODEL_SHA256": "",
            "ARTICLE_CLASSIFIER_FEEDBACK_TOPIC": "",
        },
    )
    assert (settings.batch_size, settings.max_in_flight_batches) == (32, 2)
    assert settings.model_sha256 is None
    assert settings.feedback_topic == ""


def test_a_bad_variable_is_named_with_its_value() -> None:
    """A value from the environment that cannot work names the variable, not the flag."""
    with pytest.raises(ConfigError, match="ARTICLE_CLASSIFIER_BATCH_SIZE='lots'"):
        serve_settings("--model", "m", env={"ARTICLE_CLASSIFIER_BATCH_SIZE": "lots"})


def test_a_secret_comes_from_the_file_its_variable_names(tmp_path: Path) -> None:
    """ARTICLE_CLASSIFIER_SASL_PLAIN_PASSWORD_FILE holds the password as a platform mounts
    it (a trailing newline dropped); the value never shows in the settings' repr."""
    secret = tmp_path / "password"
    secret.write_text("s3cret-value\n")
    settings = serve_settings(
        "--model",
        "m",
        "--security-protocol",
        "SASL_SSL",
        "--sasl-mechanism",
        "SCRAM-SHA-512",
        "--sasl-plain-username",
        "classifier",
        env={"ARTICLE_CLASSIFIER_SASL_PLAIN_PASSWORD_FILE": str(secret)},
    )
    assert settings.sasl_plain_password is not None
    assert settings.sasl_plain_password.get_secret_value() == "s3cret-value"
    assert "s3cret-value" not in repr(settings)


def test_an_unreadable_secret_file_is_named(tmp_path: Path) -> None:
    """A secret file that cannot be read is a configuration error naming the variable."""
    with pytest.raises(ConfigError, match="ARTICLE_CLASSIFIER_SASL_PLAIN_PASSWORD_FILE="):
        serve_settings(
            "--model",
            "m",
            env={"ARTICLE_CLASSIFIER_SASL_PLAIN_PASSWORD_FILE": str(tmp_path / "missing")},
        )


def test_each_command_offers_only_its_own_options() -> None:
    """reclassify has the pipeline's options and its own, none of serve's rollout, API,
    feedback or delivery options; the offline commands have no Kafka options."""
    replay = set(ReclassifySettings.model_fields)
    assert {"batch_size", "model_sha256_file", "explain", "reason"} <= replay
    assert not replay & {"api_port", "shadow_model", "feedback_topic", "processing_guarantee"}
    for command in ("train", "evaluate", "classify", "compare", "sign", "keygen"):
        assert "security_protocol" not in COMMANDS[command].model_fields, command


def test_help_shows_groups_choices_and_variables() -> None:
    """serve --help groups its options and shows each one's choices and variable."""
    result = _cli("serve", "--help", env={"COLUMNS": "200"})
    assert result.returncode == 0
    for title in ("Model:", "Kafka connection:", "Topics:", "Delivery:", "Suggest API:"):
        assert title in result.stdout
    assert "--security-protocol {PLAINTEXT,SSL,SASL_PLAINTEXT,SASL_SSL}" in result.stdout
    assert "[env: ARTICLE_CLASSIFIER_BOOTSTRAP_SERVERS]" in result.stdout


def test_version_prints_the_package_version() -> None:
    """article-classifier --version names the installed version."""
    result = _cli("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("article-classifier 0.")


def test_replay_timestamps_and_rate_are_parsed_once() -> None:
    """reclassify's times become epoch ms and its rate a number, from flags or variables."""
    with only_environment({"ARTICLE_CLASSIFIER_RATE_LIMIT": "500/s"}):
        settings = settings_for(
            "reclassify",
            ["--model", "m", "--from-timestamp", "2026-11-20T12:00:00Z"],
        )
    assert isinstance(settings, ReclassifySettings)
    assert settings.from_timestamp == 1_795_176_000_000
    assert settings.rate_limit == 500.0


def test_every_variable_the_docs_and_manifests_name_is_a_setting() -> None:
    """The README, the documentation, the Dockerfile, compose and the ops files name only
    ARTICLE_CLASSIFIER_* variables that some command reads (so none of them can drift)."""
    paths = [ROOT / "README.md", ROOT / "Dockerfile", ROOT / "docker-compose.yml"]
    paths += sorted((ROOT / "docs").glob("*.md"))
    paths += sorted(p for p in (ROOT / "ops").rglob("*") if p.suffix in {".md", ".yaml", ".yml"})
    named = {
        (match.group(0), path.name)
        for path in paths
        for match in re.finditer(r"ARTICLE_CLASSIFIER_[A-Z0-9_]*[A-Z0-9]", path.read_text())
    }
    known = known_variables()
    assert sorted((name, where) for name, where in named if name not in known) == []
