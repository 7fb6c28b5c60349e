"""One consumer-group session: fetch -> classify -> send -> acknowledge and commit.

Four stages, each one task, joined by queues, so the CPU never waits on the network:
batch N+2 is fetched while N+1 is classified in the worker thread while N's sends are
awaited. A semaphore of ``max_in_flight_batches`` slots is taken before each fetch and
given back after that batch's commit, so memory is bounded whatever the lag.

Batches flow through every stage in fetch order and the producer keeps per-partition
order, so outputs keep the input order per partition (hence per key). An offset is
committed only after every output and dead letter up to it is acknowledged (acks=all).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import (
    CommitFailedError,
    IllegalStateError,
    KafkaError,
)

from service.classify import BatchResult, Outgoing
from service.errors import BrokerUnavailableError, DeliveryError
from service.health import Assignment, Health
from service.metrics import ServiceMetrics
from service.offsets import OffsetTracker
from service.publish import BatchPublisher
from service.settings import ServiceSettings
from service.workers import BatchClassifier

logger = logging.getLogger(__name__)


@dataclass
class _Batch:
    id: int
    records: list[Any]  # aiokafka ConsumerRecord
    next_offsets: dict[TopicPartition, int]
    result: BatchResult | None = None
    acks: list[asyncio.Future[Any]] | None = None


class Pipeline:
    """Runs the four stages for one consumer/producer pair until stopped or broken."""

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        classifier: BatchClassifier,
        *,
        settings: ServiceSettings,
        metrics: ServiceMetrics,
        health: Health,
    ) -> None:
        self._consumer = consumer
        self._producer = producer
        self._classifier = classifier
        self._settings = settings
        self._metrics = metrics
        self._health = health
        self._tracker = OffsetTracker()
        self._publisher = BatchPublisher(producer)
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

    # -- the rebalance listener's view -------------------------------------------------

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
        ]
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
            for task in [*stages, stopping]:
                task.cancel()
            await asyncio.gather(*stages, stopping, return_exceptions=True)
            if not self._failure.done():
                self._failure.cancel()
            self._metrics.in_flight_records.set(0)

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
            if not self._fetching:
                self._slots.release()
                await asyncio.Event().wait()  # parked until cancelled
            try:
                fetched = await self._consumer.getmany(
                    timeout_ms=self._settings.batch_max_wait_ms,
                    max_records=self._settings.batch_size,
                )
            except KafkaError as error:
                self._slots.release()
                raise BrokerUnavailableError(f"fetch failed: {error!r}") from error
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
            )
            self._tracker.add(batch.id, batch.next_offsets, len(records))
            self._idle.clear()
            self._next_fetch.update(batch.next_offsets)
            self._metrics.records_consumed.inc(len(records))
            self._metrics.batch_size.observe(len(records))
            self._metrics.in_flight_records.set(self._tracker.in_flight_records)
            self._to_classify.put_nowait(batch)

    async def _classify_stage(self) -> None:
        while True:
            batch = await self._to_classify.get()
            batch.result = await self._classifier.classify(batch.records)
            self._observe_classification(batch.result)
            self._to_send.put_nowait(batch)

    async def _send_stage(self) -> None:
        while True:
            batch = await self._to_send.get()
            assert batch.result is not None
            batch.acks = await self._publisher.publish(batch.result.outgoing)
            self._to_ack.put_nowait(batch)

    async def _ack_stage(self) -> None:
        while True:
            batch = await self._to_ack.get()
            assert batch.result is not None
            assert batch.acks is not None
            try:
                await asyncio.gather(*batch.acks)
            except KafkaError as error:
                self._metrics.broker_errors.inc()
                raise DeliveryError(f"a record was not acknowledged: {error!r}") from error
            self._observe_published(batch.result.outgoing)
            self._uncommitted.update(self._tracker.complete(batch.id))
            await self._commit()
            self._slots.release()
            self._metrics.in_flight_records.set(self._tracker.in_flight_records)
            if self._tracker.in_flight_batches == 0:
                self._idle.set()

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
                await self._consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as error:
            # The group moved on: the new owner restarts from the last commit (duplicates,
            # never a gap).
            self._metrics.commit_failures.inc()
            logger.warning("offset commit refused by the group", extra={"error": repr(error)})
        except KafkaError as error:
            self._metrics.commit_failures.inc()
            self._metrics.broker_errors.inc()
            raise BrokerUnavailableError(f"commit failed: {error!r}") from error
        self._uncommitted.clear()

    async def _watch_broker(self) -> None:
        """Every few seconds: is the broker answering, and how far behind are we?"""
        while True:
            try:
                await asyncio.wait_for(self._consumer.topics(), timeout=5.0)
            except (KafkaError, TimeoutError) as error:
                if self._health.broker_reachable:
                    logger.warning("broker unreachable", extra={"error": repr(error)})
                    self._metrics.broker_errors.inc()
                self._health.broker_reachable = False
                self._health.broker_error = repr(error)
            else:
                if not self._health.broker_reachable:
                    logger.info("broker reachable again")
                self._health.broker_reachable = True
                self._health.broker_error = None
                self._update_lag()
            await asyncio.sleep(2.0)

    def _update_lag(self) -> None:
        for tp in self._consumer.assignment():
            highwater = self._consumer.highwater(tp)
            position = self._next_fetch.get(tp)
            if highwater is not None and position is not None:
                self._metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(
                    max(0, highwater - position)
                )

    def _observe_classification(self, result: BatchResult) -> None:
        metrics = self._metrics
        metrics.classification_duration.observe(result.duration_s)
        metrics.articles_classified.inc(len(result.verdicts))
        threshold = self._settings.low_confidence_threshold
        sections: Counter[str] = Counter()
        low = 0
        for verdict in result.verdicts:
            sections[verdict.section or "none"] += 1
            metrics.tags_per_article.observe(verdict.tag_count)
            low += verdict.section_score is not None and verdict.section_score < threshold
        for label, count in sections.items():
            metrics.predictions.labels(label).inc(count)
        if low:
            metrics.low_confidence.inc(low)

    def _observe_published(self, outgoing: Sequence[Outgoing]) -> None:
        now_ms = time.time() * 1000
        published = 0
        reasons: Counter[str] = Counter()
        for item in outgoing:
            if item.reason is None:
                published += 1
                latency = (now_ms - item.source_timestamp_ms) / 1000
                self._metrics.end_to_end_latency.observe(max(0.0, latency))
            else:
                reasons[item.reason.value] += 1
        self._metrics.articles_published.inc(published)
        for reason, count in reasons.items():
            self._metrics.dead_letters.labels(reason).inc(count)

    def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        self._health.assignment = Assignment.ASSIGNED if assigned else Assignment.WAITING
        for tp in list(self._next_fetch):
            if tp not in assigned:
                del self._next_fetch[tp]
                with contextlib.suppress(KeyError):
                    self._metrics.consumer_lag.remove(tp.topic, str(tp.partition))
        logger.info(
            "partitions assigned",
            extra={"partitions": sorted(f"{tp.topic}:{tp.partition}" for tp in assigned)},
        )


async def _wait_any(*futures: asyncio.Future[Any], within_s: float | None = None) -> None:
    await asyncio.wait(futures, timeout=within_s, return_when=asyncio.FIRST_COMPLETED)


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    """Finish and commit revoked partitions' in-flight work before they are released."""

    def __init__(self, pipeline: Pipeline) -> None:
        self._pipeline = pipeline

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        if not revoked:
            return
        started = time.monotonic()
        # Every in-flight batch is drained, not only the revoked partitions': simpler, and
        # a rebalance is rare. The fetch stage is blocked by the rebalance meanwhile.
        await self._pipeline.drain()
        logger.info(
            "partitions revoked after drain",
            extra={
                "partitions": sorted(f"{tp.topic}:{tp.partition}" for tp in revoked),
                "drain_s": round(time.monotonic() - started, 3),
            },
        )

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._pipeline._on_assigned(assigned)
