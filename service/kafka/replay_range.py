"""Which offsets a re-classification covers, found by time, and how that range is stored.

A range is, per partition of the replayed topic, ``[start, end)``: ``start`` is the first
offset whose record timestamp is at or after ``--from-timestamp`` (or the log start with
``--from-beginning``); ``end`` is the first offset at or after ``--until-timestamp`` or,
without it, the end of the log at the first start. Both come from the broker's time index
(ListOffsets by timestamp, aiokafka's ``offsets_for_times``), checked against the record
it names; a broker whose answer is wrong (tansu answers every lookup with the current time)
is detected and the offset is found by a binary search over record timestamps instead,
which assumes timestamps grow with the offset (log-append time, or producers' create time
in order). The end of the log is the high watermark of a fetch (tansu's ListOffsets(latest)
answers the last record batch's base offset).

The range is fixed at the first start and stored with the group's committed offsets: every
commit carries ``{"job", "start", "end"}`` as its metadata (``encode_metadata``), so an
interrupted run resumes the same range. A broker that does not keep commit metadata
(tansu) loses it; the range is then recomputed at each start (the same as long as the end
was given by ``--until-timestamp`` and records after it exist).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

logger = logging.getLogger(__name__)

_PROBE_TIMEOUT_MS = 2000


@dataclass(frozen=True, slots=True)
class PartitionRange:
    """Offsets ``[start, end)`` of one partition."""

    start: int
    end: int

    @property
    def size(self) -> int:
        """Offsets in the range (records, plus any transaction markers or compacted gaps)."""
        return max(0, self.end - self.start)


ReplayRange = dict[TopicPartition, PartitionRange]


def encode_metadata(job: str, part: PartitionRange) -> str:
    """The commit metadata that stores a partition's range with its progress."""
    return json.dumps({"job": job, "start": part.start, "end": part.end}, separators=(",", ":"))


def decode_metadata(text: str) -> tuple[str, PartitionRange] | None:
    """``(job, range)`` from commit metadata, or None when it holds none (empty or foreign)."""
    if not text:
        return None
    try:
        data = json.loads(text)
        return str(data["job"]), PartitionRange(int(data["start"]), int(data["end"]))
    except (ValueError, KeyError, TypeError):
        return None


async def log_ends(
    consumer: AIOKafkaConsumer, partitions: Sequence[TopicPartition]
) -> dict[TopicPartition, int]:
    """Each partition's log end offset (high watermark).

    ListOffsets(latest) is asked first, then one fetch from that offset reads the high
    watermark that fetch responses carry: tansu answers ListOffsets with the last record
    batch's base offset, not the end. ``consumer`` is assigned and seeked here."""
    listed: Mapping[TopicPartition, int] = await consumer.end_offsets(list(partitions))
    consumer.assign(list(partitions))
    for tp in partitions:
        consumer.seek(tp, listed[tp])
    deadline = time.monotonic() + _PROBE_TIMEOUT_MS / 1000 * 5
    while any(consumer.highwater(tp) is None for tp in partitions):
        if time.monotonic() > deadline:
            logger.warning("no high watermark fetched in time; using ListOffsets' end offsets")
            break
        await consumer.getmany(timeout_ms=200, max_records=1)
    return {tp: max(int(listed[tp]), int(consumer.highwater(tp) or 0)) for tp in partitions}


async def offsets_at(
    consumer: AIOKafkaConsumer,
    partitions: Sequence[TopicPartition],
    timestamp_ms: int,
    ends: Mapping[TopicPartition, int],
) -> dict[TopicPartition, int | None]:
    """Per partition, the first offset whose record timestamp is ``>= timestamp_ms``, or
    None when no record is that recent. The broker's answer (its time index) is checked
    against the record it names; when they differ (tansu answers the current time for any
    lookup), a binary search over record timestamps finds the offset instead.
    ``consumer`` has no group; it is assigned and seeked here."""
    answers: Mapping[TopicPartition, Any] = await consumer.offsets_for_times(
        dict.fromkeys(partitions, timestamp_ms)
    )
    consumer.assign(list(partitions))
    found: dict[TopicPartition, int | None] = {}
    unanswered: list[TopicPartition] = []
    for tp in partitions:
        answer = answers.get(tp)
        if answer is None:
            found[tp] = None
            continue
        record = await _first_record_from(consumer, tp, int(answer.offset))
        named = record is not None and (record.offset, record.timestamp) == (
            answer.offset,
            answer.timestamp,
        )
        if named and answer.timestamp >= timestamp_ms:
            found[tp] = int(answer.offset)
        else:
            unanswered.append(tp)
    if unanswered:
        logger.warning(
            "the broker's time index answered wrongly; searching record timestamps",
            extra={"partitions": [f"{tp.topic}:{tp.partition}" for tp in unanswered]},
        )
        for tp in unanswered:
            found[tp] = await _search(consumer, tp, timestamp_ms, ends[tp])
    return found


async def _search(
    consumer: AIOKafkaConsumer, tp: TopicPartition, timestamp_ms: int, end: int
) -> int | None:
    """Binary search for the first record with a timestamp ``>= timestamp_ms``."""
    low = (await consumer.beginning_offsets([tp]))[tp]
    high = end
    # The answer is in [low, high]; high == end means no record is recent enough.
    while low < high:
        record = await _first_record_from(consumer, tp, (low + high) // 2)
        if record is None or record.offset >= high:  # no record in [middle, high)
            high = (low + high) // 2
        elif record.timestamp >= timestamp_ms:
            high = int(record.offset)
        else:
            low = int(record.offset) + 1
    return None if low >= end else low


async def _first_record_from(consumer: AIOKafkaConsumer, tp: TopicPartition, offset: int) -> Any:
    consumer.seek(tp, offset)
    fetched = await consumer.getmany(tp, timeout_ms=_PROBE_TIMEOUT_MS, max_records=1)
    records = fetched.get(tp) or []
    return records[0] if records else None


async def plan_range(
    consumer: AIOKafkaConsumer,
    partitions: Sequence[TopicPartition],
    *,
    from_ms: int | None,
    until_ms: int | None,
) -> ReplayRange:
    """The range to replay now: ``from_ms`` None means from the log start; ``until_ms``
    None means to the current end of the log."""
    beginnings = await consumer.beginning_offsets(list(partitions))
    ends = await log_ends(consumer, partitions)
    starts: dict[TopicPartition, int | None] = dict(beginnings)
    if from_ms is not None:
        starts = await offsets_at(consumer, partitions, from_ms, ends)
    stops: dict[TopicPartition, int | None] = dict(ends)
    if until_ms is not None:
        stops = await offsets_at(consumer, partitions, until_ms, ends)
    planned: ReplayRange = {}
    for tp in partitions:
        end = stops[tp]
        end = ends[tp] if end is None else end
        start = starts[tp]
        start = end if start is None else max(start, beginnings[tp])
        planned[tp] = PartitionRange(start=start, end=max(start, end))
    return planned
