"""How a batch reaches the broker, as one interface the pipeline calls: at least once
(publish, await the acknowledgements, then commit the offsets) or exactly once (each input
partition's outputs, dead letters and next offset in one Kafka transaction).

The pipeline fetches, classifies and fits the records; a ``DeliveryMode`` decides which
fetched records may be processed (``admit``), sends a batch (``send``, which returns what
the acknowledgement stage awaits), says whether the pipeline still has offsets to commit
afterwards (``commits_offsets``), and follows the group's rebalances (``assigned``,
``revoked``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from service.core.errors import BrokerUnavailableError, DeliveryError
from service.core.records import Delivery, InputRecord, Outgoing
from service.kafka.publish import BatchPublisher, SourceKey
from service.kafka.transactions import PartitionTransactions

#: What the acknowledgement stage awaits for one batch.
Acknowledgement = Callable[[], Awaitable[Delivery]]


class DeliveryMode(Protocol):
    """One way of delivering batches (module docstring)."""

    #: True when the pipeline commits the offsets once a batch is acknowledged.
    commits_offsets: bool

    def admit(self, fetched: dict[TopicPartition, list[Any]]) -> dict[TopicPartition, list[Any]]:
        """The fetched records that may be processed."""
        ...

    async def send(
        self,
        outgoing: Sequence[Outgoing],
        next_offsets: Mapping[TopicPartition, int],
        sources: Mapping[SourceKey, InputRecord],
    ) -> Acknowledgement:
        """Send one batch; the result awaits its delivery."""
        ...

    async def assigned(self, assigned: set[TopicPartition]) -> None:
        """The group gave this member ``assigned``."""
        ...

    async def revoked(self, revoked: set[TopicPartition], drained: bool) -> None:
        """The group took ``revoked`` back (``drained``: their work is finished)."""
        ...


class AtLeastOnce:
    """Publish, await the acknowledgements, then the pipeline commits the offsets."""

    commits_offsets = True

    def __init__(self, publisher: BatchPublisher) -> None:
        self._publisher = publisher

    def admit(self, fetched: dict[TopicPartition, list[Any]]) -> dict[TopicPartition, list[Any]]:
        """Every fetched record."""
        return fetched

    async def send(
        self,
        outgoing: Sequence[Outgoing],
        next_offsets: Mapping[TopicPartition, int],
        sources: Mapping[SourceKey, InputRecord],
    ) -> Acknowledgement:
        """Queue the records; the acknowledgement isolates refused ones (publish module)."""
        sent = await self._publisher.publish(outgoing)
        return lambda: self._publisher.confirm(sent, sources)

    async def assigned(self, assigned: set[TopicPartition]) -> None:
        """Nothing to set up."""

    async def revoked(self, revoked: set[TopicPartition], drained: bool) -> None:
        """Nothing to release."""


class ExactlyOnce:
    """One transaction per input partition of a batch, its offsets committed inside it."""

    commits_offsets = False

    def __init__(
        self,
        transactions: PartitionTransactions,
        consumer: AIOKafkaConsumer,
        *,
        input_topic: str,
        fail: Callable[[BaseException], None],
    ) -> None:
        self._transactions = transactions
        self._consumer = consumer
        self._input_topic = input_topic
        self._fail = fail
        # Per partition, the committed offset read after fencing its producer.
        self._fenced_from: dict[TopicPartition, int] = {}

    def admit(self, fetched: dict[TopicPartition, list[Any]]) -> dict[TopicPartition, list[Any]]:
        """The records of partitions whose producer is started, from the committed offset
        read after that; the rest were fetched from a position that may be stale (the
        partition is sought again when its producer is ready)."""
        kept: dict[TopicPartition, list[Any]] = {}
        for tp, records in fetched.items():
            start = self._fenced_from.get(tp)
            if start is None:
                continue
            fresh = [record for record in records if record.offset >= start]
            if fresh:
                kept[tp] = fresh
        return kept

    async def send(
        self,
        outgoing: Sequence[Outgoing],
        next_offsets: Mapping[TopicPartition, int],
        sources: Mapping[SourceKey, InputRecord],
    ) -> Acknowledgement:
        """Commit the batch: one transaction per input partition, side by side."""
        by_partition: dict[TopicPartition, list[Outgoing]] = {tp: [] for tp in next_offsets}
        for item in outgoing:
            by_partition[TopicPartition(self._input_topic, item.source_partition)].append(item)
        results = await asyncio.gather(
            *(
                self._transactions.commit(tp, items, next_offsets[tp], sources)
                for tp, items in by_partition.items()
            ),
            return_exceptions=True,
        )
        delivery = Delivery()
        for result in results:
            if isinstance(result, BaseException):
                raise result
            delivery.delivered.extend(result.delivered)
            delivery.rejected += result.rejected
            delivery.values_dropped += result.values_dropped
            delivery.given_up += result.given_up

        async def committed() -> Delivery:
            return delivery

        return committed

    async def assigned(self, assigned: set[TopicPartition]) -> None:
        """Start the new partitions' producers (fencing their previous owners), then read
        their committed offsets and seek there; a failure ends the session."""
        new = [tp for tp in assigned if tp not in self._transactions.ready]
        try:
            await self._transactions.assign(new)
            committed = await asyncio.gather(*(self._consumer.committed(tp) for tp in new))
            unset = [tp for tp, offset in zip(new, committed, strict=True) if offset is None]
            # auto_offset_reset=earliest for a partition without a committed offset
            beginnings = await self._consumer.beginning_offsets(unset) if unset else {}
        except (KafkaError, DeliveryError) as error:
            failure = BrokerUnavailableError(f"exactly-once assignment failed: {error!r}")
            failure.__cause__ = error  # a refused transactional id is named from the cause
            self._fail(failure)
            return
        # Records fetched before this point were dropped (``admit``): fetch again. No await
        # from the seeks to the gate opening: the fetch stage sees both or neither.
        for tp, offset in zip(new, committed, strict=True):
            start = beginnings[tp] if offset is None else offset
            self._consumer.seek(tp, start)
            self._fenced_from[tp] = start

    async def revoked(self, revoked: set[TopicPartition], drained: bool) -> None:
        """Close revoked partitions' producers; with work still in flight, end the session
        (its transactions are aborted when the next owner fences them)."""
        for tp in revoked:
            self._fenced_from.pop(tp, None)
        if not drained:
            self._fail(DeliveryError("partitions revoked with transactions still in flight"))
            return
        await self._transactions.release(revoked)
