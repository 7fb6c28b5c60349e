"""Shutdown, crashes, rebalances and a late broker: nothing lost, duplicates bounded."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    Topics,
    article_records,
    consume,
    http_get,
    make_broker,
    make_settings,
    produce,
    running_service,
    settle,
    spawn_service,
    stop_process,
    wait_for,
)

from devtools.tansu import EmbeddedBroker, ensure_topics, free_port
from schemas import ClassifiedArticleEvent
from service.config.options import (
    WorkerKind,
)
from service.kafka.clients import missing_topics

pytestmark = pytest.mark.kafka


class Stream:
    """Produces numbered events in small chunks until stopped (input keeps flowing)."""

    def __init__(self, bootstrap_servers: str, topic: str, *, per_chunk: int = 20) -> None:
        self._bootstrap = bootstrap_servers
        self._topic = topic
        self._per_chunk = per_chunk
        self.sent = 0
        self._stop = asyncio.Event()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Stream]:
        task = asyncio.create_task(self._run())
        try:
            yield self
        finally:
            self._stop.set()
            await asyncio.wait_for(task, 30)

    def stop(self) -> None:
        self._stop.set()

    async def _run(self) -> None:
        while not self._stop.is_set():
            chunk = article_records(self.sent + self._per_chunk, prefix="s", keys=50)[self.sent :]
            await produce(self._bootstrap, self._topic, chunk)
            self.sent += len(chunk)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), 0.05)


def event_ids(records: list[Any]) -> Counter[str]:
    """How often each input event id appears in the output."""
    counts: Counter[str] = Counter()
    for record in records:
        event = ClassifiedArticleEvent.model_validate_json(record.value)
        assert event.event_id is not None
        counts[event.event_id] += 1
    return counts


async def test_sigterm_drains_and_exits_zero_without_loss_or_duplicates(
    broker: EmbeddedBroker, topics: Topics, model_dir: Path, predictor: Any, tmp_path: Path
) -> None:
    """SIGTERM mid-stream: exit 0, and with a restart every event is published exactly once."""
    bootstrap = broker.bootstrap_servers
    # As a subprocess with a worker process: the mode where shutdown crosses processes.
    settings = make_settings(bootstrap, topics, model_dir, classify_in=WorkerKind.PROCESS)
    process = spawn_service(settings, tmp_path / "service.log")
    try:
        async with Stream(bootstrap, topics.input).running() as stream:
            await consume(bootstrap, topics.output, 100, timeout_s=60)
            status = await asyncio.to_thread(stop_process, process, signal.SIGTERM)
            assert stream.sent > 0
    finally:
        stop_process(process, signal.SIGKILL)
    log = (tmp_path / "service.log").read_text()
    assert status == 0, log[-3000:]
    assert "drained" in log
    async with running_service(settings, predictor):
        outputs = await settle(bootstrap, topics.output, stream.sent)
    counts = event_ids(outputs)
    assert len(counts) == stream.sent
    assert max(counts.values()) == 1


async def test_kill_minus_nine_then_restart_loses_nothing(
    broker: EmbeddedBroker, topics: Topics, model_dir: Path, predictor: Any, tmp_path: Path
) -> None:
    """After kill -9 and a restart every event is published; duplicates fit the uncommitted
    window."""
    bootstrap = broker.bootstrap_servers
    # As a subprocess with a worker process: the mode where shutdown crosses processes.
    settings = make_settings(bootstrap, topics, model_dir, classify_in=WorkerKind.PROCESS)
    process = spawn_service(settings, tmp_path / "service.log")
    try:
        async with Stream(bootstrap, topics.input).running() as stream:
            await consume(bootstrap, topics.output, 100, timeout_s=60)
            workers = _children(process.pid)
            assert workers, "the service runs its classification worker process"
            await asyncio.to_thread(stop_process, process, signal.SIGKILL)
    finally:
        stop_process(process, signal.SIGKILL)
    # The orphaned worker notices its parent is gone and exits by itself.
    await wait_for(lambda: not any(map(_alive, workers)), timeout_s=15)
    async with running_service(settings, predictor):
        outputs = await settle(bootstrap, topics.output, stream.sent)
    counts = event_ids(outputs)
    assert len(counts) == stream.sent
    duplicates = sum(count - 1 for count in counts.values())
    assert duplicates <= settings.max_in_flight_batches * settings.batch_size
    by_event: dict[str, set[str]] = {}
    for record in outputs:
        event = json.loads(record.value)
        by_event.setdefault(event["event_id"], set()).add(json.dumps(event["classification"]))
    assert all(len(classifications) == 1 for classifications in by_event.values())


async def test_two_instances_share_partitions_and_survive_one_stopping(
    broker: EmbeddedBroker, topics: Topics, model_dir: Path, predictor: Any
) -> None:
    """Two instances in one group split the partitions; when one stops the other takes over."""
    bootstrap = broker.bootstrap_servers
    settings = make_settings(bootstrap, topics, model_dir)
    async with (
        Stream(bootstrap, topics.input).running() as stream,
        running_service(settings, predictor) as first,
    ):
        async with running_service(settings, predictor) as second:
            await wait_for(lambda: _consumed(first) > 0 and _consumed(second) > 0, timeout_s=45)
        # second stopped cleanly (its partitions drained and committed); first takes over
        seen = _consumed(first)
        await wait_for(lambda: _consumed(first) > seen + 40, timeout_s=45)
        stream.stop()
        await wait_for(lambda: _published(first) + _published(second) >= stream.sent)
    outputs = await settle(bootstrap, topics.output, stream.sent)
    counts = event_ids(outputs)
    assert len(counts) == stream.sent


def _consumed(service: Any) -> float:
    value = service.registry.get_sample_value("article_classifier_records_consumed_total")
    return float(value or 0)


def _published(service: Any) -> float:
    value = service.registry.get_sample_value("article_classifier_articles_published_total")
    return float(value or 0)


async def test_service_started_before_the_broker_catches_up(
    broker_engine: str, topics: Topics, model_dir: Path, predictor: Any, tmp_path: Path
) -> None:
    """A service started before its broker reports not-ready, then processes everything."""
    port = free_port()
    bootstrap = f"127.0.0.1:{port}"
    settings = make_settings(bootstrap, topics, model_dir)
    async with contextlib.AsyncExitStack() as stack:
        late = make_broker(broker_engine, tmp_path / "late", port)
        stack.push_async_callback(asyncio.to_thread, late.stop)
        service = await stack.enter_async_context(running_service(settings, predictor))
        await wait_for(lambda: _broker_errors(service) >= 1, timeout_s=10)
        status, body = await http_get(service.port, "/readyz")
        assert status == 503
        assert "broker_reachable" in json.loads(body)["failing"]
        await asyncio.to_thread(late.start)
        await ensure_topics(late.bootstrap_servers, {topics.input: 3, topics.output: 3})
        records = article_records(50, prefix="late")
        await produce(late.bootstrap_servers, topics.input, records)
        outputs = await consume(late.bootstrap_servers, topics.output, len(records))
        assert len(outputs) == len(records)
        await wait_for(lambda: _ready(service), timeout_s=10)
        # the service stops first (exit stack order), then the broker


def _broker_errors(service: Any) -> float:
    value = service.registry.get_sample_value("article_classifier_broker_errors_total")
    return float(value or 0)


def _children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(child) for child in text.split()]


def _alive(pid: int) -> bool:
    """Running, not gone and not a zombie waiting to be reaped."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def _ready(service: Any) -> bool:
    return bool(service.registry.get_sample_value("article_classifier_ready") == 1.0)


async def test_a_missing_input_topic_is_reported_then_consumed_once_created(
    broker: EmbeddedBroker, topics: Topics, model_dir: Path, predictor: Any
) -> None:
    """The service never creates its input topic: it is not ready and names the missing
    topic in /readyz, then consumes it as soon as an operator creates it."""
    bootstrap = broker.bootstrap_servers
    late = f"late-{topics.input}"
    settings = make_settings(bootstrap, topics, model_dir, input_topic=late)
    async with running_service(settings, predictor) as service:

        async def reported_missing() -> bool:
            status, body = await http_get(service.port, "/readyz")
            report = json.loads(body)
            return status == 503 and report["missing_topics"] == [late]

        await wait_for(reported_missing, timeout_s=30)
        assert "topics_exist" in json.loads((await http_get(service.port, "/readyz"))[1])["failing"]
        restarts = service.registry.get_sample_value(
            "article_classifier_session_restarts_total", {"cause": "missing_topic"}
        )
        assert restarts is not None
        assert restarts >= 1
        assert _broker_errors(service) == 0, "a missing topic is not a broker failure"
        await ensure_topics(bootstrap, {late: 3})
        records = article_records(20, prefix="late-topic")
        await produce(bootstrap, late, records)
        assert len(await consume(bootstrap, topics.output, len(records))) == len(records)
        await wait_for(lambda: _ready(service), timeout_s=30)


async def test_looking_for_a_missing_topic_never_creates_it(
    broker: EmbeddedBroker, topics: Topics, model_dir: Path
) -> None:
    """The check before subscribing asks the broker about the missing topic by name without
    letting it create the topic: a broker that creates topics on a metadata request (tansu
    does, as Apache Kafka with auto.create.topics.enable) must not get one from the
    service."""
    absent = f"never-{topics.input}"
    settings = make_settings(broker.bootstrap_servers, topics, model_dir, input_topic=absent)
    for _ in range(3):
        assert await missing_topics(settings, [absent, topics.output]) == [absent]


async def test_sigterm_while_topics_are_missing_exits_within_the_shutdown_bound(
    broker: EmbeddedBroker, topics: Topics, model_dir: Path, tmp_path: Path
) -> None:
    """Waiting for a missing input topic and a missing feedback topic does not hold up a
    shutdown, and neither wait fills the log with the client's metadata errors."""
    settings = make_settings(
        broker.bootstrap_servers,
        topics,
        model_dir,
        input_topic=f"absent-{topics.input}",
        feedback_topic=f"absent-feedback-{topics.input}",
    )
    log = tmp_path / "service.log"
    process = spawn_service(settings, log)
    try:
        await wait_for(lambda: log.read_text().count("does not exist") >= 2, timeout_s=60)
        process.send_signal(signal.SIGTERM)
        status = await asyncio.to_thread(process.wait, settings.shutdown_timeout_s)
    finally:
        stop_process(process, signal.SIGKILL)
    text = log.read_text()
    assert status == 0, text[-3000:]
    assert "not found in cluster metadata" not in text
    assert "did not stop in time" not in text
    assert text.count("feedback topic missing") == 1, "said once, not at every check"
