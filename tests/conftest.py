"""Shared fixtures: one embedded broker and one demo model per session, helpers for topics."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from confluent_kafka import Consumer, Producer
from prometheus_client import CollectorRegistry

from devtools.apache_kafka import ApacheKafkaBroker
from devtools.kafka_jars import DEFAULT_KAFKA_VERSION, ToolMissingError, require_tools
from devtools.tansu import EmbeddedBroker, ensure_topics
from model import Predictor, load_labelled, save_artifact, train
from service.commands.serve import run_service
from service.config.cli import settings_for
from service.config.commands import ServeSettings

ROOT = Path(__file__).resolve().parent.parent
DEMO_CORPUS = ROOT / "model" / "samples" / "demo.jsonl"

Record = tuple[bytes | None, bytes | None]


#: Every test that uses a broker runs on each engine: tansu (in-memory, pip-installed) and
#: a real Apache Kafka (needs Java and Maven: skipped without them, unless CI requires it).
BROKER_ENGINES = ("tansu", "apache-kafka")
REQUIRE_APACHE_KAFKA = os.environ.get("REQUIRE_APACHE_KAFKA") == "1"
#: Another 4.x release for the whole suite, as for ``broker --kafka-version``.
KAFKA_VERSION = os.environ.get("KAFKA_VERSION") or DEFAULT_KAFKA_VERSION
Broker = EmbeddedBroker | ApacheKafkaBroker


def require_apache_kafka() -> None:
    """Skip (fail where CI requires it) when Java or Maven for Apache Kafka is missing."""
    try:
        require_tools(KAFKA_VERSION)
    except ToolMissingError as error:
        if REQUIRE_APACHE_KAFKA:
            pytest.fail(f"{error} (REQUIRE_APACHE_KAFKA=1)")
        pytest.skip(str(error))


def make_broker(engine: str, directory: Path, port: int | None = None) -> Broker:
    """An unstarted broker of ``engine`` keeping its files under ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    if engine == "tansu":
        return EmbeddedBroker(port, log_file=directory / "tansu.log")
    return ApacheKafkaBroker(
        port, data_dir=directory / "kafka", log_file=directory / "kafka.log", version=KAFKA_VERSION
    )


@pytest.fixture(scope="session", params=BROKER_ENGINES)
def broker_engine(request: pytest.FixtureRequest) -> str:
    """The engine of this run of the test: "tansu" or "apache-kafka"."""
    engine: str = request.param
    if engine == "apache-kafka":
        require_apache_kafka()
    return engine


@pytest.fixture(scope="session")
def broker(broker_engine: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """One broker per engine for the whole session, on a free port."""
    with make_broker(broker_engine, tmp_path_factory.mktemp(broker_engine)) as running:
        yield running


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo model, trained once from model/samples/demo.jsonl."""
    out = tmp_path_factory.mktemp("model") / "demo"
    trained = train(load_labelled([DEMO_CORPUS]).records, name="demo")
    save_artifact(trained, out)
    return out


@pytest.fixture(scope="session")
def predictor(model_dir: Path) -> Any:
    """The demo model loaded once."""
    return Predictor.load(model_dir)


@dataclass(frozen=True)
class Topics:
    input: str
    output: str
    dead_letter: str
    group: str


#: Input partitions of the ``topics`` fixture.
INPUT_PARTITIONS = 3


@pytest.fixture
async def topics(broker: Broker, request: pytest.FixtureRequest) -> Topics:
    """Fresh topics (INPUT_PARTITIONS input partitions) and group id for one test."""
    tag = f"{request.node.name[:30]}-{uuid.uuid4().hex[:8]}".replace("[", "-").replace("]", "")
    made = Topics(f"in-{tag}", f"out-{tag}", f"dlq-{tag}", f"group-{tag}")
    await ensure_topics(
        broker.bootstrap_servers,
        {made.input: INPUT_PARTITIONS, made.output: 3, made.dead_letter: 1},
    )
    return made


def make_settings(
    bootstrap_servers: str, topics: Topics, model_dir: Path, **overrides: Any
) -> ServeSettings:
    """Settings for a test service: loopback, any free metrics port, short batches."""
    values: dict[str, Any] = {
        "bootstrap_servers": bootstrap_servers,
        "input_topic": topics.input,
        "output_topic": topics.output,
        "dead_letter_topic": topics.dead_letter,
        "group_id": topics.group,
        "model": model_dir,
        "metrics_host": "127.0.0.1",
        "metrics_port": 0,
        "batch_size": 64,
        "batch_max_wait_ms": 20,
        "shutdown_timeout_s": 20,
        "session_timeout_ms": 6000,
        # No feedback consumer unless a test asks for one: the default topic does not exist
        # on a broker without automatic topic creation (Apache Kafka here).
        "feedback_topic": "",
    }
    values.update(overrides)
    return ServeSettings(**values)


@contextmanager
def only_environment(env: Mapping[str, str] | None = None) -> Iterator[None]:
    """Within the block the ``ARTICLE_CLASSIFIER_*`` variables are exactly ``env``."""
    saved = {k: v for k, v in os.environ.items() if k.startswith("ARTICLE_CLASSIFIER_")}
    for name in saved:
        del os.environ[name]
    os.environ.update(env or {})
    try:
        yield
    finally:
        for name in env or {}:
            os.environ.pop(name, None)
        os.environ.update(saved)


def serve_settings(*argv: str, env: Mapping[str, str] | None = None) -> ServeSettings:
    """The settings ``serve`` parses from ``argv`` with ``env`` as its environment."""
    with only_environment(env):
        settings = settings_for("serve", argv)
    assert isinstance(settings, ServeSettings)
    return settings


def demo_texts() -> list[tuple[str, str]]:
    """(title, body) pairs of the demo corpus."""
    lines = DEMO_CORPUS.read_text("utf-8").splitlines()
    return [(row["title"], row["body"]) for row in map(json.loads, lines)]


def article_records(count: int, *, prefix: str = "a", keys: int | None = None) -> list[Record]:
    """``count`` valid events; with ``keys``, article ids repeat so each key gets several."""
    texts = demo_texts()
    records: list[Record] = []
    for index in range(count):
        article_id = f"{prefix}-{index % keys if keys else index}"
        title, body = texts[index % len(texts)]
        event = {"article_id": article_id, "event_id": f"e-{index}", "title": title, "body": body}
        records.append((article_id.encode(), json.dumps(event).encode()))
    return records


async def produce(bootstrap_servers: str, topic: str, records: Sequence[Record]) -> None:
    """Produce records in order and wait for every acknowledgement."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, acks="all", linger_ms=5)
    await producer.start()
    try:
        futures = [await producer.send(topic, key=key, value=value) for key, value in records]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def produce_with_librdkafka(
    bootstrap_servers: str,
    topic: str,
    records: Sequence[Record],
    *,
    headers: Sequence[tuple[str, bytes | None]] = (),
) -> None:
    """Produce with librdkafka (confluent-kafka), each record with ``headers``."""
    producer = Producer({"bootstrap.servers": bootstrap_servers, "acks": "all"})
    for key, value in records:
        producer.produce(topic, key=key, value=value, headers=list(headers))
    assert producer.flush(30) == 0


def consume_with_librdkafka(
    bootstrap_servers: str, topic: str, group: str, count: int, *, timeout_s: float = 60.0
) -> list[Any]:
    """Read ``topic`` in ``group`` with librdkafka until ``count`` messages or the deadline."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap_servers,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 6000,
        }
    )
    consumer.subscribe([topic])
    out: list[Any] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(out) < count and time.monotonic() < deadline:
            messages = consumer.consume(num_messages=500, timeout=0.5)
            out.extend(message for message in messages if message.error() is None)
    finally:
        consumer.close()
    return out


def _reader(bootstrap_servers: str, topic: str) -> AIOKafkaConsumer:
    # Subscribed without a group: every partition is assigned once the topic's metadata
    # arrives (Apache Kafka, unlike tansu, sends no topic metadata unasked), read from the
    # beginning.
    return AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap_servers,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )


async def consume(
    bootstrap_servers: str, topic: str, count: int, *, timeout_s: float = 60.0
) -> list[Any]:
    """Read a topic from the beginning (no group) until ``count`` records or the deadline."""
    consumer = _reader(bootstrap_servers, topic)
    await consumer.start()
    try:
        deadline = time.monotonic() + timeout_s
        out: list[Any] = []
        while len(out) < count and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                out.extend(records)
        return out
    finally:
        await consumer.stop()


async def settle(
    bootstrap_servers: str,
    topic: str,
    expected: int,
    *,
    quiet_s: float = 1.5,
    timeout_s: float = 60.0,
) -> list[Any]:
    """All records of ``topic`` once at least ``expected`` arrived and then nothing more for
    ``quiet_s`` (one reader throughout: duplicates may make up the count early, and a new
    reader's own start-up must not count as quiet)."""
    consumer = _reader(bootstrap_servers, topic)
    await consumer.start()
    try:
        out: list[Any] = []
        now = time.monotonic()
        deadline, last_new = now + timeout_s, now
        while now < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            now = time.monotonic()
            fetched = [record for records in batch.values() for record in records]
            out.extend(fetched)
            if fetched:
                last_new = now
            elif len(out) >= expected and now - last_new >= quiet_s:
                break
        return out
    finally:
        await consumer.stop()


@dataclass
class RunningService:
    task: asyncio.Task[int]
    stop: asyncio.Event
    registry: CollectorRegistry
    port: int


@asynccontextmanager
async def running_service(
    settings: ServeSettings, predictor: Any, *, timeout_s: float = 30.0
) -> AsyncIterator[RunningService]:
    """Run the service in this event loop; stop it (and check it stopped) on exit."""
    stop = asyncio.Event()
    registry = CollectorRegistry()
    port: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        run_service(settings, predictor=predictor, stop=stop, registry=registry, http_port=port)
    )
    done, _ = await asyncio.wait({task, port}, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()
    service = RunningService(task, stop, registry, port.result())
    try:
        yield service
    finally:
        stop.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout_s)
        except TimeoutError:
            task.cancel()
            raise


def service_command(settings: ServeSettings) -> list[str]:
    """``python -m service serve`` with flags for ``settings``."""
    return [
        sys.executable, "-m", "service", "serve",
        "--model", str(settings.model),
        "--bootstrap-servers", settings.bootstrap_servers,
        "--input-topic", settings.input_topic,
        "--output-topic", settings.output_topic,
        "--dead-letter-topic", settings.dead_letter_topic,
        "--group-id", settings.group_id,
        "--metrics-host", "127.0.0.1",
        "--metrics-port", str(settings.metrics_port),
        "--batch-size", str(settings.batch_size),
        "--batch-max-wait-ms", str(settings.batch_max_wait_ms),
        "--shutdown-timeout-s", str(settings.shutdown_timeout_s),
        "--session-timeout-ms", str(settings.session_timeout_ms),
        "--classify-in", settings.classify_in.value,
        "--processing-guarantee", settings.processing_guarantee.value,
        "--feedback-topic", settings.feedback_topic,
    ]  # fmt: skip


def spawn_service(settings: ServeSettings, log: Path) -> subprocess.Popen[bytes]:
    """Start the service as a subprocess writing its JSON logs to ``log``."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env = {k: v for k, v in env.items() if not k.startswith("ARTICLE_CLASSIFIER_")}
    with log.open("ab") as sink:
        return subprocess.Popen(
            service_command(settings), cwd=ROOT, env=env, stdout=sink, stderr=sink
        )


def stop_process(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> int:
    """Send ``sig`` and wait (bounded) for the exit status."""
    if process.poll() is None:
        process.send_signal(sig)
    try:
        return process.wait(timeout=40)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)
        raise


async def wait_for(condition: Any, *, timeout_s: float = 30.0, interval_s: float = 0.1) -> None:
    """Poll ``condition()`` (sync or async) until true or fail at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = condition()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s")
        await asyncio.sleep(interval_s)


async def http_get(port: int, path: str) -> tuple[int, str]:
    """One plain HTTP GET to the service on 127.0.0.1: (status, body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    await writer.wait_closed()
    head, _, body = raw.decode().partition("\r\n\r\n")
    return int(head.split()[1]), body
