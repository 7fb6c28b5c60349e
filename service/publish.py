"""Outgoing records -> producer record batches, one future per batch rather than per record.

Records are grouped by (topic, partition) in their original order and appended to
aiokafka ``BatchBuilder``s; a partition's batches are queued in order, and the producer
keeps one request in flight per broker, so per-partition order holds. The partition of a
keyed record is the default (murmur2) partitioner's choice, as with ``producer.send``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, MessageSizeTooLargeError
from aiokafka.partitioner import DefaultPartitioner

from service.classify import Outgoing
from service.errors import DeliveryError

logger = logging.getLogger(__name__)


class BatchPublisher:
    """Queues outgoing records on a started producer; returns the futures to await."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self._producer = producer
        self._partitioner = DefaultPartitioner()
        self._partitions: dict[str, list[int]] = {}

    async def publish(self, outgoing: Sequence[Outgoing]) -> list[asyncio.Future[Any]]:
        """Queue every record, in order per partition; acknowledged when all futures are."""
        try:
            groups: dict[tuple[str, int], list[Outgoing]] = {}
            for item in outgoing:
                partition = await self._partition_for(item)
                groups.setdefault((item.topic, partition), []).append(item)
            futures: list[asyncio.Future[Any]] = []
            for (topic, partition), items in groups.items():
                futures.extend(await self._send_group(topic, partition, items))
        except KafkaError as error:
            raise DeliveryError(f"send failed: {error!r}") from error
        return futures

    async def _partition_for(self, item: Outgoing) -> int:
        partitions = self._partitions.get(item.topic)
        if partitions is None:
            partitions = sorted(await self._producer.partitions_for(item.topic))
            self._partitions[item.topic] = partitions
        partition: int = self._partitioner(item.key, partitions, partitions)
        return partition

    async def _send_group(
        self, topic: str, partition: int, items: list[Outgoing]
    ) -> list[asyncio.Future[Any]]:
        futures: list[asyncio.Future[Any]] = []
        builder = self._producer.create_batch()
        for item in items:
            appended = builder.append(
                timestamp=None, key=item.key, value=item.value, headers=item.headers
            )
            if appended is not None:
                continue
            if builder.record_count():
                futures.append(await self._producer.send_batch(builder, topic, partition=partition))
                builder = self._producer.create_batch()
                if builder.append(
                    timestamp=None, key=item.key, value=item.value, headers=item.headers
                ):
                    continue
            # Larger than a whole batch (an oversize dead letter): the ordinary path.
            futures.append(await self._send_single(topic, partition, item))
        if builder.record_count():
            futures.append(await self._producer.send_batch(builder, topic, partition=partition))
        return futures

    async def _send_single(self, topic: str, partition: int, item: Outgoing) -> asyncio.Future[Any]:
        try:
            future: asyncio.Future[Any] = await self._producer.send(
                topic, value=item.value, key=item.key, headers=item.headers, partition=partition
            )
        except MessageSizeTooLargeError:
            # Only a dead letter can be this large (outputs are bounded by max_event_bytes):
            # keep the decision and the coordinates, drop the value.
            size = len(item.value or b"")
            logger.error(  # noqa: TRY400 - a decision, not a crash
                "dead letter too large to forward; value dropped",
                extra={
                    "article_id": None,
                    "partition": item.source_partition,
                    "offset": item.source_offset,
                    "bytes": size,
                },
            )
            headers = [*item.headers, ("error.value_dropped", str(size).encode())]
            future = await self._producer.send(
                topic, value=None, key=item.key, headers=headers, partition=partition
            )
        return future
