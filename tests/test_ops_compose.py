"""The compose stack, brought up and down by the README's own lines.

The README's compose block runs line by line as written, with these substitutions only: the
``docker build`` line gets the Debian stand-in as PYTHON_IMAGE and the proxy's CA as a build
secret; the model directory and its digest are this session's demo model; compose's image
variables name the stand-ins for apache/kafka (the Maven jars of
devtools/kafka_jars.py DEFAULT_KAFKA_VERSION on Debian's Java) and prom/prometheus (Debian's
prometheus). The stack publishes fixed loopback ports (9094, 9108, 8080, 9090).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from docker_engine import Shell, docker, readme_block, require_docker, secret_args

from devtools import standin_images
from devtools.kafka_jars import DEFAULT_KAFKA_VERSION

pytestmark = [pytest.mark.docker]

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
PROJECT = "article-classifier"
PORTS = (9094, 9108, 8080, 9090)


def _busy(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _poll(shell: Shell, line: str, done: Callable[[str], bool], timeout_s: float) -> str:
    """Run ``line`` until ``done(stdout)`` or fail at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        out = shell.run(line)
        if done(out):
            return out
        assert time.monotonic() < deadline, f"{line}\n{out[-2000:]}"
        time.sleep(1)


def _classified(out: str, article_id: str) -> dict[str, object] | None:
    for line in out.splitlines():
        if line.startswith("{") and json.loads(line).get("article_id") == article_id:
            event: dict[str, object] = json.loads(line)
            return event
    return None


def _localise(line: str, substitutions: dict[str, str]) -> str:
    for old, new in substitutions.items():
        line = line.replace(old, new)
    return line


def test_the_compose_kafka_image_is_the_tested_version() -> None:
    """Compose runs apache/kafka at the version the tests start, unless a stand-in is named."""
    assert f"${{KAFKA_IMAGE:-apache/kafka:{DEFAULT_KAFKA_VERSION}}}" in COMPOSE.read_text()


def test_the_readme_compose_lines_bring_the_stack_up_classify_and_tear_it_down(
    model_dir: Path, pytestconfig: pytest.Config
) -> None:
    """The README's compose lines build the image, start Kafka, the topic job, the service
    and Prometheus, a published article comes back classified, the suggest API answers,
    Prometheus scrapes the service, and ``down -v`` leaves no container or volume."""
    cli = require_docker()
    busy = [port for port in PORTS if _busy(port)]
    assert not busy, f"compose publishes 127.0.0.1:{busy}, already in use here"
    lines = readme_block("**Compose** (`docker-compose.yml`)")
    digest = hashlib.sha256((model_dir / "model.json").read_bytes()).hexdigest()
    standins = standin_images.build_all(["python", "kafka", "prometheus"])
    substitutions = {
        "docker build ": " ".join(
            [
                "docker build",
                *secret_args(),
                f"--build-arg PYTHON_IMAGE={standins['python']} ",
            ]
        ),
        "$PWD/artifacts/demo-model": str(model_dir),
        "'<digest printed by train>'": digest,
    }
    env = {
        "PATH": f"{Path(cli).parent}:{os.environ['PATH']}",
        "HOME": os.environ.get("HOME", "/root"),
        "KAFKA_IMAGE": standins["kafka"],
        "PROMETHEUS_IMAGE": standins["prometheus"],
    }
    shell = Shell(env)
    localised = [_localise(line, substitutions) for line in lines]
    build, model, pin, up, ready, produce, consume, suggest, scraped, down = localised
    assert down.endswith(" down -v")
    try:
        started = time.monotonic()
        shell.run(build)
        built_s = time.monotonic() - started
        shell.run(model)
        shell.run(pin)
        started = time.monotonic()
        shell.run(up)
        readiness = json.loads(shell.run(ready))
        up_s = time.monotonic() - started
        assert readiness["ready"] is True
        assert readiness["model"]["sha256"] == digest
        shell.run(produce)
        out = _poll(shell, consume, lambda out: _classified(out, "a1") is not None, 60)
        event = _classified(out, "a1")
        assert event is not None
        assert event["classification"]["section"]["label"]  # type: ignore[index]
        answer = json.loads(shell.run(suggest))
        assert answer["article_id"] == "a2"
        assert answer["classification"]["section"]["label"]

        def up_is_one(out: str) -> bool:
            result = json.loads(out)["data"]["result"]
            return bool(result) and result[0]["value"][1] == "1"

        _poll(shell, scraped, up_is_one, 90)
        reporter = pytestconfig.pluginmanager.get_plugin("terminalreporter")
        capture = pytestconfig.pluginmanager.get_plugin("capturemanager")
        if reporter is not None and capture is not None:
            with capture.global_and_fixture_disabled():
                reporter.write_line(
                    f"[docker] compose: image build {built_s:.1f} s, up to ready {up_s:.1f} s"
                )
    finally:
        shell.run(down, check=False)
    left = docker(
        cli, "ps", "--all", "--quiet", "--filter", f"label=com.docker.compose.project={PROJECT}"
    )
    assert left.strip() == ""
    volumes = docker(
        cli, "volume", "ls", "--quiet", "--filter", f"label=com.docker.compose.project={PROJECT}"
    )
    assert volumes.strip() == ""
