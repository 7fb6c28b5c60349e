"""One consumer-group session: fetch -> classify -> send -> acknowledge and commit.

Four stages, each one task, joined by queues, so the CPU never waits on the network:
batch N+2 is fetched while N+1 is classified in the worker thread while N's sends are
awaited. A semaphore of ``max_in_flight_batches`` slots is taken before each fetch and
given back after that batch's commit, so memory is bounded whatever the lag.

Batches flow through every stage in fetch order and the producer keeps per-partition
order, so outputs keep the input order per partition (hence per key). An offset is
committed only after every output and dead letter up to it is acknowledged (acks=all).

Bounds: fetching also pauses while the fetched-but-uncommitted records hold
``max_in_flight_bytes``; a watchdog flags ``/healthz`` when the oldest in-flight batch is
older than ``batch_timeout_s``; a rebalance drain waits at most ``rebalance_drain_timeout_s``.
A circuit breaker over the model's outcomes stops publishing when too many articles fail
(``service.core.breaker``): the batch that tripped it is not published, the earlier ones are
committed, and the session ends with BreakerOpenError (the session loop backs off).

Exactly-once (``service.kafka.transactions``): the send stage commits each batch in one
transaction per input partition (outputs, dead letters and the partition's next offset),
batch after batch in fetch order, while the next batches are fetched and classified; the
ack stage only counts. A partition's records are processed only once its transactional
producer is started at assignment (fencing its previous owner) and it is sought to the
committed offset read after that; records fetched before are dropped and fetched again.
A failed transaction is aborted and ends the session: the next one resumes from the
committed offsets, so nothing is skipped and nothing aborted is visible downstream.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

from service.config.commands import PipelineSettings
from service.core.breaker import CircuitBreaker
from service.core.deadletter import DeadLetterReason
from service.core.errors import (
    BreakerOpenError,
    BrokerUnavailableError,
    GroupJoinStuckError,
    WorkerUnstableError,
)
from service.core.records import BatchObserver, BatchResult, Delivery, InputRecord, Outgoing
from service.kafka.delivery import Acknowledgement, AtLeastOnce, DeliveryMode, ExactlyOnce
from service.kafka.offsets import OffsetTracker
from service.kafka.publish import BatchPublisher, SourceKey
from service.kafka.registry import RegistryFraming
from service.kafka.transactions import PartitionTransactions
from service.models.workers import BatchClassifier
from service.observe.health import Assignment, Health
from service.observe.metrics import ServiceMetrics
from service.observe.tracing import ContinuedTraces, Traces

logger = logging.getLogger(__name__)

#: Breaker states, as the ``circuit_breaker_state`` gauge shows them.
BREAKER_CLOSED, BREAKER_OPEN, BREAKER_HALF_OPEN = 0, 1, 2
_PROBE_TIMEOUT_S = 5.0


class Bounds(Protocol):
    """What bounds the stream a session reads, as one stage of the pipeline: nothing for the
    live service (``Unbounded``), a time range and a rate for a replay
    (``service.kafka.replay_gate.ReplayGate``). Each hook is called at one point of the
    stages; nothing else changes."""

    async def before_fetch(self) -> None:
        """Before each fetch: wait for the rate limit, pause the finished partitions."""
        ...

    def admit(self, fetched: dict[TopicPartition, list[Any]]) -> dict[TopicPartition, list[Any]]:
        """The fetched records to process (those inside the replayed range)."""
        ...

    def rewrite(self, outgoing: list[Outgoing], sources: dict[SourceKey, Any]) -> list[Outgoing]:
        """The records to produce for a batch, after the size checks."""
        ...

    async def commit(self, consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int]) -> None:
        """Commit ``offsets`` (and note the progress)."""
        ...


class Unbounded:
    """The live service's stream: every record, committed as it is."""

    async def before_fetch(self) -> None:
        """Nothing to wait for."""

    def admit(self, fetched: dict[TopicPartition, list[Any]]) -> dict[TopicPartition, list[Any]]:
        """Every fetched record."""
        return fetched

    def rewrite(self, outgoing: list[Outgoing], sources: dict[SourceKey, Any]) -> list[Outgoing]:
        """The records as they are."""
        return outgoing

    async def commit(self, consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int]) -> None:
        """The group's commit."""
        await consumer.commit(offsets)


@dataclass
class _Batch:
    id: int
    records: list[Any]  # aiokafka ConsumerRecord
    next_offsets: dict[TopicPartition, int]
    nbytes: int
    started: float
    result: BatchResult | None = None
    #: Set by the send stage: what the acknowledgement stage awaits.
    acknowledge: Acknowledgement | None = None

    def sources(self) -> dict[SourceKey, InputRecord]:
        return {(record.partition, record.offset): record for record in self.records}


class Pipeline:
    """Runs the four stages for one consumer/producer pair until stopped or broken."""

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer | None,
        classifier: BatchClassifier,
        *,
        settings: PipelineSettings,
        metrics: ServiceMetrics,
        health: Health,
        observers: Sequence[BatchObserver] = (),
        limits: dict[str, int] | None = None,
        half_open: bool = False,
        on_breaker_closed: Callable[[], None] | None = None,
        bounds: Bounds | None = None,
        transactions: PartitionTransactions | None = None,
        traces: Traces | None = None,
        framing: RegistryFraming | None = None,
    ) -> None:
        self._consumer = consumer
        self._traces = traces if traces is not None else ContinuedTraces()
        self._framing = framing
        self._bounds = bounds if bounds is not None else Unbounded()
        self._producer = producer
        self._classifier = classifier
        self._settings = settings
        self._metrics = metrics
        self._health = health
        self._observers = tuple(observers)
        self._tracker = OffsetTracker()
        self._publisher = BatchPublisher(
            producer, limits=limits or {}, dead_letter_topic=settings.dead_letter_topic
        )
        self._breaker = CircuitBreaker(
            window=settings.breaker_window,
            threshold=settings.breaker_threshold,
            min_records=settings.breaker_min_records,
        )
        self._half_open = half_open
        self._on_breaker_closed = on_breaker_closed
        self._in_flight_bytes = 0
        self._bytes_freed = asyncio.Event()
        self._started: dict[int, float] = {}
        self._timed_out: set[int] = set()
        self._lag_series: set[tuple[str, str]] = set()
        #: Since when the consumer has been (re)joining its group without an assignment.
        self._joining_since: float | None = time.monotonic()
        self._slots = asyncio.Semaphore(settings.max_in_flight_batches)
        self._to_classify: asyncio.Queue[_Batch] = asyncio.Queue()
        self._to_send: asyncio.Queue[_Batch] = asyncio.Queue()
        self._to_ack: asyncio.Queue[_Batch] = asyncio.Queue()
        self._uncommitted: dict[TopicPartition, int] = {}
        self._idle = asyncio.Event()
        self._idle.set()
        self._fetching = True
        self._failure: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._ids = itertools.count()
        self._next_fetch: dict[TopicPartition, int] = {}
        self._delivery: DeliveryMode = (
            ExactlyOnce(transactions, consumer, input_topic=settings.input_topic, fail=self._fail)
            if transactions is not None
            else AtLeastOnce(self._publisher)
        )

    # -- the rebalance listener's view -------------------------------------------------

    @property
    def delivery(self) -> DeliveryMode:
        """How this session delivers its batches (at least once, or exactly once)."""
        return self._delivery

    def listener(self) -> ConsumerRebalanceListener:
        """The listener to subscribe with: revoked partitions are drained and committed."""
        return _Listener(self)

    async def drain(self) -> None:
        """Wait until every fetched batch is acknowledged and its offsets committed, or
        until the pipeline has failed (then the session restarts from the last commit)."""
        idle = asyncio.create_task(self._idle.wait())
        try:
            await _wait_any(idle, self._failure)
        finally:
            idle.cancel()

    @property
    def rebalance_drain_bound_s(self) -> float:
        """How long a rebalance waits for in-flight work (within the group's rebalance
        timeout, which is the shutdown timeout)."""
        return min(self._settings.rebalance_drain_timeout_s, self._settings.shutdown_timeout_s)

    # -- lifecycle ---------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> bool:
        """Process until ``stop`` is set, then drain; True when the drain finished in time.

        Raises BrokerUnavailableError or DeliveryError when the session must be restarted
        (nothing is committed past a record that was not acknowledged).
        """
        stages = [
            asyncio.create_task(self._fetch_stage(), name="fetch"),
            asyncio.create_task(self._classify_stage(), name="classify"),
            asyncio.create_task(self._send_stage(), name="send"),
            asyncio.create_task(self._ack_stage(), name="ack"),
            asyncio.create_task(self._watch_broker(), name="watch-broker"),
            asyncio.create_task(self._watchdog(), name="watchdog"),
        ]
        self._metrics.oldest_batch_age.set_function(self._oldest_batch_age)
        if self._half_open:
            self._metrics.breaker_state.set(BREAKER_HALF_OPEN)
        for stage in stages:
            stage.add_done_callback(self._on_stage_done)
        stopping = asyncio.create_task(stop.wait())
        try:
            await _wait_any(stopping, self._failure)
            if self._failure.done():
                self._failure.result()  # raises the stage's error
            self._fetching = False
            logger.info(
                "stopping: draining in-flight batches",
                extra={"in_flight_records": self._tracker.in_flight_records},
            )
            drained = asyncio.create_task(self.drain())
            await _wait_any(drained, self._failure, within_s=self._settings.shutdown_timeout_s)
            if self._failure.done():
                self._failure.result()
            if not drained.done():
                drained.cancel()
                logger.error(
                    "drain did not finish in time; uncommitted records will be reprocessed",
                    extra={
                        "in_flight_records": self._tracker.in_flight_records,
                        "timeout_s": self._settings.shutdown_timeout_s,
                    },
                )
                return False
            logger.info("drained: every fetched record is published and committed")
            return True
        finally:
            await _cancel_all([*stages, stopping])
            if not self._failure.done():
                self._failure.cancel()
            self._metrics.in_flight_records.set(0)
            self._metrics.in_flight_bytes.set(0)
            self._metrics.oldest_batch_age.set_function(lambda: 0.0)
            self._health.stuck = None
            # This session's lag series would otherwise linger beside the next session's.
            for labels in self._lag_series:
                with contextlib.suppress(KeyError):
                    self._metrics.consumer_lag.remove(*labels)
            self._lag_series.clear()

    def _on_stage_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or self._failure.done():
            return
        error = task.exception()
        if error is None:
            error = RuntimeError(f"pipeline stage {task.get_name()} ended unexpectedly")
        self._failure.set_exception(error)

    # -- the four stages ---------------------------------------------------------------

    async def _fetch_stage(self) -> None:
        while True:
            await self._slots.acquire()
            while self._in_flight_bytes >= self._settings.max_in_flight_bytes:
                self._bytes_freed.clear()
                await self._bytes_freed.wait()
            if not self._fetching:
                self._slots.release()
                await asyncio.Event().wait()  # parked until cancelled
            try:
                await self._bounds.before_fetch()
                fetched = await self._consumer.getmany(
                    timeout_ms=self._settings.batch_max_wait_ms,
                    max_records=self._settings.batch_size,
                )
            except KafkaError as error:
                self._slots.release()
                raise BrokerUnavailableError(f"fetch failed: {error!r}") from error
            fetched = self._delivery.admit(self._bounds.admit(fetched))
            records = [record for batch in fetched.values() for record in batch]
            if not records or not self._fetching:
                # Records fetched after stop was asked are not processed: nothing is
                # committed for them, so the next owner of the partition gets them.
                self._slots.release()
                continue
            # No await from here to the queue: a rebalance's drain sees this batch.
            batch = _Batch(
                id=next(self._ids),
                records=records,
                next_offsets={tp: batch[-1].offset + 1 for tp, batch in fetched.items() if batch},
                nbytes=sum(len(r.key or b"") + len(r.value or b"") for r in records),
                started=time.monotonic(),
            )
            self._tracker.add(batch.id, batch.next_offsets, len(records))
            self._started[batch.id] = batch.started
            self._in_flight_bytes += batch.nbytes
            self._metrics.in_flight_bytes.set(self._in_flight_bytes)
            self._idle.clear()
            self._next_fetch.update(batch.next_offsets)
            self._metrics.records_consumed.inc(len(records))
            self._metrics.batch_size.observe(len(records))
            self._metrics.in_flight_records.set(self._tracker.in_flight_records)
            self._to_classify.put_nowait(batch)

    async def _classify_stage(self) -> None:
        while True:
            batch = await self._to_classify.get()
            try:
                if self._framing is not None:
                    batch.result = await self._framing.classify(batch.records, self._classifier)
                else:
                    batch.result = await self._classifier.classify(batch.records)
            except WorkerUnstableError as error:
                await self._trip("worker", str(error))
            self._observe_classification(batch.result)
            self._to_send.put_nowait(batch)

    async def _send_stage(self) -> None:
        while True:
            batch = await self._to_send.get()
            if batch.result is None:
                raise RuntimeError(f"batch {batch.id} reached the send stage unclassified")
            if self._check_breaker(batch.result.outgoing):
                share = self._breaker.failure_share
                await self._trip(
                    "classification_errors",
                    f"{share:.0%} of the last {self._breaker.outcomes} articles failed in the"
                    f" model (threshold {self._settings.breaker_threshold:.0%})",
                )
            outgoing = self._publisher.fit(batch.result.outgoing, batch.sources())
            outgoing = self._bounds.rewrite(outgoing, batch.sources())
            outgoing = self._traces.stamp(
                outgoing, started_s=batch.started, topic=self._settings.input_topic
            )
            batch.result.outgoing = outgoing
            batch.acknowledge = await self._delivery.send(
                outgoing, batch.next_offsets, batch.sources()
            )
            self._to_ack.put_nowait(batch)

    async def _ack_stage(self) -> None:
        while True:
            batch = await self._to_ack.get()
            if batch.acknowledge is None:
                raise RuntimeError(f"batch {batch.id} reached the ack stage unsent")
            delivery = await batch.acknowledge()
            self._observe_published(delivery)
            completed = self._tracker.complete(batch.id)
            if self._delivery.commits_offsets:  # else committed in its transactions
                self._uncommitted.update(completed)
                await self._commit()
            # Delivered and committed: whatever the broker refused before is allowed now.
            self._health.access_denied = None
            self._slots.release()
            self._started.pop(batch.id, None)
            self._timed_out.discard(batch.id)
            self._in_flight_bytes -= batch.nbytes
            self._bytes_freed.set()
            self._metrics.in_flight_bytes.set(self._in_flight_bytes)
            self._metrics.in_flight_records.set(self._tracker.in_flight_records)
            if self._tracker.in_flight_batches == 0:
                self._idle.set()
            self._to_ack.task_done()

    def _fail(self, error: BaseException) -> None:
        if not self._failure.done():
            self._failure.set_exception(error)

    # -- the circuit breaker -----------------------------------------------------------

    def _check_breaker(self, outgoing: Sequence[Outgoing]) -> bool:
        """Feed the model's outcomes (classified or classification_error) to the breaker;
        True when it trips. Half-open (re-testing after a trip), the first batch with
        outcomes decides alone: it trips the breaker again or closes it."""
        failed = DeadLetterReason.CLASSIFICATION_ERROR
        outcomes = [item.reason is failed for item in outgoing if item.reason in (None, failed)]
        if not outcomes:
            return False
        tripped = self._breaker.record(outcomes)
        if not self._half_open:
            return tripped
        if sum(outcomes) / len(outcomes) >= self._settings.breaker_threshold:
            return True
        self._half_open = False
        self._breaker.reset()
        self._metrics.breaker_state.set(BREAKER_CLOSED)
        logger.info("circuit breaker closed: the model works again")
        if self._on_breaker_closed is not None:
            self._on_breaker_closed()
        return False

    async def _trip(self, cause: str, reason: str) -> NoReturn:
        """Publish nothing more; let the batches already sent be committed; end the session."""
        self._fetching = False
        self._metrics.breaker_trips.labels(cause).inc()
        self._metrics.breaker_state.set(BREAKER_OPEN)
        self._health.breaker_open = f"{cause}: {reason}"
        logger.error(
            "circuit breaker open: this batch is not published; the session backs off",
            extra={"cause": cause, "detail": reason},
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._to_ack.join(), self._settings.shutdown_timeout_s)
        raise BreakerOpenError(f"{cause}: {reason}")

    # -- the watchdog ------------------------------------------------------------------

    def _oldest_batch_age(self) -> float:
        if not self._started:
            return 0.0
        return max(0.0, time.monotonic() - min(self._started.values()))

    async def _watchdog(self) -> None:
        """Flag ``/healthz`` while a batch is in flight past its time bound; end the session
        when the group join has not completed within its bound."""
        bound = self._settings.batch_timeout_s
        while True:
            await asyncio.sleep(min(1.0, bound / 4))
            now = time.monotonic()
            joining_since = self._joining_since
            if (
                joining_since is not None
                and now - joining_since > self._settings.group_join_bound_s
            ):
                self._fail(
                    GroupJoinStuckError(now - joining_since, self._settings.group_join_bound_s)
                )
            late = {bid for bid, started in self._started.items() if now - started > bound}
            for batch_id in sorted(late - self._timed_out):
                self._metrics.batch_timeouts.inc()
                logger.error(
                    "batch in flight past its time bound; /healthz reports unhealthy",
                    extra={
                        "batch": batch_id,
                        "age_s": round(now - self._started[batch_id], 1),
                        "batch_timeout_s": bound,
                        "in_flight_records": self._tracker.in_flight_records,
                    },
                )
            self._timed_out = late
            if late:
                self._health.stuck = (
                    f"{len(late)} batch(es) in flight for more than {bound:g} s"
                    f" (oldest {self._oldest_batch_age():.0f} s)"
                )
            elif self._health.stuck is not None:
                logger.info("in-flight batches are within their time bound again")
                self._health.stuck = None

    # -- helpers -----------------------------------------------------------------------

    async def _commit(self) -> None:
        if not self._uncommitted:
            return
        assigned = self._consumer.assignment()
        offsets = {tp: offset for tp, offset in self._uncommitted.items() if tp in assigned}
        lost = set(self._uncommitted) - set(offsets)
        if lost:
            logger.warning(
                "partitions no longer assigned; their last offsets are not committed here",
                extra={"partitions": sorted(f"{tp.topic}:{tp.partition}" for tp in lost)},
            )
        try:
            if offsets:
                await self._bounds.commit(self._consumer, offsets)
        except (CommitFailedError, IllegalStateError) as error:
            # The group moved on: the new owner restarts from the last commit (duplicates,
            # never a gap).
            self._metrics.commit_failures.inc()
            logger.warning("offset commit refused by the group", extra={"error": repr(error)})
        except KafkaError as error:
            # Counted in broker_errors_total once, by the session loop.
            self._metrics.commit_failures.inc()
            raise BrokerUnavailableError(f"commit failed: {error!r}") from error
        self._uncommitted.clear()

    async def _watch_broker(self) -> None:
        """Every ``broker_check_interval_s``: the end offsets of the assigned partitions (or of
        the input topic's partition 0 while none is): one cheap, targeted request per leader
        that proves the broker answers and gives the lag."""
        interval = self._settings.broker_check_interval_s
        while True:
            assigned = self._consumer.assignment()
            probed = list(assigned) or [TopicPartition(self._settings.input_topic, 0)]
            try:
                ends = await asyncio.wait_for(
                    self._consumer.end_offsets(probed), max(_PROBE_TIMEOUT_S, interval)
                )
            except (KafkaError, TimeoutError) as error:
                detail = repr(error)
                if isinstance(error, TimeoutError):
                    # end_offsets waits for ever for a partition that does not exist
                    detail = f"no end offsets for {_names(probed)} in time (do they exist?)"
                if self._health.broker_reachable:
                    logger.warning("broker unreachable", extra={"error": detail})
                    self._metrics.broker_errors.inc()
                self._health.broker_reachable = False
                self._health.broker_error = detail
            else:
                if not self._health.broker_reachable:
                    logger.info("broker reachable again")
                self._health.broker_reachable = True
                self._health.broker_error = None
                await self._update_lag({tp: end for tp, end in ends.items() if tp in assigned})
            await asyncio.sleep(interval)

    async def _update_lag(self, ends: dict[TopicPartition, int]) -> None:
        for tp, end in ends.items():
            position = self._next_fetch.get(tp)
            if position is None:
                # Nothing fetched from it since it was assigned (an idle or caught-up
                # partition): its position is the committed offset the consumer resumed at.
                position = await self._resume_position(tp)
            if end is None or position is None:
                continue
            # Some brokers (tansu) answer ListOffsets with the last batch's base offset + 1;
            # the high watermark of the last fetch is never behind the real end.
            latest = max(end, self._consumer.highwater(tp) or 0)
            labels = (tp.topic, str(tp.partition))
            self._metrics.consumer_lag.labels(*labels).set(max(0, latest - position))
            self._lag_series.add(labels)

    async def _resume_position(self, tp: TopicPartition) -> int | None:
        """The consumer's position in a partition it has not fetched from, or None while
        it is not known (the partition was revoked, or the position is still being reset)."""
        try:
            position: int = await asyncio.wait_for(self._consumer.position(tp), _PROBE_TIMEOUT_S)
        except (KafkaError, IllegalStateError, TimeoutError):
            return None
        return position

    def _observe_classification(self, result: BatchResult) -> None:
        for observer in self._observers:
            observer.on_classified(result)

    def _observe_published(self, delivery: Delivery) -> None:
        for observer in self._observers:
            observer.on_published(delivery)

    def _on_revoked(self) -> None:
        self._joining_since = time.monotonic()

    def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        self._joining_since = None
        self._health.assignment = Assignment.ASSIGNED if assigned else Assignment.WAITING
        assigned_labels = {(tp.topic, str(tp.partition)) for tp in assigned}
        for tp in list(self._next_fetch):
            if tp not in assigned:
                del self._next_fetch[tp]
        for labels in [labels for labels in self._lag_series if labels not in assigned_labels]:
            self._lag_series.discard(labels)
            with contextlib.suppress(KeyError):
                self._metrics.consumer_lag.remove(*labels)
        logger.info(
            "partitions assigned",
            extra={"partitions": sorted(f"{tp.topic}:{tp.partition}" for tp in assigned)},
        )


def _names(partitions: Sequence[TopicPartition]) -> str:
    return ", ".join(sorted(f"{tp.topic}:{tp.partition}" for tp in partitions))


async def _cancel_all(tasks: Sequence[asyncio.Task[Any]]) -> None:
    """Cancel ``tasks`` and wait for them, cancelling again a task that swallowed the
    cancellation (Python 3.11's ``wait_for`` returns the inner result when it completed
    just as the cancellation came, so a stage would go on running and the session hang)."""
    pending = set(tasks)
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=1.0)
    for task in tasks:
        if not task.cancelled():
            task.exception()  # retrieved: a stage's error was handled through _failure


async def _wait_any(*futures: asyncio.Future[Any], within_s: float | None = None) -> None:
    await asyncio.wait(futures, timeout=within_s, return_when=asyncio.FIRST_COMPLETED)


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    """Finish and commit revoked partitions' in-flight work before they are released."""

    def __init__(self, pipeline: Pipeline) -> None:
        self._pipeline = pipeline

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self._pipeline._on_revoked()
        if not revoked:
            return
        started = time.monotonic()
        # Every in-flight batch is drained, not only the revoked partitions': simpler, and
        # a rebalance is rare. The fetch stage is blocked by the rebalance meanwhile.
        # Bounded: past it the partitions are released with their work still in flight
        # (its commits are skipped, the next owner re-processes: duplicates, never a gap).
        bound = self._pipeline.rebalance_drain_bound_s
        drained = asyncio.ensure_future(self._pipeline.drain())
        await _wait_any(drained, within_s=bound)
        await self._pipeline.delivery.revoked(revoked, drained.done())
        if not drained.done():
            drained.cancel()
            logger.warning(
                "rebalance drain did not finish in time; partitions released with"
                " uncommitted work (the next owner re-processes it)",
                extra={
                    "partitions": sorted(f"{tp.topic}:{tp.partition}" for tp in revoked),
                    "timeout_s": bound,
                },
            )
            return
        logger.info(
            "partitions revoked after drain",
            extra={
                "partitions": sorted(f"{tp.topic}:{tp.partition}" for tp in revoked),
                "drain_s": round(time.monotonic() - started, 3),
            },
        )

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self._pipeline.delivery.assigned(assigned)
        self._pipeline._on_assigned(assigned)
