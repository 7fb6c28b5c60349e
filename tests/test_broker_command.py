"""`python -m devtools broker`: both engines start, print their address and stop on SIGTERM;
Apache Kafka keeps its data across restarts; missing Java or Maven is named."""

from __future__ import annotations

import asyncio
import base64
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaClient
from conftest import ROOT, article_records, consume, produce, require_apache_kafka

from devtools.apache_kafka import ApacheKafkaBroker, _cluster_id
from devtools.kafka_jars import DEFAULT_KAFKA_VERSION
from devtools.tansu import ensure_topics, free_port

_ADDRESS = re.compile(r"broker on (127\.0\.0\.1:\d+)")


def _broker_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "devtools", "broker", *args]


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARTICLE_CLASSIFIER_")}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


def _start(args: list[str], log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start the broker command; return it and the bootstrap address it printed."""
    with log.open("ab") as sink:
        process = subprocess.Popen(
            _broker_command(*args), cwd=ROOT, env=_clean_env(), stdout=sink, stderr=sink
        )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        found = _ADDRESS.search(log.read_text())
        if found:
            return process, found.group(1)
        if process.poll() is not None:
            break
        time.sleep(0.2)
    process.kill()
    process.wait(timeout=10)
    raise AssertionError(f"no address printed:\n{log.read_text()[-3000:]}")


def _sigterm(process: subprocess.Popen[bytes]) -> int:
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)
        raise


@pytest.mark.kafka
@pytest.mark.parametrize("engine", ["tansu", "apache-kafka"])
async def test_broker_command_serves_on_its_port_until_sigterm(engine: str, tmp_path: Path) -> None:
    """The command prints the bootstrap address of the port asked for, the broker takes
    topics and records there, and SIGTERM stops it with status 0. Apache Kafka with
    --data-dir (what acceptance runs), restarted on the same port, still has them under the
    same cluster id; tansu keeps nothing across restarts by design."""
    port, data = free_port(), tmp_path / "data"
    args = ["--engine", engine, "--port", str(port)]
    if engine == "apache-kafka":
        require_apache_kafka()
        args += ["--data-dir", str(data)]
    process, address = _start(args, tmp_path / "first.log")
    try:
        assert address == f"127.0.0.1:{port}"
        await ensure_topics(address, {"kept": 2})
        await produce(address, "kept", article_records(10))
        assert len(await consume(address, "kept", 10)) == 10
    finally:
        status = _sigterm(process)
    assert status == 0, (tmp_path / "first.log").read_text()[-3000:]
    if engine == "tansu":
        return
    meta = data / "kraft-logs" / "meta.properties"
    cluster_id = meta.read_text()
    process, address = _start(args, tmp_path / "second.log")
    try:
        assert len(await consume(address, "kept", 10)) == 10
    finally:
        assert _sigterm(process) == 0
    assert meta.read_text() == cluster_id


def test_missing_java_and_maven_are_named_and_exit_2(tmp_path: Path) -> None:
    """Without java and mvn on PATH (and nothing cached) the apache-kafka engine names both,
    says how to install them, and exits 2 without starting anything."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(sys.executable)
    env = _clean_env(PATH=str(bin_dir), XDG_CACHE_HOME=str(tmp_path / "cache"))
    result = subprocess.run(
        _broker_command("--engine", "apache-kafka", "--port", str(free_port())),
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "Java 17+" in result.stderr
    assert "Maven" in result.stderr
    assert "apt-get install" in result.stderr
    assert not (tmp_path / "cache" / "article-classifier").exists()


def test_tansu_refuses_apache_kafka_only_options() -> None:
    """--data-dir and --kafka-version with the tansu engine are a usage error (exit 2)."""
    result = subprocess.run(
        _broker_command("--data-dir", "/tmp/nowhere", "--kafka-version", DEFAULT_KAFKA_VERSION),
        cwd=ROOT,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "need --engine apache-kafka" in result.stderr


def test_compose_runs_the_apache_kafka_version_the_tests_run() -> None:
    """docker-compose.yml's Kafka image is the version the tests and CI start."""
    compose = (ROOT / "docker-compose.yml").read_text()
    assert f"apache/kafka:{DEFAULT_KAFKA_VERSION}" in compose
    assert re.findall(r"apache/kafka:([\w.-]+)", compose) == [DEFAULT_KAFKA_VERSION]


class _Forwarder:
    """A TCP forwarder from one loopback port to another, counting the connections it took."""

    def __init__(self, listen_port: int, target_port: int) -> None:
        self.listen_port, self.target_port = listen_port, target_port
        self.connections = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> _Forwarder:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.listen_port)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


@pytest.mark.kafka
async def test_apache_kafka_advertises_its_advertised_port(tmp_path: Path) -> None:
    """With advertised_port, Apache Kafka listens on ``port`` but tells clients to use the
    advertised one, so all their traffic goes through whatever sits there (a fault proxy)."""
    require_apache_kafka()
    proxy_port = free_port()
    broker = ApacheKafkaBroker(advertised_port=proxy_port, data_dir=tmp_path / "data")
    assert broker.bootstrap_servers == f"127.0.0.1:{proxy_port}"
    async with _Forwarder(proxy_port, broker.port) as proxy, broker:
        client = AIOKafkaClient(bootstrap_servers=f"127.0.0.1:{broker.port}")
        await client.bootstrap()
        try:
            assert {node.port for node in client.cluster.brokers()} == {proxy_port}
        finally:
            await client.close()
        before = proxy.connections
        await ensure_topics(broker.bootstrap_servers, {"proxied": 1})
        await produce(broker.bootstrap_servers, "proxied", article_records(5))
        assert len(await consume(broker.bootstrap_servers, "proxied", 5)) == 5
        assert proxy.connections > before


def test_generated_cluster_ids_are_valid_for_kafkas_format_tool() -> None:
    """Cluster ids are 16 bytes in URL-safe base64 and never start with "-", which
    kafka-storage format would take for an option (1 in 64 random ids would)."""
    ids = [_cluster_id() for _ in range(2000)]
    assert not [text for text in ids if text.startswith("-")]
    assert all(len(base64.urlsafe_b64decode(text + "==")) == 16 for text in ids)
