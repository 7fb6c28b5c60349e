"""The feedback consumer: editor verdicts in, live quality metrics and dead letters out.

It runs in the service process next to the article sessions, with its own consumer group
(``<group-id>.feedback``), its own producer for dead letters and its own session loop, so
nothing it meets (a broken record, the broker gone, a bug) can block or end the article
pipeline. Delivery is at least once: an offset is committed after every dead letter of the
records up to it is acknowledged. A record re-delivered after a crash or a rebalance is
counted again: the metrics are estimates, and a duplicate moves them by one verdict.
Broker trouble is handled like the article sessions': logged, counted, retried after a
capped jittered backoff that resets once a session starts; only a stop ends the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import (
    CommitFailedError,
    CorruptRecordException,
    IllegalStateError,
    InvalidTimestampError,
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
)

from schemas import DecodeError, decode_feedback
from service.config.commands import ServeSettings
from service.core.backoff import Backoff
from service.core.deadletter import VALUE_DROPPED_HEADER, dead_letter_headers
from service.core.errors import BrokerUnavailableError, DeliveryError, MissingTopicError
from service.core.headers import Header
from service.feedback.quality import QualityTracker, manifest_labels, serving_labels
from service.kafka.access import access_backoff, access_restart, raise_denied
from service.kafka.clients import (
    client_options,
    make_producer,
    missing_topics,
    security_kwargs,
    start_unless_stopped,
)
from service.kafka.supervisor import Restart, Supervisor
from service.observe.metrics import ServiceMetrics

logger = logging.getLogger(__name__)

_BACKOFF_INITIAL_S = 0.5
_BACKOFF_MAX_S = 10.0
#: A missing feedback topic is an operator's decision (no corrections yet): checked rarely.
_MISSING_TOPIC_MAX_S = 60.0
_POLL_TIMEOUT_MS = 500
_MAX_POLL_RECORDS = 500
_CLOSE_TIMEOUT_S = 10.0
#: How long the service's shutdown waits for the feedback loop to commit and close.
STOP_TIMEOUT_S = 15.0
_BROKER_ERRORS = (KafkaError, BrokerUnavailableError, DeliveryError, OSError)
#: Produce errors about the record itself: retrying cannot help, dropping its value can.
_REFUSALS = (
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    CorruptRecordException,
    InvalidTimestampError,
)


class FeedbackConsumer:
    """``await FeedbackConsumer(...).run(stop)``: consume until ``stop`` is set."""

    def __init__(
        self,
        settings: ServeSettings,
        metrics: ServiceMetrics,
        quality: QualityTracker,
    ) -> None:
        if not settings.feedback_topic:
            raise ValueError("no feedback topic configured")
        self._settings = settings
        self._topic = settings.feedback_topic
        self._metrics = metrics
        self._quality = quality

    async def run(self, stop: asyncio.Event) -> None:
        """Sessions until ``stop``; any failure is logged and retried after a backoff."""
        backoff = Backoff(_BACKOFF_INITIAL_S, _BACKOFF_MAX_S)
        restarts = self._metrics.feedback_session_restarts
        supervisor = Supervisor(
            [
                access_restart(access_backoff()),
                Restart(
                    (MissingTopicError,),
                    "missing_topic",
                    Backoff(_BACKOFF_INITIAL_S, _MISSING_TOPIC_MAX_S, full_jitter=False),
                    message="feedback topic missing; live quality metrics start when it exists",
                    # Said once, not at every check: running without corrections is normal.
                    quiet_after_first=True,
                ),
                Restart(
                    _BROKER_ERRORS,
                    "broker",
                    backoff,
                    message="feedback session failed on the broker; retrying",
                ),
                Restart(
                    (Exception,),
                    "error",
                    backoff,
                    message="feedback session failed on an unexpected error; restarting",
                    traceback=True,
                ),
            ],
            stop=stop,
            count=lambda cause: restarts.labels(cause).inc(),
            context={"topic": self._topic},
            log=logger,
        )
        outputs = (self._settings.dead_letter_topic,)

        async def session() -> None:
            try:
                await self._session(stop, on_started=backoff.reset)
            except _BROKER_ERRORS as error:
                await raise_denied(error, self._settings, outputs)
                raise

        await supervisor.run(session)

    async def _session(self, stop: asyncio.Event, *, on_started: Callable[[], None]) -> None:
        missing = await missing_topics(self._settings, [self._topic])
        if missing:
            raise MissingTopicError(missing)
        async with AsyncExitStack() as stack:
            stack.callback(self._metrics.feedback_consumer_running.set, 0)
            producer = make_producer(self._settings)
            stack.push_async_callback(_close, producer, "feedback-producer")
            await producer.start()
            consumer = make_feedback_consumer(self._settings)
            stack.push_async_callback(_close, consumer, "feedback-consumer")
            consumer.subscribe([self._topic])
            if not await start_unless_stopped(consumer, stop):
                return
            self._metrics.feedback_consumer_running.set(1)
            on_started()
            logger.info(
                "feedback consumer started",
                extra={"group_id": self._settings.feedback_group_id, "topic": self._topic},
            )
            while not stop.is_set():
                fetched = await consumer.getmany(
                    timeout_ms=_POLL_TIMEOUT_MS, max_records=_MAX_POLL_RECORDS
                )
                if fetched:
                    await self._handle(fetched, producer)
                    await _commit(consumer, fetched)

    async def _handle(
        self, fetched: dict[TopicPartition, list[Any]], producer: AIOKafkaProducer
    ) -> None:
        """Count every valid verdict; dead-letter the rest and wait for the acknowledgements."""
        pending: list[tuple[Any, DecodeError, asyncio.Future[Any] | KafkaError]] = []
        for records in fetched.values():
            self._metrics.feedback_records.inc(len(records))
            for record in records:
                decoded = decode_feedback(record.value)
                if isinstance(decoded, DecodeError):
                    sending = await self._send(producer, record, decoded)
                    pending.append((record, decoded, sending))
                else:
                    self._quality.record(decoded)
        for record, error, sending in pending:
            await self._acknowledged(record, error, sending, producer)

    async def _send(
        self, producer: AIOKafkaProducer, record: Any, error: DecodeError
    ) -> asyncio.Future[Any] | KafkaError:
        """Queue the dead letter (the sends of a batch pipeline); a refusal at once is
        returned, to be handled with the acknowledgements."""
        try:
            future: asyncio.Future[Any] = await producer.send(
                self._settings.dead_letter_topic,
                key=record.key,
                value=record.value,
                headers=_headers(record, error),
            )
        except KafkaError as refused:
            return refused
        return future

    async def _acknowledged(
        self,
        record: Any,
        error: DecodeError,
        sending: asyncio.Future[Any] | KafkaError,
        producer: AIOKafkaProducer,
    ) -> None:
        dropped: str | None = None
        try:
            if isinstance(sending, KafkaError):
                raise sending
            await sending
        except _REFUSALS as refused:
            # The dead-letter topic refused the record itself (too large, invalid): forward
            # the verdict without the value, so the decision is still on the topic; if even
            # that is refused, log it and move on: a refusal never loops.
            size = len(record.value or b"")
            headers = [*_headers(record, error), (VALUE_DROPPED_HEADER, str(size).encode())]
            try:
                await producer.send_and_wait(
                    self._settings.dead_letter_topic, key=record.key, value=None, headers=headers
                )
            except _REFUSALS as again:
                logger.error(  # noqa: TRY400 - a decision, not a crash: no traceback
                    "feedback dead letter refused even without its value; skipped",
                    extra={**_where(record), "reason": error.reason.value, "error": repr(again)},
                )
                return
            dropped = f"{size} bytes ({type(refused).__name__})"
        self._metrics.feedback_dead_letters.labels(error.reason.value).inc()
        logger.warning(
            "feedback record dead-lettered",
            extra={
                **_where(record),
                "reason": error.reason.value,
                "error": error.message,
                "value_dropped": dropped,
            },
        )


def make_feedback_consumer(settings: ServeSettings) -> AIOKafkaConsumer:
    """A group consumer of the feedback topic in ``<group-id>.feedback``, no auto-commit."""
    return AIOKafkaConsumer(
        **security_kwargs(settings),
        **client_options(settings, "AIOKafkaConsumer"),
        client_id=f"{settings.client_id}-feedback",
        group_id=settings.feedback_group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        retry_backoff_ms=200,
        session_timeout_ms=settings.session_timeout_ms,
        heartbeat_interval_ms=max(500, settings.session_timeout_ms // 5),
    )


async def run_feedback(
    stack: AsyncExitStack,
    settings: ServeSettings,
    metrics: ServiceMetrics,
    quality: QualityTracker,
    stop: asyncio.Event,
) -> None:
    """Start the feedback loop as a task that ``stack`` stops (bounded) when it closes.

    The loop stops when ``stop`` is set or the stack closes, whichever comes first, so at
    a shutdown it commits and leaves its group while the article pipeline drains.
    """
    done = asyncio.Event()
    forward = asyncio.create_task(_forward(stop, done), name="feedback-stop")
    task = asyncio.create_task(
        FeedbackConsumer(settings, metrics, quality).run(done), name="feedback"
    )

    async def close() -> None:
        done.set()
        forward.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await forward
        try:
            await asyncio.wait_for(asyncio.shield(task), STOP_TIMEOUT_S)
        except TimeoutError:
            logger.warning("feedback consumer did not stop in time; cancelled")
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    stack.push_async_callback(close)


def quality_tracker(
    settings: ServeSettings, metrics: ServiceMetrics, predictor: object | None = None
) -> QualityTracker:
    """A tracker knowing the models' labels: the given predictor's or the default model's
    manifest's, and those of the models per language (``--model de=DIR``)."""
    sections = getattr(predictor, "sections", None)
    tags = getattr(predictor, "tags", None)
    if sections is None or tags is None:
        sections, tags = manifest_labels(settings.model)
    tracker = QualityTracker(
        metrics, sections=sections, tags=tags, max_versions=settings.feedback_max_versions
    )
    tracker.add_labels(*serving_labels(settings.language_dirs.values()))
    return tracker


async def _forward(stop: asyncio.Event, done: asyncio.Event) -> None:
    await stop.wait()
    done.set()


async def _commit(consumer: AIOKafkaConsumer, fetched: dict[TopicPartition, list[Any]]) -> None:
    offsets = {tp: records[-1].offset + 1 for tp, records in fetched.items() if records}
    try:
        await consumer.commit(offsets)
    except (CommitFailedError, IllegalStateError) as error:
        # A rebalance took the partitions: their next owner counts these records again.
        logger.warning(
            "feedback commit failed; the records will be counted again",
            extra={"error": repr(error), "partitions": _partitions(offsets)},
        )


def _headers(record: Any, error: DecodeError) -> list[Header]:
    return dead_letter_headers(
        error.reason,
        error.message,
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        forwarded=record.headers,
    )


def _where(record: Any) -> dict[str, Any]:
    """The log fields that locate a record: its key (cut, decoded leniently) and offset."""
    key: bytes | None = record.key
    return {
        "key": None if key is None else key.decode("utf-8", "replace")[:256],
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
    }


def _partitions(offsets: dict[TopicPartition, int]) -> Sequence[str]:
    return [f"{tp.topic}-{tp.partition}" for tp in offsets]


async def _close(client: AIOKafkaConsumer | AIOKafkaProducer, name: str) -> None:
    try:
        await asyncio.wait_for(client.stop(), _CLOSE_TIMEOUT_S)
    except TimeoutError:
        logger.warning("kafka client did not close in time", extra={"client": name})
    except KafkaError as error:
        logger.warning(
            "kafka client closed with an error", extra={"client": name, "error": repr(error)}
        )
