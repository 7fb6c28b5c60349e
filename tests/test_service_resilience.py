"""Refused outputs, stuck work, the circuit breaker and session restarts, against the broker."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from conftest import (
    INPUT_PARTITIONS,
    Topics,
    article_records,
    consume,
    http_get,
    make_settings,
    produce,
    running_service,
    settle,
    wait_for,
)

from devtools.tansu import EmbeddedBroker, ensure_topics
from schemas import ArticleEvent, Classification
from service.commands import serve as app_module
from service.config.commands import ServeSettings
from service.core.errors import WorkerUnstableError
from service.core.records import BatchResult, InputRecord
from service.core.records import Topics as OutputTopics
from service.models.workers import ModelIdentity, ThreadClassifier

pytestmark = pytest.mark.kafka


def _value(service: Any, name: str, labels: dict[str, str] | None = None) -> float:
    value = service.registry.get_sample_value(f"article_classifier_{name}", labels or {})
    return float(value or 0)


def _reasons(letters: Sequence[Any]) -> list[str]:
    return [dict(letter.headers)["error.reason"].decode() for letter in letters]


class _Switchable:
    """The demo model, failing on every article while ``broken`` is set."""

    def __init__(self, predictor: Any) -> None:
        self._predictor = predictor
        self.name = predictor.name
        self.version = predictor.version
        self.broken = threading.Event()

    def predict(self, articles: Sequence[ArticleEvent]) -> list[Classification]:
        if self.broken.is_set():
            raise RuntimeError("model out of order")
        result: list[Classification] = self._predictor.predict(articles)
        return result


class _Poisoned(_Switchable):
    """Fails on any batch holding the article titled 'poison'."""

    def predict(self, articles: Sequence[ArticleEvent]) -> list[Classification]:
        if any(article.title == "poison" for article in articles):
            raise RuntimeError("poison")
        return super().predict(articles)


class _Blocking(_Switchable):
    """Blocks every prediction until ``release`` is set; ``entered`` says one is waiting."""

    def __init__(self, predictor: Any) -> None:
        super().__init__(predictor)
        self.entered = threading.Event()
        self.release = threading.Event()

    def predict(self, articles: Sequence[ArticleEvent]) -> list[Classification]:
        self.entered.set()
        self.release.wait(60)
        return super().predict(articles)


async def test_an_output_too_large_for_its_topic_is_dead_lettered_and_the_partition_moves_on(
    broker: EmbeddedBroker, topics: Topics, model_dir: Path, predictor: Any
) -> None:
    """An input whose classified output would exceed the output topic's max.message.bytes
    becomes one output_rejected dead letter, before producing; the records behind it on every
    partition are published. The dead letter (input plus headers) cannot fit the same limit
    either: its value is dropped and a header gives the input's size. Apache Kafka describes
    the limit set on the topics; tansu does not, so --max-output-bytes (the same) applies."""
    limit = {"max.message.bytes": "4600"}
    topics = Topics(
        topics.input, f"{topics.output}-small", f"{topics.dead_letter}-small", topics.group
    )
    await ensure_topics(
        broker.bootstrap_servers,
        {topics.output: 3, topics.dead_letter: 1},
        configs={topics.output: limit, topics.dead_letter: limit},
    )
    big = {"article_id": "big", "title": "Cup final", "body": "goal " * 900}
    big_value = json.dumps(big).encode()
    assert len(big_value) < 8192
    records = [*article_records(10, prefix="before"), (b"big", big_value)]
    records += article_records(10, prefix="after")
    await produce(broker.bootstrap_servers, topics.input, records)
    # Only tansu needs the fallback; on Apache Kafka the default fallback shows the topic's
    # own limit is read.
    fallback = {"max_output_bytes": 4600} if isinstance(broker, EmbeddedBroker) else {}
    settings = make_settings(
        broker.bootstrap_servers, topics, model_dir, max_event_bytes=8192, **fallback
    )
    async with running_service(settings, predictor) as service:
        dead = await settle(broker.bootstrap_servers, topics.dead_letter, 1)
        outputs = await consume(broker.bootstrap_servers, topics.output, 20)
        assert _value(service, "dead_letters_total", {"reason": "output_rejected"}) == 1
        assert _value(service, "session_restarts_total", {"cause": "broker"}) == 0
    assert len(outputs) == 20
    (letter,) = dead
    assert letter.key == b"big"
    assert letter.value is None
    headers = dict(letter.headers)
    assert headers["error.reason"] == b"output_rejected"
    assert headers["error.value_dropped"] == str(len(big_value)).encode()
    assert b"max.message.bytes (4600)" in headers["error.message"]
    assert all(len(record.value) <= 4600 for record in outputs)


async def test_a_model_failing_on_everything_opens_the_breaker_then_recovers(
    broker: EmbeddedBroker, topics: Topics, model_dir: Path, predictor: Any
) -> None:
    """With every article failing, the breaker opens (readyz 503 naming it), nothing past the
    window's minimum is dead-lettered, re-tests after a delay open it again; once the model
    works, it closes and every record is published or dead-lettered."""
    model = _Switchable(predictor)
    model.broken.set()
    records = article_records(200, prefix="breaker")
    await produce(broker.bootstrap_servers, topics.input, records)
    settings = make_settings(
        broker.bootstrap_servers,
        topics,
        model_dir,
        breaker_min_records=20,
        breaker_backoff_s=1.0,
        breaker_backoff_max_s=4.0,
    )
    async with running_service(settings, model) as service:

        async def breaker_reported() -> bool:
            status, body = await http_get(service.port, "/readyz")
            return status == 503 and "model" in (json.loads(body)["breaker"] or "")

        await wait_for(breaker_reported, timeout_s=30, interval_s=0.05)
        await wait_for(
            lambda: (
                _value(service, "circuit_breaker_trips_total", {"cause": "classification_errors"})
                >= 3
            ),
            timeout_s=60,
        )
        # The session restart is counted just after the trip: wait for it rather than race it.
        await wait_for(
            lambda: _value(service, "session_restarts_total", {"cause": "breaker"}) >= 3,
            timeout_s=30,
        )
        dead_while_open = await consume(
            broker.bootstrap_servers, topics.dead_letter, 200, timeout_s=1
        )
        assert len(dead_while_open) < settings.breaker_min_records
        model.broken.clear()
        outputs = await consume(
            broker.bootstrap_servers, topics.output, len(records) - len(dead_while_open)
        )
        await wait_for(lambda: _value(service, "circuit_breaker_state") == 0, timeout_s=30)
        assert (await http_get(service.port, "/readyz"))[0] == 200
    dead = await consume(broker.bootstrap_servers, topics.dead_letter, 200, timeout_s=1)
    seen = {json.loads(r.value)["event_id"] for r in outputs} | {
        json.loads(r.value)["event_id"] for r in dead
    }
    assert len(seen) == len(records)
    assert set(_reasons(dead)) <= {"classification_error"}


async def test_one_poison_article_is_a_dead_letter_and_does_not_open_the_breaker(
    broker: EmbeddedBroker, topics: Topics, model_dir: Path, predictor: Any
) -> None:
    """A single article the model fails on is one classification_error dead letter; the
    breaker stays closed and everything else is published."""
    records = article_records(60, prefix="pois")
    poison = {"article_id": "poison-1", "event_id": "p", "title": "poison", "body": "x"}
    records.insert(30, (b"poison-1", json.dumps(poison).encode()))
    await produce(broker.bootstrap_servers, topics.input, records)
    settings = make_settings(broker.bootstrap_servers, topics, model_dir, breaker_min_records=5)
    async with running_service(settings, _Poisoned(predictor)) as service:
        outputs = await consume(broker.bootstrap_servers, topics.output, 60)
        dead = await settle(broker.bootstrap_servers, topics.dead_letter, 1)
        assert (
            _value(service, "circuit_breaker_trips_total", {"cause": "classification_errors"}) == 0
        )
        assert _value(service, "circuit_breaker_state") == 0
    assert len(outputs) == 60
    assert _reasons(dead) == ["classification_error"]
    assert dead[0].key == b"poison-1"


class _DyingWorker:
    """A classifier whose worker 'keeps dying' (WorkerUnstableError) while ``broken``."""

    def __init__(self, inner: ThreadClassifier) -> None:
        self._inner = inner
        self.broken = True

    async def start(self) -> ModelIdentity:
        return await self._inner.start()

    async def classify(
        self, records: Sequence[InputRecord], *, explain: int | None = None
    ) -> BatchResult:
        if self.broken:
            raise WorkerUnstableError("the classification worker died on 3 articles in a row")
        return await self._inner.classify(records)

    def close(self) -> None:
        self._inner.close()


async def test_a_worker_that_keeps_dying_opens_the_breaker_without_dead_letters(
    broker: EmbeddedBroker,
    topics: Topics,
    model_dir: Path,
    predictor: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """WorkerUnstableError opens the breaker (cause worker): no dead letter is written, and
    once the worker is healthy every record is published."""
    dying: list[_DyingWorker] = []

    def make(settings: ServeSettings, *_: Any, **kwargs: Any) -> _DyingWorker:
        dying.append(
            _DyingWorker(
                ThreadClassifier(
                    model_dir,
                    topics=OutputTopics(settings.output_topic, settings.dead_letter_topic),
                    max_event_bytes=settings.max_event_bytes,
                    predictor=kwargs["predictor"],
                )
            )
        )
        return dying[-1]

    monkeypatch.setattr(app_module, "build_classifier", make)
    records = article_records(40, prefix="dying")
    await produce(broker.bootstrap_servers, topics.input, records)
    settings = make_settings(
        broker.bootstrap_servers, topics, model_dir, breaker_backoff_s=0.5, breaker_backoff_max_s=1
    )
    async with running_service(settings, predictor) as service:
        await wait_for(
            lambda: _value(service, "circuit_breaker_trips_total", {"cause": "worker"}) >= 2,
            timeout_s=60,
        )
        assert await consume(broker.bootstrap_servers, topics.dead_letter, 1, timeout_s=1) == []
        dying[0].broken = False
        outputs = await settle(broker.bootstrap_servers, topics.output, len(records))
        await wait_for(lambda: _value(service, "circuit_breaker_state") == 0, timeout_s=30)
    assert {json.loads(r.value)["event_id"] for r in outputs} == {
        json.loads(v or b"")["event_id"] for _, v in records
    }


async def test_a_stuck_batch_fails_healthz_counts_a_timeout_and_bounds_fetching_by_bytes(
    broker: EmbeddedBroker, topics: Topics, model_dir: Path, predictor: Any
) -> None:
    """A batch stuck in the model past --batch-timeout-s: /healthz 503 with the reason, one
    timeout counted, the oldest-batch age gauge over the bound, and (in-flight bytes full) no
    further fetch; released, it publishes everything and /healthz is 200 again."""
    model = _Blocking(predictor)
    records = article_records(100, prefix="stuck")
    await produce(broker.bootstrap_servers, topics.input, records)
    settings = make_settings(
        broker.bootstrap_servers,
        topics,
        model_dir,
        batch_timeout_s=1.0,
        max_in_flight_bytes=1024,
        max_in_flight_batches=4,
    )
    try:
        async with running_service(settings, model) as service:
            await wait_for(model.entered.is_set, timeout_s=30)

            async def unhealthy() -> bool:
                status, body = await http_get(service.port, "/healthz")
                return status == 503 and "in flight for more than 1 s" in json.loads(body)["reason"]

            await wait_for(unhealthy, timeout_s=15)
            assert _value(service, "batch_timeouts_total") == 1
            assert _value(service, "oldest_in_flight_batch_age_seconds") > 1.0
            # One batch holds more than 1024 bytes: nothing else was fetched behind it.
            consumed = _value(service, "records_consumed_total")
            assert _value(service, "in_flight_records") == consumed
            assert _value(service, "in_flight_bytes") >= 1024
            model.release.set()
            outputs = await settle(broker.bootstrap_servers, topics.output, len(records))
            await wait_for(
                lambda: _value(service, "oldest_in_flight_batch_age_seconds") < 1.0, timeout_s=10
            )
            assert (await http_get(service.port, "/healthz"))[0] == 200
    finally:
        model.release.set()
    assert len({json.loads(r.value)["event_id"] for r in outputs}) == len(records)


async def test_lag_comes_from_end_offsets_and_its_series_go_when_the_session_ends(
    broker: EmbeddedBroker,
    topics: Topics,
    model_dir: Path,
    predictor: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The probe asks for the assigned partitions' end offsets (never the whole cluster's
    metadata); the lag series it sets are removed when the session ends."""
    calls = {"topics": 0, "end_offsets": 0}
    original_topics = AIOKafkaConsumer.topics
    original_end_offsets = AIOKafkaConsumer.end_offsets

    async def topics_counted(self: AIOKafkaConsumer) -> Any:
        if self._group_id == topics.group:
            calls["topics"] += 1
        return await original_topics(self)

    async def end_offsets_counted(self: AIOKafkaConsumer, partitions: Any) -> Any:
        if self._group_id == topics.group:
            calls["end_offsets"] += 1
        return await original_end_offsets(self, partitions)

    monkeypatch.setattr(AIOKafkaConsumer, "topics", topics_counted)
    monkeypatch.setattr(AIOKafkaConsumer, "end_offsets", end_offsets_counted)
    await produce(broker.bootstrap_servers, topics.input, article_records(30, prefix="lag"))
    settings = make_settings(
        broker.bootstrap_servers, topics, model_dir, broker_check_interval_s=0.2
    )
    async with running_service(settings, predictor) as service:
        await wait_for(lambda: bool(_lag_series(service)), timeout_s=30)
        await wait_for(lambda: calls["end_offsets"] >= 3, timeout_s=10)
    assert _lag_series(service) == []
    assert calls["topics"] == 0


async def test_every_assigned_partition_reports_lag_even_with_nothing_to_fetch(
    broker: EmbeddedBroker, topics: Topics, model_dir: Path, predictor: Any
) -> None:
    """A partition with nothing fetched since its assignment (idle, or caught up before a
    rebalance moved it) has a lag series from the committed position: a dashboard shows
    every partition of the group, not only the busy ones."""
    await produce(broker.bootstrap_servers, topics.input, article_records(1, prefix="idle"))
    settings = make_settings(
        broker.bootstrap_servers, topics, model_dir, broker_check_interval_s=0.2
    )
    async with running_service(settings, predictor) as service:
        await wait_for(lambda: len(_lag_series(service)) == INPUT_PARTITIONS, timeout_s=30)
        assert sorted(labels["partition"] for labels in _lag_series(service)) == ["0", "1", "2"]
        await wait_for(lambda: _value(service, "records_consumed_total") == 1, timeout_s=30)
        await wait_for(lambda: _lag_total(service) == 0, timeout_s=30)


def _lag_total(service: Any) -> float:
    return float(
        sum(
            sample.value
            for family in service.registry.collect()
            if family.name == "article_classifier_consumer_lag"
            for sample in family.samples
        )
    )


def _lag_series(service: Any) -> list[dict[str, str]]:
    return [
        sample.labels
        for family in service.registry.collect()
        if family.name == "article_classifier_consumer_lag"
        for sample in family.samples
    ]


class _FailsOnce:
    """A classifier whose first batch raises an unexpected error (a bug in a stage)."""

    def __init__(self, inner: ThreadClassifier) -> None:
        self._inner = inner
        self.failed = False

    async def start(self) -> ModelIdentity:
        return await self._inner.start()

    async def classify(
        self, records: Sequence[InputRecord], *, explain: int | None = None
    ) -> BatchResult:
        if not self.failed:
            self.failed = True
            raise TypeError("a bug nobody expected")
        return await self._inner.classify(records)

    def close(self) -> None:
        self._inner.close()


async def test_an_unexpected_exception_in_a_stage_restarts_the_session_without_loss(
    broker: EmbeddedBroker,
    topics: Topics,
    model_dir: Path,
    predictor: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Any exception type escaping a stage is logged with its traceback, the session restarts
    from the last commit, and every record is still published."""

    def make(settings: ServeSettings, *_: Any, **kwargs: Any) -> _FailsOnce:
        return _FailsOnce(
            ThreadClassifier(
                model_dir,
                topics=OutputTopics(settings.output_topic, settings.dead_letter_topic),
                max_event_bytes=settings.max_event_bytes,
                predictor=kwargs["predictor"],
            )
        )

    monkeypatch.setattr(app_module, "build_classifier", make)
    records = article_records(50, prefix="bug")
    await produce(broker.bootstrap_servers, topics.input, records)
    settings = make_settings(broker.bootstrap_servers, topics, model_dir)
    with caplog.at_level(logging.WARNING, logger="service.commands.serve"):
        async with running_service(settings, predictor) as service:
            outputs = await settle(broker.bootstrap_servers, topics.output, len(records))
            assert _value(service, "session_restarts_total", {"cause": "error"}) == 1
    assert {json.loads(r.value)["event_id"] for r in outputs} == {
        json.loads(v or b"")["event_id"] for _, v in records
    }
    (logged,) = [r for r in caplog.records if "unexpected error" in r.getMessage()]
    assert logged.exc_info is not None
    assert isinstance(logged.exc_info[1], TypeError)


async def test_a_rebalance_does_not_wait_for_a_stuck_batch_beyond_its_bound(
    broker: EmbeddedBroker,
    topics: Topics,
    model_dir: Path,
    predictor: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With the first instance's batch stuck, a second instance joining still gets partitions
    (the revoke drain gives up after --rebalance-drain-timeout-s) and publishes; once
    released, nothing is lost."""
    stuck = _Blocking(predictor)
    records = article_records(120, prefix="rebal")
    await produce(broker.bootstrap_servers, topics.input, records)
    settings = make_settings(
        broker.bootstrap_servers, topics, model_dir, rebalance_drain_timeout_s=1.0
    )
    try:
        async with running_service(settings, stuck) as first:
            await wait_for(stuck.entered.is_set, timeout_s=30)
            caplog.set_level(logging.WARNING, logger="service.kafka.pipeline")
            async with running_service(settings, predictor) as second:
                await wait_for(lambda: _value(second, "articles_published_total") > 0, timeout_s=60)
                stuck.release.set()
                outputs = await settle(broker.bootstrap_servers, topics.output, len(records))
            assert _value(first, "records_consumed_total") > 0
    finally:
        stuck.release.set()
    assert len({json.loads(r.value)["event_id"] for r in outputs}) == len(records)
    assert any("rebalance drain did not finish in time" in r.getMessage() for r in caplog.records)
