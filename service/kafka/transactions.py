"""Exactly-once: one transactional producer per assigned input partition.

Each batch's outputs, dead letters and next offset of one input partition are committed in
one Kafka transaction (begin, produce, ``send_offsets_to_transaction``, commit). A
read_committed consumer downstream sees a batch's records once its offsets are committed,
and never the records of an aborted transaction.

Fencing. aiokafka 0.14 commits offsets in a transaction with TxnOffsetCommit version 0,
which carries no consumer-group generation (KIP-447 group-metadata fencing needs version 3),
and the broker accepts such a commit from any producer. So a zombie, an instance that lost
its partitions without noticing, cannot be fenced by the group; it is fenced by the
transactional id instead: the producer of input partition P has the id
``<prefix>-<topic>-<P>`` on every instance, and P's next owner starts (InitProducerId) that
producer before it reads P's committed offset. That bumps the id's epoch, which makes
every later request of the old producer fail (ProducerFenced), and completes the old
producer's open transaction first: aborted if it was still open, its markers written if
it was committing. Only then is the committed offset read and the partition sought to it.
The cost: one producer (connection, coordinator lookup, InitProducerId) per assigned input
partition, set up at each assignment.

Refusals. A record the broker refuses for what it is would leave a gap in the producer's
sequence numbers, so the transaction is aborted and the producer started afresh (the same
id: its epoch is bumped). Each record of the refused producer batches is then sent alone
in a probe transaction that is always aborted (read_committed consumers never see it);
records refused alone are replaced by their dead letters, and the whole partition's part of
the batch is sent again in a new transaction. Any other failure aborts the transaction and
raises DeliveryError: the session restarts from the last committed offsets.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError, ProducerFenced

from service.config.commands import ServeSettings
from service.core.errors import DeliveryError
from service.core.records import Delivery, InputRecord, Outgoing
from service.kafka.clients import make_transactional_producer
from service.kafka.publish import REFUSALS, BatchPublisher, SourceKey
from service.observe.metrics import ServiceMetrics

logger = logging.getLogger(__name__)

#: Bound on closing a producer and on aborting a transaction.
_CLOSE_TIMEOUT_S = 10.0
#: Bound on starting a partition's producer (its InitProducerId fences the previous owner).
_START_TIMEOUT_S = 60.0
#: Rounds of refusal isolation before a batch is given up to a session restart.
_MAX_ROUNDS = 3


class _Partition:
    """One input partition's transactional producer and its publisher."""

    def __init__(self, settings: ServeSettings, tp: TopicPartition, limits: Mapping[str, int]):
        self.tp = tp
        self.producer: Any = make_transactional_producer(settings, tp.topic, tp.partition)
        self.publisher = BatchPublisher(
            self.producer, limits=limits, dead_letter_topic=settings.dead_letter_topic
        )


class PartitionTransactions:
    """The transactional producers of the assigned input partitions."""

    def __init__(
        self, settings: ServeSettings, metrics: ServiceMetrics, limits: Mapping[str, int]
    ) -> None:
        self._settings = settings
        self._metrics = metrics
        self._limits = dict(limits)
        self._partitions: dict[TopicPartition, _Partition] = {}

    @property
    def ready(self) -> set[TopicPartition]:
        """Partitions whose producer is started (so their previous owner is fenced)."""
        return set(self._partitions)

    async def assign(self, assigned: Iterable[TopicPartition]) -> None:
        """Start (and so fence) a producer for each newly assigned partition."""
        new = [tp for tp in assigned if tp not in self._partitions]
        started = await asyncio.gather(*(self._start(tp) for tp in new), return_exceptions=True)
        failure: BaseException | None = None
        for tp, result in zip(new, started, strict=True):
            if isinstance(result, BaseException):
                failure = failure or result
            else:
                self._partitions[tp] = result
        if failure is not None:
            detail = "timed out" if isinstance(failure, TimeoutError) else repr(failure)
            # Chained: a refused transactional id is named from the cause.
            raise DeliveryError(f"a transactional producer did not start: {detail}") from failure
        if new:
            logger.info(
                "transactional producers started; earlier owners fenced",
                extra={"partitions": sorted(f"{tp.topic}:{tp.partition}" for tp in new)},
            )

    async def release(self, revoked: Iterable[TopicPartition]) -> None:
        """Close the producers of partitions no longer assigned."""
        gone = [self._partitions.pop(tp) for tp in revoked if tp in self._partitions]
        await asyncio.gather(*(_close(part.producer) for part in gone))

    async def close(self) -> None:
        """Close every producer (an open transaction is aborted by the broker, at the latest
        when the partition's next owner starts its producer)."""
        await self.release(list(self._partitions))

    async def _start(self, tp: TopicPartition) -> _Partition:
        part = _Partition(self._settings, tp, self._limits)
        try:
            # InitProducerId waits while the previous owner's transaction is completed; the
            # coordinator aborts an open one at once, so only a broker in trouble takes long.
            await asyncio.wait_for(part.producer.start(), _START_TIMEOUT_S)
        except BaseException:
            await _close(part.producer)
            raise
        return part

    async def _restart(self, tp: TopicPartition) -> _Partition:
        old = self._partitions.pop(tp)
        await _close(old.producer)
        part = await self._start(tp)
        self._partitions[tp] = part
        return part

    # -- one partition's part of a batch -------------------------------------------------

    async def commit(
        self,
        tp: TopicPartition,
        outgoing: Sequence[Outgoing],
        next_offset: int,
        sources: Mapping[SourceKey, InputRecord],
    ) -> Delivery:
        """Produce ``outgoing`` and commit ``next_offset`` for ``tp`` in one transaction.

        Raises DeliveryError when the transaction could not be committed (it is aborted, or
        fenced): nothing of it is visible to read_committed consumers.
        """
        part = self._partitions.get(tp)
        if part is None:
            raise DeliveryError(f"no transactional producer for {tp.topic}:{tp.partition}")
        items = list(outgoing)
        delivery = Delivery()
        for _ in range(_MAX_ROUNDS):
            refused = await self._attempt(part, items, next_offset)
            if not refused:
                delivery.delivered = items
                return delivery
            self._metrics.transactions_aborted.labels("refused").inc()
            part = await self._restart(tp)
            items = await self._isolate(tp, items, refused, sources, delivery)
            part = self._partitions[tp]
        self._metrics.transactions_aborted.labels("error").inc()
        raise DeliveryError(
            f"{tp.topic}:{tp.partition}: the broker kept refusing records of this batch"
        )

    async def _attempt(
        self, part: _Partition, items: list[Outgoing], next_offset: int
    ) -> list[int]:
        """One transaction; returns the positions in ``items`` of the records of refused
        producer batches (the transaction is then left to be aborted by the restart), or []
        once committed."""
        producer = part.producer
        try:
            await producer.begin_transaction()
            sent = await part.publisher.publish(items)
            results = await asyncio.gather(*(s.future for s in sent), return_exceptions=True)
            refused: list[int] = []
            for s, result in zip(sent, results, strict=True):
                if isinstance(result, REFUSALS):
                    refused.extend(s.positions)
                elif isinstance(result, BaseException):
                    raise result
            if refused:
                logger.warning(
                    "the broker refused records in a transaction; aborting and isolating them",
                    extra={"partition": part.tp.partition, "records": len(refused)},
                )
                return refused
            offsets = {part.tp: next_offset}
            await producer.send_offsets_to_transaction(offsets, self._settings.group_id)
            await producer.commit_transaction()
        except ProducerFenced as error:
            self._metrics.transactions_aborted.labels("fenced").inc()
            raise DeliveryError(
                f"{part.tp.topic}:{part.tp.partition}: producer fenced (another instance owns"
                f" the partition now): {error!r}"
            ) from error
        except (KafkaError, DeliveryError) as error:
            self._metrics.transactions_aborted.labels("error").inc()
            await _abort(producer)
            if isinstance(error, DeliveryError):
                raise
            raise DeliveryError(f"transaction failed: {error!r}") from error
        self._metrics.transactions_committed.inc()
        return []

    async def _isolate(
        self,
        tp: TopicPartition,
        items: list[Outgoing],
        suspects: list[int],
        sources: Mapping[SourceKey, InputRecord],
        delivery: Delivery,
    ) -> list[Outgoing]:
        """Send each suspect (a position in ``items``) alone in an aborted probe transaction;
        return ``items`` with
        the records refused alone replaced by their dead letters (or left out, given up)."""
        replaced: dict[int, Outgoing | None] = {}
        for at in sorted(set(suspects)):
            item = items[at]
            part = self._partitions[tp]
            error = await self._probe(part, item)
            if error is None:
                continue
            part = await self._restart(tp)  # a refused record leaves a sequence gap
            replacement = part.publisher.replacement(item, sources, error)
            replaced[at] = replacement
            if item.reason is None:
                delivery.rejected += 1
            elif replacement is None:
                delivery.given_up += 1
            else:
                delivery.values_dropped += 1
        out: list[Outgoing] = []
        for at, item in enumerate(items):
            if at not in replaced:
                out.append(item)
            elif (letter := replaced[at]) is not None:
                out.append(letter)
        return out

    async def _probe(self, part: _Partition, item: Outgoing) -> BaseException | None:
        """Whether the broker takes ``item`` alone: sent in a transaction that is aborted."""
        producer = part.producer
        try:
            await producer.begin_transaction()
            sent = await part.publisher.send_alone(item)
            result = (await asyncio.gather(sent.future, return_exceptions=True))[0]
        except KafkaError as error:
            raise DeliveryError(f"probe failed: {error!r}") from error
        if isinstance(result, BaseException) and not isinstance(result, REFUSALS):
            raise DeliveryError(f"probe failed: {result!r}") from result
        self._metrics.transactions_aborted.labels("refused").inc()
        if isinstance(result, BaseException):
            return result  # the caller restarts the producer, which aborts the probe
        await producer.abort_transaction()
        return None


async def _abort(producer: Any) -> None:
    """Abort the open transaction if the producer still can (bounded); a producer that
    cannot is closed by the session, and the partition's next producer aborts it."""
    with contextlib.suppress(Exception):
        await asyncio.wait_for(producer.abort_transaction(), _CLOSE_TIMEOUT_S)


async def _close(producer: Any) -> None:
    try:
        await asyncio.wait_for(producer.stop(), _CLOSE_TIMEOUT_S)
    except (TimeoutError, KafkaError) as error:
        logger.warning("transactional producer did not close cleanly", extra={"error": repr(error)})
