"""Outgoing records -> producer record batches, one future per batch rather than per record.

Records are grouped by (topic, partition) in their original order and appended to
aiokafka ``BatchBuilder``s no larger than the topic's ``max.message.bytes``; a partition's
batches are queued in order, and the producer keeps one request in flight per broker, so
per-partition order holds. The partition of a keyed record is the default (murmur2)
partitioner's choice, as with ``producer.send``.

Refusals. Before producing, an output that cannot fit its topic's limit becomes an
``output_rejected`` dead letter (the input unchanged), and a dead letter that cannot fit
loses its value (header ``error.value_dropped``). A batch the broker still refuses for
what its records are (too large, invalid, bad timestamp; ``REFUSALS``) is retried one
record per batch; a record refused alone becomes an ``output_rejected`` dead letter (a
dead letter refused alone is forwarded without its value, and given up with an error log
if even that is refused), so a refusal never loops. So that the last copy of every record
stays in per-partition order, the records sent to that partition after the refused batch
are sent again after the retries (duplicates, never reordering). Any other error fails the
delivery (``DeliveryError``): the session restarts from the last commit.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    CorruptRecordException,
    InvalidTimestampError,
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    UnknownError,
)
from aiokafka.partitioner import DefaultPartitioner

from service.core.classify import dead_letter
from service.core.deadletter import VALUE_DROPPED_HEADER, DeadLetterReason
from service.core.errors import DeliveryError
from service.core.records import Delivery, InputRecord, Outgoing

logger = logging.getLogger(__name__)

#: A v2 record batch header (61 bytes) plus one record's varints and attributes, rounded up.
_BATCH_OVERHEAD_BYTES = 128
_BATCH_HEADER_BYTES = 61
_HEADER_OVERHEAD_BYTES = 10

#: Produce errors about the records themselves: retrying cannot help, isolating can.
#: UnknownError stands for INVALID_RECORD (87), which aiokafka 0.14 does not name.
REFUSALS = (
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    CorruptRecordException,
    InvalidTimestampError,
    UnknownError,
)

SourceKey = tuple[int, int]


def record_bytes(item: Outgoing) -> int:
    """What ``item`` costs against ``max.message.bytes`` when it is alone in a batch."""
    headers = sum(len(k) + len(v or b"") + _HEADER_OVERHEAD_BYTES for k, v in item.headers)
    return _BATCH_OVERHEAD_BYTES + len(item.key or b"") + len(item.value or b"") + headers


@dataclass(frozen=True, slots=True)
class Sent:
    """One producer batch queued: its future, where it went and what it held."""

    future: asyncio.Future[Any]
    topic: str
    partition: int
    items: list[Outgoing]
    seq: int
    #: Where each of ``items`` stood in the records given to ``publish``.
    positions: tuple[int, ...] = ()


class BatchPublisher:
    """Queues outgoing records on a started producer; ``confirm`` awaits them."""

    def __init__(
        self,
        producer: AIOKafkaProducer,
        *,
        limits: Mapping[str, int],
        dead_letter_topic: str,
    ) -> None:
        self._producer = producer
        self._limits = dict(limits)
        self._dead_letter_topic = dead_letter_topic
        self._partitioner = DefaultPartitioner()
        self._partitions: dict[str, list[int]] = {}
        self._seq = itertools.count()
        # (topic, partition) -> (first refused seq, seq when its records were re-sent):
        # batches sent in between are sent again after the re-sends.
        self._taint: dict[tuple[str, int], tuple[int, int]] = {}

    # -- before producing --------------------------------------------------------------

    def fit(
        self, outgoing: Sequence[Outgoing], sources: Mapping[SourceKey, InputRecord]
    ) -> list[Outgoing]:
        """The records to produce: outputs over their topic's limit become dead letters,
        and dead letters over theirs lose their value."""
        fitted: list[Outgoing] = []
        for item in outgoing:
            limit = self._limits.get(item.topic)
            fits = item.reason is not None or limit is None or record_bytes(item) <= limit
            if fits:
                fitted.append(self._without_value_if_too_large(item))
                continue
            message = (
                f"the classified event ({record_bytes(item)} bytes with its batch overhead)"
                f" exceeds max.message.bytes ({limit}) of topic {item.topic}"
            )
            fitted.append(self._without_value_if_too_large(self._rejected(item, sources, message)))
        return fitted

    def _rejected(
        self, item: Outgoing, sources: Mapping[SourceKey, InputRecord], message: str
    ) -> Outgoing:
        record = sources[(item.source_partition, item.source_offset)]
        return dead_letter(
            record, self._dead_letter_topic, DeadLetterReason.OUTPUT_REJECTED, message
        )

    def _without_value_if_too_large(self, item: Outgoing) -> Outgoing:
        limit = self._limits.get(item.topic)
        if item.reason is None or limit is None or record_bytes(item) <= limit:
            return item
        return _drop_value(item, f"over max.message.bytes ({limit}) of {item.topic}")

    # -- producing ---------------------------------------------------------------------

    async def publish(self, outgoing: Sequence[Outgoing]) -> list[Sent]:
        """Queue every record, in order per partition; ``confirm`` the result."""
        try:
            groups: dict[tuple[str, int], list[tuple[int, Outgoing]]] = {}
            for at, item in enumerate(outgoing):
                partition = await self._partition_for(item)
                groups.setdefault((item.topic, partition), []).append((at, item))
            sent: list[Sent] = []
            for (topic, partition), entries in groups.items():
                sent.extend(await self._send_group(topic, partition, entries))
        except KafkaError as error:
            raise DeliveryError(f"send failed: {error!r}") from error
        return sent

    async def _partition_for(self, item: Outgoing) -> int:
        partitions = self._partitions.get(item.topic)
        if partitions is None:
            partitions = sorted(await self._producer.partitions_for(item.topic))
            self._partitions[item.topic] = partitions
        partition: int = self._partitioner(item.key, partitions, partitions)
        return partition

    async def _send_group(
        self, topic: str, partition: int, entries: list[tuple[int, Outgoing]]
    ) -> list[Sent]:
        sent: list[Sent] = []
        limit = self._limits.get(topic)
        builder = self._producer.create_batch()
        held: list[Outgoing] = []
        held_at: list[int] = []

        async def flush() -> None:
            nonlocal builder, held, held_at
            future = await self._producer.send_batch(builder, topic, partition=partition)
            sent.append(Sent(future, topic, partition, held, next(self._seq), tuple(held_at)))
            builder = self._producer.create_batch()
            held, held_at = [], []

        for at, item in entries:
            over_limit = (
                limit is not None
                and held
                and builder.size() + record_bytes(item) - _BATCH_HEADER_BYTES > limit
            )
            if over_limit:
                await flush()
            if builder.append(timestamp=None, key=item.key, value=item.value, headers=item.headers):
                held.append(item)
                held_at.append(at)
                continue
            if held:
                await flush()
                if builder.append(
                    timestamp=None, key=item.key, value=item.value, headers=item.headers
                ):
                    held.append(item)
                    held_at.append(at)
                    continue
            # Larger than a whole producer batch: the ordinary path.
            sent.append(await self._send_single(topic, partition, item, at))
        if held:
            await flush()
        return sent

    async def _send_single(self, topic: str, partition: int, item: Outgoing, at: int = 0) -> Sent:
        try:
            future: asyncio.Future[Any] = await self._producer.send(
                topic, value=item.value, key=item.key, headers=item.headers, partition=partition
            )
        except MessageSizeTooLargeError:
            # Over the producer's own request limit: only a dead letter can be this large.
            item = _drop_value(item, "over the producer's max_request_size")
            future = await self._producer.send(
                topic, value=None, key=item.key, headers=item.headers, partition=partition
            )
        return Sent(future, topic, partition, [item], next(self._seq), (at,))

    async def send_alone(self, item: Outgoing) -> Sent:
        """Queue one record in a producer batch of its own (exactly-once isolation)."""
        try:
            return await self._send_single(item.topic, await self._partition_for(item), item)
        except KafkaError as error:
            raise DeliveryError(f"send failed: {error!r}") from error

    def replacement(
        self, item: Outgoing, sources: Mapping[SourceKey, InputRecord], error: BaseException
    ) -> Outgoing | None:
        """What takes a record's place once the broker refused it alone: an output becomes an
        ``output_rejected`` dead letter, a dead letter loses its value; a dead letter already
        without one is given up (None, logged)."""
        if item.reason is None:
            message = f"the broker refused the classified event: {error!r}"
            return self._rejected(item, sources, message)
        if item.value is None:
            _log_given_up(item, error)
            return None
        return _drop_value(item, f"refused by the broker: {error!r}")

    # -- acknowledgements --------------------------------------------------------------

    async def confirm(
        self, sent: Sequence[Sent], sources: Mapping[SourceKey, InputRecord]
    ) -> Delivery:
        """Await every batch; isolate refused records (see the module docstring).

        Raises DeliveryError for any failure that is not a refusal of the records.
        """
        results = await asyncio.gather(*(s.future for s in sent), return_exceptions=True)
        next_seq = next(self._seq)
        for s, result in zip(sent, results, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, REFUSALS):
                    raise DeliveryError(f"a record was not acknowledged: {result!r}") from result
                tp = (s.topic, s.partition)
                if tp not in self._taint or self._taint[tp][1] < s.seq:
                    self._taint[tp] = (s.seq, next_seq)
                logger.warning(
                    "the broker refused a batch; sending its records one by one",
                    extra={
                        "topic": s.topic,
                        "partition": s.partition,
                        "records": len(s.items),
                        "error": repr(result),
                    },
                )
        delivery = Delivery()
        again: list[Outgoing] = []
        for s, result in zip(sent, results, strict=True):
            taint = self._taint.get((s.topic, s.partition))
            if isinstance(result, BaseException) or (taint and taint[0] < s.seq < taint[1]):
                again.extend(s.items)
            else:
                delivery.delivered.extend(s.items)
        if again:
            await self._one_by_one(again, sources, delivery)
        return delivery

    async def _one_by_one(
        self, items: list[Outgoing], sources: Mapping[SourceKey, InputRecord], delivery: Delivery
    ) -> None:
        refused = await self._send_alone(items)
        systemic = len(refused) == len(items) > 1 and all(
            isinstance(error, UnknownError) for error in refused.values()
        )
        if systemic:  # refused for every record alone: not about the records
            raise DeliveryError(f"every record refused alone: {next(iter(refused.values()))!r}")
        delivery.delivered.extend(item for at, item in enumerate(items) if at not in refused)
        letters: list[Outgoing] = []
        for at, error in refused.items():
            item = items[at]
            if item.reason is None:
                delivery.rejected += 1
                message = f"the broker refused the classified event: {error!r}"
                letters.append(self._rejected(item, sources, message))
            else:
                delivery.values_dropped += 1
                letters.append(_drop_value(item, f"refused by the broker: {error!r}"))
        if not letters:
            return
        refused_letters = await self._send_alone(letters)
        delivered = [item for at, item in enumerate(letters) if at not in refused_letters]
        retry: list[Outgoing] = []
        for at, error in refused_letters.items():
            letter = letters[at]
            if letter.value is None:
                delivery.given_up += 1
                _log_given_up(letter, error)
            else:
                retry.append(_drop_value(letter, repr(error)))
        if retry:
            delivery.values_dropped += len(retry)
            lost = await self._send_alone(retry)
            for at, error in lost.items():
                delivery.given_up += 1
                _log_given_up(retry[at], error)
            delivered.extend(item for at, item in enumerate(retry) if at not in lost)
        delivery.delivered.extend(delivered)

    async def _send_alone(self, items: list[Outgoing]) -> dict[int, BaseException]:
        """Each record in its own producer batch, in order; returns the refused ones' errors
        by their position in ``items``."""
        try:
            sent = [
                await self._send_single(item.topic, await self._partition_for(item), item, at)
                for at, item in enumerate(items)
            ]
        except KafkaError as error:
            raise DeliveryError(f"send failed: {error!r}") from error
        results = await asyncio.gather(*(s.future for s in sent), return_exceptions=True)
        refused: dict[int, BaseException] = {}
        for at, result in enumerate(results):
            if isinstance(result, BaseException):
                if not isinstance(result, REFUSALS):
                    raise DeliveryError(f"a record was not acknowledged: {result!r}") from result
                refused[at] = result
        return refused


def _drop_value(item: Outgoing, why: str) -> Outgoing:
    """A dead letter without its value: the decision and coordinates still reach the topic."""
    size = len(item.value or b"")
    logger.error(
        "dead letter too large to forward; value dropped",
        extra={
            "partition": item.source_partition,
            "offset": item.source_offset,
            "bytes": size,
            "detail": why[:300],
        },
    )
    headers = [*item.headers, (VALUE_DROPPED_HEADER, str(size).encode())]
    return replace(item, value=None, headers=headers)


def _log_given_up(item: Outgoing, error: BaseException) -> None:
    logger.error(
        "the broker refused even the value-less dead letter; record given up",
        extra={
            "topic": item.topic,
            "partition": item.source_partition,
            "offset": item.source_offset,
            "error": repr(error),
        },
    )
