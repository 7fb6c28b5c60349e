"""The deployment files: Prometheus config and rules, Compose stack, Dockerfile.

promtool and docker-compose are not Python packages. When one is missing the test that
needs it is skipped, unless REQUIRE_OPS_TOOLS=1 (set in CI), where it
fails. Install them with: apt-get install -y prometheus docker-compose
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

ROOT = Path(__file__).resolve().parent.parent
PROMETHEUS_DIR = ROOT / "ops" / "prometheus"
PROMETHEUS_CONFIG = PROMETHEUS_DIR / "prometheus.yml"
ALERTS = PROMETHEUS_DIR / "alerts.yml"
ALERTS_TEST = PROMETHEUS_DIR / "alerts_test.yml"
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
RUNBOOK = ROOT / "ops" / "README.md"
#: Runbook links are absolute: ops/README.md on the default branch of the public repository.
RUNBOOK_URL = "https://github.com/article-classifier/article-classifier/blob/main/ops/README.md"

REQUIRE_TOOLS_ENV = "REQUIRE_OPS_TOOLS"
INSTALL_HINT = "apt-get install -y prometheus docker-compose"

#: Every series name the service exposes on /metrics (the ops contract with service/).
#: Counters end in _total; histograms expose _bucket, _sum and _count; the Info metric
#: ``model`` is exposed as ``model_info``.
_COUNTERS = (
    "records_consumed",
    "articles_classified",
    "articles_published",
    "dead_letters",
    "predictions",
    "low_confidence",
    "uncertain_sections",
    "language_fallbacks",
    "commit_failures",
    "broker_errors",
    "batch_timeouts",
    "circuit_breaker_trips",
    "session_restarts",
    # editor feedback (service.feedback.consumer)
    "feedback_records",
    "corrections",
    "feedback_section",
    "feedback_tag",
    "feedback_dead_letters",
    "feedback_session_restarts",
    "model_reloads",
    "model_reload_failures",
    "shadow_articles",
    "shadow_section_agreements",
    "shadow_label_flips",
    "shadow_failures",
    "shadow_publish_failures",
    "transactions_committed",
    "transactions_aborted",
    "schema_registry_requests",
)
_HISTOGRAMS = (
    "batch_size",
    "classification_duration_seconds",
    "end_to_end_latency_seconds",
    "tags_per_article",
    "shadow_tag_jaccard",
    "shadow_duration_seconds",
)
_GAUGES = (
    "consumer_lag",
    "in_flight_records",
    "ready",
    "model_info",
    "in_flight_bytes",
    "oldest_in_flight_batch_age_seconds",
    "circuit_breaker_state",
    # drift signals (service.observe.drift)
    "drift_section_divergence",
    "drift_unknown_token_share",
    "drift_mean_section_score",
    "drift_mean_tags_per_article",
    "drift_training_tags_per_article",
    "drift_window_articles",
    "feedback_consumer_running",
    "shadow_model_info",
)
EXPOSED_SERIES = frozenset(
    [f"article_classifier_{name}_total" for name in _COUNTERS]
    + [
        f"article_classifier_{name}_{suffix}"
        for name in _HISTOGRAMS
        for suffix in ("bucket", "sum", "count")
    ]
    + [f"article_classifier_{name}" for name in _GAUGES]
)

_METRIC_NAME = re.compile(r"(?<![\w:])article_classifier_\w+")
_RECORDED_NAME = re.compile(r"^\s*- record:\s*(\S+)\s*$", re.MULTILINE)
_ALERT_NAME = re.compile(r"^\s*- alert:\s*(\w+)\s*$", re.MULTILINE)


def _tool(*candidates: list[str]) -> list[str]:
    """The first command line whose program is on PATH; skip or fail when none is."""
    for command in candidates:
        if shutil.which(command[0]) is not None:
            return command
    names = " or ".join(" ".join(command) for command in candidates)
    if os.environ.get(REQUIRE_TOOLS_ENV) == "1":
        pytest.fail(f"{names} not found on PATH and {REQUIRE_TOOLS_ENV}=1 ({INSTALL_HINT})")
    pytest.skip(f"{names} not installed ({INSTALL_HINT}); set {REQUIRE_TOOLS_ENV}=1 to fail")


def _compose() -> list[str]:
    """docker-compose, or the `docker compose` plugin when only that is installed."""
    if shutil.which("docker-compose") is None and shutil.which("docker") is not None:
        probe = subprocess.run(
            ["docker", "compose", "version"], capture_output=True, check=False, timeout=60
        )
        if probe.returncode == 0:
            return ["docker", "compose"]
    return _tool(["docker-compose"])


def _run(command: list[str]) -> subprocess.CompletedProcess[str]:
    """Run ``command`` in the repository root; fail with its output when it fails."""
    result = subprocess.run(
        command,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
        env={
            **os.environ,
            "COMPOSE_PROJECT_NAME": "article-classifier",
            "MODEL_HOST_DIR": "./artifacts/model",
        },
    )
    if result.returncode != 0:
        pytest.fail(
            f"{' '.join(command)} exited {result.returncode}\n"
            f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
        )
    return result


def _alert_blocks() -> dict[str, str]:
    """Each alerting rule's text in alerts.yml, by alert name."""
    # re.split with one group: [before, name1, body1, name2, body2, ...]
    parts = _ALERT_NAME.split(ALERTS.read_text(encoding="utf-8"))
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def _rule_metric_names() -> set[str]:
    """The raw metric names that alerts.yml queries (recorded rule names excluded)."""
    return set(_METRIC_NAME.findall(ALERTS.read_text(encoding="utf-8")))


def test_prometheus_config_is_valid() -> None:
    """promtool accepts prometheus.yml and the rule files it names."""
    _run([*_tool(["promtool"]), "check", "config", str(PROMETHEUS_CONFIG)])


def test_alert_rules_are_valid() -> None:
    """promtool accepts every recording and alerting rule in alerts.yml."""
    _run([*_tool(["promtool"]), "check", "rules", str(ALERTS)])


def test_alert_rule_unit_tests_pass() -> None:
    """The promtool unit tests fire each alert on bad series and keep it quiet on good ones."""
    _run([*_tool(["promtool"]), "test", "rules", str(ALERTS_TEST)])


def test_compose_file_is_valid() -> None:
    """docker-compose accepts docker-compose.yml without a Docker engine running."""
    _run([*_compose(), "--file", str(COMPOSE), "config", "--quiet"])


def test_compose_defines_the_stack() -> None:
    """The Compose stack has Kafka, the topic job, the classifier, Prometheus, and Grafana
    and the editors' desk each behind a profile of their own."""
    services = _run([*_compose(), "--file", str(COMPOSE), "config", "--services"]).stdout.split()
    assert set(services) == {"kafka", "kafka-init", "classifier", "prometheus", "grafana", "desk"}
    profiles = {
        name: service.get("profiles")
        for name, service in yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))["services"].items()
    }
    assert profiles["desk"] == ["desk"]
    assert profiles["grafana"] == ["dashboards"]


def test_compose_publishes_ports_on_loopback_only() -> None:
    """Every published port is bound to 127.0.0.1, never to all interfaces."""
    text = COMPOSE.read_text(encoding="utf-8")
    published = re.findall(r'^\s*-\s*"?(\d[\d.:]*:\d+(?::\d+)?)"?\s*$', text, re.MULTILINE)
    assert published, "no published ports found"
    assert all(port.startswith("127.0.0.1:") for port in published), published


def test_compose_service_topics_match_topic_creation() -> None:
    """The classifier's topics are the ones kafka-init creates."""
    text = COMPOSE.read_text(encoding="utf-8")
    created = set(re.findall(r"--topic (\S+) --partitions", text))
    assert created == {"articles", "articles.classified", "articles.dead-letter"} | {
        "articles.feedback"
    }
    for variable in ("INPUT_TOPIC", "OUTPUT_TOPIC", "DEAD_LETTER_TOPIC", "FEEDBACK_TOPIC"):
        configured = re.search(rf"ARTICLE_CLASSIFIER_{variable}: (\S+)", text)
        assert configured is not None, variable
        assert configured.group(1) in created


def test_alert_metrics_are_in_the_exposed_list() -> None:
    """Every metric an alert or recording rule queries is one the service exposes."""
    used = _rule_metric_names()
    assert used, "no article_classifier_* metric found in alerts.yml"
    assert used <= EXPOSED_SERIES, sorted(used - EXPOSED_SERIES)


def test_alert_metrics_are_registered_by_the_service() -> None:
    """Every metric the rules query is registered by service.observe.metrics.ServiceMetrics."""
    metrics = pytest.importorskip("service.observe.metrics")
    registry = CollectorRegistry()
    metrics.ServiceMetrics(registry)
    suffixes = {
        "counter": ("_total",),
        "histogram": ("_bucket", "_sum", "_count"),
        "gauge": ("",),
        "info": ("_info",),
    }
    exposed = {
        family.name + suffix
        for family in registry.collect()
        for suffix in suffixes.get(family.type, ("",))
    }
    used = _rule_metric_names()
    assert used <= exposed, sorted(used - exposed)
    assert exposed == EXPOSED_SERIES, "update EXPOSED_SERIES in this file to match the service"


def test_recorded_series_used_by_alerts_are_defined() -> None:
    """Every recording-rule series an alert reads is recorded in alerts.yml."""
    text = ALERTS.read_text(encoding="utf-8")
    recorded = set(_RECORDED_NAME.findall(text))
    used = set(re.findall(r"(?<![\w:])([a-z_]+:[\w:]*\w)", text))
    assert used <= recorded, sorted(used - recorded)


def test_every_alert_is_documented_and_labelled() -> None:
    """Each alert waits (`for`), has a severity, a summary, a description and a runbook."""
    blocks = _alert_blocks()
    assert len(blocks) >= 9
    runbook = RUNBOOK.read_text(encoding="utf-8")
    headings = {line[4:].strip() for line in runbook.splitlines() if line.startswith("### ")}
    for name, block in blocks.items():
        assert re.search(r"^\s+for: \d+[smh]\s*$", block, re.MULTILINE), name
        assert re.search(r"^\s+severity: (critical|warning)\s*$", block, re.MULTILINE), name
        assert "summary:" in block, name
        assert "description:" in block, name
        assert f'runbook_url: "{RUNBOOK_URL}#{name.lower()}"' in block, name
        assert name in headings, f"ops/README.md has no '### {name}' section"


def test_every_alert_has_a_unit_test() -> None:
    """alerts_test.yml exercises every alert at least once."""
    tested = set(re.findall(r"alertname: (\w+)", ALERTS_TEST.read_text(encoding="utf-8")))
    assert set(_alert_blocks()) <= tested, sorted(set(_alert_blocks()) - tested)


def test_dockerfile_follows_the_image_rules() -> None:
    """The image is multi-stage, installs dependencies before the source, runs as non-root."""
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert len(re.findall(r"^FROM ", text, re.MULTILINE)) >= 2
    assert "python:3.11-slim" in text
    assert text.index("COPY pyproject.toml") < text.index("COPY service")
    assert text.index("--requirement") < text.index("COPY service")
    users = re.findall(r"^USER (\S+)", text, re.MULTILINE)
    assert users, "no USER instruction"
    assert users[-1].split(":")[0] not in {"root", "0"}
    assert re.search(r"^EXPOSE 9108\s*$", text, re.MULTILINE)
    assert re.search(r"^HEALTHCHECK .*\n?.*/healthz", text, re.MULTILINE)
    assert re.search(r'^ENTRYPOINT \["article-classifier", "serve"\]', text, re.MULTILINE)
    assert "article-classifier train" not in text, "the image must not carry a default model"


def test_dockerignore_keeps_data_out_of_the_build_context() -> None:
    """The build context is an allow-list: no venv, artifacts, git history or corpora."""
    lines = [
        line.strip()
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert allowed == {
        "pyproject.toml",
        "README.md",
        "service",
        "model",
        "schemas",
        "requirements/runtime.lock",
        "requirements/build.lock",
    }


def test_compose_needs_an_explicit_model() -> None:
    """Without MODEL_HOST_DIR compose refuses the stack, naming the variable."""
    env = {k: v for k, v in os.environ.items() if k != "MODEL_HOST_DIR"}
    result = subprocess.run(
        [*_compose(), "--file", str(COMPOSE), "config", "--quiet"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
        env=env,
    )
    assert result.returncode != 0
    assert "set MODEL_HOST_DIR to a model artifact directory" in result.stderr
