"""Resilience pieces without a broker: backoff, breaker, refusals, worker deaths, health."""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaConnectionError, MessageSizeTooLargeError, RequestTimedOutError
from conftest import http_get, serve_settings
from prometheus_client import CollectorRegistry

from service.commands import serve as app_module
from service.commands.wiring import Observers
from service.config.commands import (
    ConfigError,
    ServeSettings,
)
from service.core.backoff import Backoff
from service.core.breaker import CircuitBreaker
from service.core.deadletter import VALUE_DROPPED_HEADER, DeadLetterReason
from service.core.errors import (
    BrokerUnavailableError,
    DeliveryError,
    GroupJoinStuckError,
    WorkerUnstableError,
)
from service.core.records import BatchResult, Outgoing, Topics
from service.http.server import HealthServer
from service.kafka import clients as kafka_module
from service.kafka.pipeline import Pipeline
from service.kafka.publish import BatchPublisher, SourceKey, record_bytes
from service.models.workers import ProcessClassifier, WireRecord
from service.observe.health import Assignment, Health
from service.observe.metrics import ServiceMetrics
from service.observe.tracing import ContinuedTraces

# -- backoff ---------------------------------------------------------------------------


def test_backoff_full_jitter_stays_under_a_doubling_capped_step() -> None:
    """Each delay is drawn in [0, step]; the step doubles up to the cap."""
    draws: list[tuple[float, float]] = []

    def uniform(low: float, high: float) -> float:
        draws.append((low, high))
        return high

    backoff = Backoff(0.5, 4.0, uniform=uniform)
    delays = [backoff.delay() for _ in range(6)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert all(low == 0.0 for low, _ in draws)


def test_backoff_resets_to_the_initial_step_after_a_success() -> None:
    """reset() brings the next delay's cap back to the initial step."""
    backoff = Backoff(0.5, 10.0, uniform=lambda low, high: high)
    for _ in range(5):
        backoff.delay()
    backoff.reset()
    assert backoff.delay() == 0.5


def test_backoff_jitter_spreads_instances_that_failed_together() -> None:
    """Two instances failing at the same moment do not retry in lockstep."""
    first = Backoff(0.5, 10.0, uniform=random.Random(1).uniform)
    second = Backoff(0.5, 10.0, uniform=random.Random(2).uniform)
    a = [first.delay() for _ in range(5)]
    b = [second.delay() for _ in range(5)]
    assert a != b
    assert all(0 <= delay <= 10 for delay in a + b)


def test_equal_jitter_always_grows() -> None:
    """Without full jitter a delay is at least half its step, so the breaker's waits grow."""
    backoff = Backoff(1.0, 8.0, full_jitter=False, uniform=lambda low, high: low)
    assert [backoff.delay() for _ in range(4)] == [0.5, 1.0, 2.0, 4.0]


# -- circuit breaker -------------------------------------------------------------------


def test_one_poison_article_does_not_trip_the_breaker() -> None:
    """A single failure among many successes stays far under the threshold."""
    breaker = CircuitBreaker(window=200, threshold=0.5, min_records=20)
    assert not breaker.record([False] * 100 + [True] + [False] * 100)


def test_the_breaker_trips_on_a_failing_window_but_needs_a_minimum_count() -> None:
    """Failures trip it only once the window holds min_records outcomes."""
    breaker = CircuitBreaker(window=50, threshold=0.5, min_records=10)
    assert not breaker.record([True] * 9)
    assert breaker.record([True])


def test_the_breaker_window_slides() -> None:
    """Old failures leave the window as new successes come in."""
    breaker = CircuitBreaker(window=10, threshold=0.5, min_records=5)
    assert breaker.record([True] * 10)
    assert not breaker.record([False] * 6)
    assert breaker.failure_share == pytest.approx(0.4)


# -- publisher: size limits and refusals -----------------------------------------------


@dataclass
class _Record:
    value: bytes | None
    offset: int
    key: bytes | None = b"k"
    topic: str = "in"
    partition: int = 0
    timestamp: int = 0
    headers: tuple[tuple[str, bytes | None], ...] = ()


class _Builder:
    def __init__(self) -> None:
        self.items: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]] = []

    def append(
        self,
        *,
        timestamp: int | None,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]],
    ) -> object | None:
        self.items.append((key, value, headers))
        return object()

    def size(self) -> int:
        return sum(len(value or b"") for _, value, _ in self.items)

    def record_count(self) -> int:
        return len(self.items)


@dataclass
class _FakeProducer:
    """Writes accepted batches to ``log``; refuses a batch holding a value in ``refuse``."""

    refuse: set[bytes] = field(default_factory=set)
    error: type[Exception] = MessageSizeTooLargeError
    log: list[tuple[str, int, bytes | None, list[tuple[str, bytes]]]] = field(default_factory=list)

    async def partitions_for(self, topic: str) -> set[int]:
        return {0}

    def create_batch(self) -> _Builder:
        return _Builder()

    async def send_batch(
        self, builder: _Builder, topic: str, partition: int
    ) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if any(value in self.refuse for _, value, _ in builder.items):
            future.set_exception(self.error())
        else:
            for _, value, headers in builder.items:
                self.log.append((topic, partition, value, headers))
            future.set_result(None)
        return future

    async def send(
        self,
        topic: str,
        *,
        value: bytes | None,
        key: bytes | None,
        headers: list[tuple[str, bytes]],
        partition: int,
    ) -> asyncio.Future[Any]:
        builder = _Builder()
        builder.append(timestamp=None, key=key, value=value, headers=headers)
        return await self.send_batch(builder, topic, partition)


def _output(value: bytes, offset: int) -> Outgoing:
    return Outgoing("out", b"k", value, [], 0, offset, 0)


def _sources(records: Sequence[_Record]) -> dict[SourceKey, Any]:
    return {(record.partition, record.offset): record for record in records}


def test_an_output_over_the_topic_limit_is_dead_lettered_before_producing() -> None:
    """fit() turns an output that cannot fit into an output_rejected dead letter holding the
    input, and strips the value of a dead letter that cannot fit its own topic."""
    publisher = BatchPublisher(
        _FakeProducer(),
        limits={"out": 1000, "dlq": 1000},
        dead_letter_topic="dlq",
    )
    records = [_Record(b"small input", 0), _Record(b"i" * 400, 1)]
    big_dead = Outgoing("dlq", b"k", b"x" * 2000, [], 0, 2, 0, DeadLetterReason.TOO_LARGE)
    fitted = publisher.fit(
        [_output(b"o" * 100, 0), _output(b"o" * 950, 1), big_dead], _sources(records)
    )
    assert [item.topic for item in fitted] == ["out", "dlq", "dlq"]
    rejected = fitted[1]
    assert rejected.reason is DeadLetterReason.OUTPUT_REJECTED
    assert rejected.value == records[1].value
    headers = dict(rejected.headers)
    assert headers["error.reason"] == b"output_rejected"
    assert b"max.message.bytes (1000)" in (headers["error.message"] or b"")
    assert fitted[2].value is None
    assert dict(fitted[2].headers)[VALUE_DROPPED_HEADER] == b"2000"
    assert all(record_bytes(item) <= 1000 for item in fitted)


async def test_a_refused_output_becomes_a_dead_letter_and_order_of_last_copies_holds() -> None:
    """A batch the broker refuses is retried record by record: the refused record becomes an
    output_rejected dead letter, its batch-mates and the later batches of that partition are
    re-sent after, so the last copy of every output is in input order."""
    producer = _FakeProducer(refuse={b"bad"})
    publisher = BatchPublisher(
        producer,
        limits={"out": 10_000, "dlq": 10_000},
        dead_letter_topic="dlq",
    )
    records = [_Record(b"in-%d" % i, i) for i in range(5)]
    first = await publisher.publish([_output(b"o0", 0), _output(b"bad", 1), _output(b"o2", 2)])
    second = await publisher.publish([_output(b"o3", 3), _output(b"o4", 4)])
    delivery = await publisher.confirm(first, _sources(records))
    later = await publisher.confirm(second, _sources(records))
    assert delivery.rejected == 1
    reasons = [item.reason for item in delivery.delivered]
    assert reasons.count(DeadLetterReason.OUTPUT_REJECTED) == 1
    outputs = [value for topic, _, value, _ in producer.log if topic == "out"]
    last_copy_order = sorted(
        set(outputs), key=lambda v: max(i for i, o in enumerate(outputs) if o == v)
    )
    assert last_copy_order == [b"o0", b"o2", b"o3", b"o4"]
    assert b"bad" not in outputs
    (letter,) = [(v, h) for topic, _, v, h in producer.log if topic == "dlq"]
    assert letter[0] == b"in-1"
    assert dict(letter[1])["error.reason"] == b"output_rejected"
    assert [item.value for item in later.delivered] == [b"o3", b"o4"]


async def test_a_dead_letter_the_broker_refuses_is_forwarded_without_its_value() -> None:
    """A refused dead letter loses its value (header says so) instead of looping."""
    producer = _FakeProducer(refuse={b"huge input"})
    publisher = BatchPublisher(
        producer,
        limits={},
        dead_letter_topic="dlq",
    )
    letter = Outgoing("dlq", b"k", b"huge input", [], 0, 0, 0, DeadLetterReason.TOO_LARGE)
    delivery = await publisher.confirm(await publisher.publish([letter]), {})
    assert delivery.values_dropped == 1
    ((topic, _, value, headers),) = producer.log
    assert (topic, value) == ("dlq", None)
    assert dict(headers)[VALUE_DROPPED_HEADER] == b"10"


async def test_an_error_that_is_not_a_refusal_fails_the_delivery() -> None:
    """Timeouts and other non-refusals raise DeliveryError: nothing is dead-lettered for them."""
    producer = _FakeProducer(refuse={b"o1"}, error=RequestTimedOutError)
    publisher = BatchPublisher(
        producer,
        limits={},
        dead_letter_topic="dlq",
    )
    with pytest.raises(DeliveryError, match="RequestTimedOut"):
        await publisher.confirm(await publisher.publish([_output(b"o1", 0)]), {})


# -- worker deaths -----------------------------------------------------------------------


async def test_a_worker_that_keeps_dying_raises_instead_of_dead_lettering(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One record killing the worker is a dead letter; max_deaths records in a row each killing
    it alone mean the worker is broken: WorkerUnstableError, no dead letters."""
    classifier = ProcessClassifier(
        tmp_path, topics=Topics("out", "dlq"), max_event_bytes=1000, log_level="INFO", max_deaths=3
    )
    poison: set[bytes] = {b"poison"}

    async def in_worker(wire: Sequence[WireRecord], explain: int = 0) -> Any:
        if any(record.value in poison for record in wire):
            raise BrokenProcessPool("worker died")
        return BatchResult(
            outgoing=[_output(record.value or b"", record.offset) for record in wire]
        )

    monkeypatch.setattr(classifier, "_in_worker", in_worker)
    monkeypatch.setattr(classifier, "_replace_pool", lambda: None)
    try:
        wire = [WireRecord("in", 0, i, 0, b"k", b"ok" if i != 2 else b"poison") for i in range(5)]
        result = await classifier.classify(wire)
        assert [o.reason for o in result.outgoing].count(DeadLetterReason.CLASSIFICATION_ERROR) == 1
        poison.add(b"ok")
        with pytest.raises(WorkerUnstableError, match="3 articles in a row"):
            await classifier.classify(wire)
    finally:
        classifier.close()


# -- health endpoints ------------------------------------------------------------------


async def test_healthz_fails_with_the_watchdogs_reason_and_readyz_names_the_breaker() -> None:
    """/healthz is 503 with a JSON reason while work is stuck; /readyz fails on an open
    breaker with its reason."""
    health = Health(model_loaded=True, broker_reachable=True, assignment=Assignment.ASSIGNED)
    async with HealthServer("127.0.0.1", 0, registry=CollectorRegistry(), health=health) as server:
        assert (await http_get(server.port, "/healthz"))[0] == 200
        health.stuck = "1 batch(es) in flight for more than 5 s"
        status, body = await http_get(server.port, "/healthz")
        assert status == 503
        assert json.loads(body) == {"alive": False, "reason": health.stuck}
        health.breaker_open = "classification_errors: 100% of the last 64 articles failed"
        status, body = await http_get(server.port, "/readyz")
        assert status == 503
        report = json.loads(body)
        assert report["failing"] == ["breaker_closed"]
        assert report["breaker"].startswith("classification_errors")


# -- metrics: broker errors counted once -----------------------------------------------


class _CommitFailsConsumer:
    def assignment(self) -> set[TopicPartition]:
        return {TopicPartition("in", 0)}

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        raise KafkaConnectionError("connection reset")


async def test_a_failed_commit_is_not_counted_as_a_broker_error_by_the_pipeline() -> None:
    """The commit counts a commit failure and raises; broker_errors_total is left to the
    session loop, which counts the failure once."""
    metrics = ServiceMetrics(CollectorRegistry())
    settings = ServeSettings(model=Path("m"))
    pipeline = Pipeline(
        _CommitFailsConsumer(),
        _FakeProducer(),
        None,  # type: ignore[arg-type]
        settings=settings,
        metrics=metrics,
        health=Health(),
    )
    pipeline._uncommitted[TopicPartition("in", 0)] = 10
    with pytest.raises(BrokerUnavailableError):
        await pipeline._commit()
    registry = metrics.registry
    assert registry.get_sample_value("article_classifier_commit_failures_total") == 1
    assert registry.get_sample_value("article_classifier_broker_errors_total") == 0


class _JoiningConsumer:
    """A consumer whose group join never completes: no assignment, empty fetches."""

    def assignment(self) -> set[TopicPartition]:
        return set()

    async def getmany(self, *partitions: TopicPartition, **kwargs: Any) -> dict[Any, Any]:
        await asyncio.sleep(0.05)
        return {}

    async def end_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        return dict.fromkeys(partitions, 0)

    def highwater(self, tp: TopicPartition) -> int:
        return 0


def _joining_pipeline(**overrides: Any) -> Pipeline:
    values: dict[str, Any] = {
        "model": Path("m"),
        "shutdown_timeout_s": 0.5,
        "session_timeout_ms": 1000,
        "broker_check_interval_s": 0.1,
    }
    values.update(overrides)
    return Pipeline(
        _JoiningConsumer(),
        _FakeProducer(),
        None,  # type: ignore[arg-type]
        settings=ServeSettings(**values),
        metrics=ServiceMetrics(CollectorRegistry()),
        health=Health(),
    )


async def test_a_group_join_that_never_completes_ends_the_session_after_its_bound() -> None:
    """No assignment for twice the rebalance timeout plus the session timeout (here
    2 x 0.5 + 1 s): the session fails with GroupJoinStuckError, to restart as a new member."""
    pipeline = _joining_pipeline()
    assert pipeline._settings.group_join_bound_s == 2.0
    with pytest.raises(GroupJoinStuckError, match="no partition assignment after"):
        await asyncio.wait_for(pipeline.run(asyncio.Event()), 10)


async def test_a_completed_join_even_with_no_partitions_keeps_the_session() -> None:
    """A member given no partitions (more members than partitions) has joined: the session
    goes on past the bound; a revocation starts the clock again."""
    pipeline = _joining_pipeline()
    stop = asyncio.Event()
    running = asyncio.create_task(pipeline.run(stop))
    await pipeline.listener().on_partitions_assigned(set())
    await asyncio.sleep(pipeline._settings.group_join_bound_s + 1.5)
    assert not running.done()
    await pipeline.listener().on_partitions_revoked(set())
    with pytest.raises(GroupJoinStuckError):
        await asyncio.wait_for(running, 10)


async def test_a_consumer_start_that_never_joins_is_abandoned_at_its_bound() -> None:
    """start() joins the group; a join that never completes is cancelled after ``within_s``
    and reported as TimeoutError (the session then restarts as a new member)."""
    cancelled = asyncio.Event()

    class NeverJoins:
        async def start(self) -> None:
            try:
                await asyncio.Event().wait()
            finally:
                cancelled.set()

    with pytest.raises(TimeoutError, match=r"did not start within 0\.2 s"):
        await kafka_module.start_unless_stopped(
            NeverJoins(),
            asyncio.Event(),
            within_s=0.2,
        )
    assert cancelled.is_set()


async def _run_sessions(stop: asyncio.Event, metrics: ServiceMetrics) -> int:
    """The service's session loop with default settings (its ``_session`` patched)."""
    return await asyncio.wait_for(
        app_module._sessions(
            ServeSettings(model=Path("m")),
            classifier=None,  # type: ignore[arg-type]
            stop=stop,
            metrics=metrics,
            health=Health(),
            observers=Observers(metrics, Health(), (), ContinuedTraces()),
        ),
        10,
    )


async def test_a_stuck_join_restarts_the_session_counted_by_its_cause(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The session loop restarts a session stuck joining its group, counted as
    session_restarts_total{cause="group_join_stuck"} and not as a broker error."""
    metrics = ServiceMetrics(CollectorRegistry())
    stop = asyncio.Event()
    calls = 0

    async def session(*args: Any, **kwargs: Any) -> bool:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise GroupJoinStuckError(61.0, 60.0)
        stop.set()
        return True

    monkeypatch.setattr(app_module, "_session", session)
    monkeypatch.setattr(app_module, "_BACKOFF_INITIAL_S", 0.001)
    status = await _run_sessions(stop, metrics)
    assert status == 0
    assert calls == 2
    registry = metrics.registry
    restarts = "article_classifier_session_restarts_total"
    assert registry.get_sample_value(restarts, {"cause": "group_join_stuck"}) == 1
    assert registry.get_sample_value("article_classifier_broker_errors_total") == 0


async def test_the_session_loop_counts_each_failure_once_resets_backoff_and_survives_any_error(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Each failed session adds one broker error (or one 'error' restart, logged with its
    traceback, for an unexpected exception type); a session that started resets the backoff."""
    metrics = ServiceMetrics(CollectorRegistry())
    stop = asyncio.Event()
    steps: list[float] = []
    calls = 0

    class Recording(Backoff):
        def delay(self) -> float:
            steps.append(self.step_s)
            return super().delay() / 1000

    async def session(*args: Any, on_started: Any, **kwargs: Any) -> bool:
        nonlocal calls
        calls += 1
        if calls == 3:
            on_started()
        if calls == 4:
            raise ValueError("a bug in a stage")
        if calls == 6:
            stop.set()
        raise DeliveryError("a record was not acknowledged")

    monkeypatch.setattr(app_module, "_session", session)
    monkeypatch.setattr(app_module, "Backoff", Recording)
    with caplog.at_level(logging.WARNING):
        status = await _run_sessions(stop, metrics)
    assert status == 0
    registry = metrics.registry
    assert registry.get_sample_value("article_classifier_broker_errors_total") == 5
    restarts = "article_classifier_session_restarts_total"
    assert registry.get_sample_value(restarts, {"cause": "error"}) == 1
    assert registry.get_sample_value(restarts, {"cause": "broker"}) == 5
    # calls 1, 2 grow the step; call 3 started a session, so call 3's delay starts over
    assert steps == [0.5, 1.0, 0.5, 1.0, 2.0, 4.0]
    (bug,) = [r for r in caplog.records if "unexpected error" in r.getMessage()]
    assert bug.exc_info is not None
    assert isinstance(bug.exc_info[1], ValueError)


# -- topic limits ----------------------------------------------------------------------


class _FakeAdmin:
    """Answers describe-configs like Apache Kafka (or fails like tansu when ``fail``)."""

    fail = False

    def __init__(self, **kwargs: Any) -> None:
        pass

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def describe_configs(self, resources: list[Any]) -> list[Any]:
        if self.fail:
            raise KafkaConnectionError("Connection closed")
        assert [(r.name, r.configs) for r in resources] == [
            ("out", {"max.message.bytes": None}),
            ("dlq", {"max.message.bytes": None}),
        ]
        entries = [("max.message.bytes", "2097152", False, False, False)]
        response = SimpleNamespace(
            resources=[(0, None, 2, "out", entries), (0, None, 2, "dlq", [])]
        )
        return [response]


async def test_topic_limits_come_from_describe_configs_or_are_unknown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """max.message.bytes is read per topic; a topic without it, or a broker that does not
    answer describe-configs, leaves the limit unknown (the setting applies)."""
    monkeypatch.setattr(kafka_module, "AIOKafkaAdminClient", _FakeAdmin)
    settings = ServeSettings(model=Path("m"))
    assert await kafka_module.topic_message_limits(settings, ["out", "dlq"]) == {
        "out": 2_097_152,
        "dlq": None,
    }
    monkeypatch.setattr(_FakeAdmin, "fail", True)
    assert await kafka_module.topic_message_limits(settings, ["out", "dlq"]) == {
        "out": None,
        "dlq": None,
    }


# -- settings --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--breaker-threshold", "0"], "--breaker-threshold='0'"),
        (["--batch-timeout-s", "-1"], "--batch-timeout-s='-1'"),
        (["--max-in-flight-bytes", "10"], "--max-in-flight-bytes='10'"),
        (["--max-output-bytes", "big"], "--max-output-bytes='big'"),
        (["--breaker-backoff-s", "10", "--breaker-backoff-max-s", "5"], "must be at least"),
    ],
)
def test_bad_resilience_options_name_the_option(argv: list[str], named: str) -> None:
    """A bad value of a new option fails with a ConfigError naming the flag and the value."""
    with pytest.raises(ConfigError, match=named):
        serve_settings("--model", "m", *argv)


def test_resilience_options_arrive_from_flags() -> None:
    """The new flags reach the settings, typed."""
    argv = ["--model", "m", "--max-in-flight-bytes", "2048", "--breaker-window", "50"]
    argv += ["--broker-check-interval-s", "0.5", "--rebalance-drain-timeout-s", "3"]
    settings = serve_settings(*argv)
    assert (settings.max_in_flight_bytes, settings.breaker_window) == (2048, 50)
    assert (settings.broker_check_interval_s, settings.rebalance_drain_timeout_s) == (0.5, 3.0)


async def test_producer_batches_are_cut_to_the_topic_limit() -> None:
    """Records that fit alone are grouped into producer batches no larger than the limit."""
    producer = _FakeProducer()
    publisher = BatchPublisher(producer, limits={"out": 1000}, dead_letter_topic="dlq")
    sent = await publisher.publish([_output(b"v" * 300, i) for i in range(10)])
    assert len(sent) > 1
    assert sum(len(s.items) for s in sent) == 10
    assert all(sum(len(i.value or b"") for i in s.items) <= 1000 for s in sent)
    delivery = await publisher.confirm(sent, {})
    assert len(delivery.delivered) == 10
