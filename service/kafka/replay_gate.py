"""The bounds a replay puts on the pipeline's stream (``service.kafka.pipeline.Bounds``).

``ReplayGate`` admits only the records inside the range (and, replaying dead letters,
only those with a chosen ``error.reason``), pauses a partition once it is read to its end,
keeps the fetch rate under a limit, commits with the range in the commit metadata, and
calls ``on_done`` when every partition's committed offset has reached its end. Records it
leaves out (a reason not asked for) are committed once everything admitted before them is
committed, so progress moves over them too. ``Progress`` outlives the sessions of one run.

Dead-letter replay: a record that fails again becomes a dead letter whose ``source.*``
headers (and ``error.value_dropped``, if any) are the original ones, not the dead-letter
topic's coordinates, so the trail always leads to the input topic.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field, replace
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from service.core.deadletter import VALUE_DROPPED_HEADER
from service.core.records import Outgoing
from service.kafka.publish import SourceKey
from service.kafka.replay_range import ReplayRange, encode_metadata

SOURCE_HEADERS = ("source.topic", "source.partition", "source.offset")
REASON_HEADER = "error.reason"
#: Headers of a replayed dead letter that its new dead letter keeps.
_KEPT_HEADERS = frozenset({*SOURCE_HEADERS, VALUE_DROPPED_HEADER})


@dataclass
class Progress:
    """Committed offsets of a run against its range; what the progress line shows."""

    range: ReplayRange
    committed: dict[TopicPartition, int] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    done_at_start: int = 0

    def __post_init__(self) -> None:
        for tp, part in self.range.items():
            offset = self.committed.get(tp, part.start)
            self.committed[tp] = min(max(offset, part.start), part.end)
        self.done_at_start = self.done

    @property
    def total(self) -> int:
        """Offsets in the whole range."""
        return sum(part.size for part in self.range.values())

    @property
    def done(self) -> int:
        """Offsets of the range committed so far (earlier runs included)."""
        return sum(self.committed[tp] - part.start for tp, part in self.range.items())

    def note(self, tp: TopicPartition, offset: int) -> None:
        """A commit of ``offset`` succeeded."""
        part = self.range.get(tp)
        if part is not None:
            self.committed[tp] = max(self.committed[tp], min(offset, part.end))

    def is_done(self, tp: TopicPartition) -> bool:
        """The partition's committed offset reached its end."""
        return self.committed[tp] >= self.range[tp].end

    def all_done(self) -> bool:
        """Every partition's committed offset reached its end."""
        return all(self.is_done(tp) for tp in self.range)

    def rate(self) -> float:
        """Offsets per second committed by this run."""
        elapsed = time.monotonic() - self.started
        return (self.done - self.done_at_start) / elapsed if elapsed > 0 else 0.0

    def render(self) -> str:
        """``done/total (share), rate, ETA`` in one line."""
        total, done, rate = self.total, self.done, self.rate()
        share = done / total if total else 1.0
        remaining = total - done
        eta = "-" if rate <= 0 else _duration(remaining / rate)
        if remaining == 0:
            eta = "0s"
        return f"{done:,}/{total:,} records ({share:.1%}), {rate:,.0f} records/s, ETA {eta}"


def _duration(seconds: float) -> str:
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class RateLimit:
    """At most ``per_second`` records admitted per second on average over the run."""

    def __init__(self, per_second: float | None) -> None:
        self._per_second = per_second
        self._admitted = 0
        self._started = time.monotonic()

    def add(self, records: int) -> None:
        """Count records admitted."""
        self._admitted += records

    async def wait(self) -> None:
        """Sleep until the records admitted so far fit the limit."""
        if self._per_second is None:
            return
        due = self._started + self._admitted / self._per_second
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)


class ReplayGate:
    """The ``Bounds`` of one consumer session of a replay (see the module docstring)."""

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        progress: Progress,
        *,
        job: str,
        rate_limit: RateLimit,
        on_done: Callable[[], None],
        reasons: Collection[str] = (),
        dead_letters: bool = False,
    ) -> None:
        self._consumer = consumer
        self._progress = progress
        self._range = progress.range
        self._job = job
        self._rate = rate_limit
        self._on_done = on_done
        self._reasons = frozenset(reasons)
        self._dead_letters = dead_letters
        self._assigned: set[TopicPartition] = set()
        self._exhausted: set[TopicPartition] = set()
        self._admitted_next: dict[TopicPartition, int] = {}
        self._scanned_next: dict[TopicPartition, int] = {}

    # -- Bounds ------------------------------------------------------------------------

    async def before_fetch(self) -> None:
        await self._rate.wait()
        assigned = {tp for tp in self._consumer.assignment() if tp in self._range}
        for tp in assigned - self._assigned:  # (re)assigned: the position is the commit
            self._exhausted.discard(tp)
            self._admitted_next.pop(tp, None)
            self._scanned_next.pop(tp, None)
        self._assigned = assigned
        for tp in sorted(assigned):
            end = self._range[tp].end
            if tp not in self._exhausted and await self._consumer.position(tp) >= end:
                self._exhausted.add(tp)
                self._consumer.pause(tp)
            scanned = end if tp in self._exhausted else self._scanned_next.get(tp)
            committed = self._progress.committed[tp]
            everything_admitted_is_committed = self._admitted_next.get(tp, 0) <= committed
            if scanned is not None and scanned > committed and everything_admitted_is_committed:
                await self.commit(self._consumer, {tp: scanned})
        if self._progress.all_done():
            self._on_done()

    def admit(self, fetched: dict[TopicPartition, list[Any]]) -> dict[TopicPartition, list[Any]]:
        admitted: dict[TopicPartition, list[Any]] = {}
        for tp, records in fetched.items():
            part = self._range.get(tp)
            if part is None or not records:
                continue
            kept = [r for r in records if part.start <= r.offset < part.end]
            if records[-1].offset >= part.end - 1:
                self._exhausted.add(tp)
                self._consumer.pause(tp)
            self._scanned_next[tp] = min(records[-1].offset + 1, part.end)
            if self._reasons:
                kept = [r for r in kept if _header(r, REASON_HEADER) in self._reasons]
            if kept:
                admitted[tp] = kept
                self._admitted_next[tp] = kept[-1].offset + 1
                self._rate.add(len(kept))
        return admitted

    def rewrite(self, outgoing: list[Outgoing], sources: dict[SourceKey, Any]) -> list[Outgoing]:
        if not self._dead_letters:
            return outgoing
        return [self._keep_source(item, sources) for item in outgoing]

    async def commit(self, consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int]) -> None:
        await consumer.commit(
            {
                tp: (offset, encode_metadata(self._job, self._range[tp]))
                if tp in self._range
                else offset
                for tp, offset in offsets.items()
            }
        )
        for tp, offset in offsets.items():
            self._progress.note(tp, offset)
        if self._progress.all_done():
            self._on_done()

    # -- helpers -----------------------------------------------------------------------

    def _keep_source(self, item: Outgoing, sources: dict[SourceKey, Any]) -> Outgoing:
        if item.reason is None:
            return item
        record = sources.get((item.source_partition, item.source_offset))
        original = [(k, v) for k, v in getattr(record, "headers", None) or () if k in _KEPT_HEADERS]
        if not any(k == SOURCE_HEADERS[0] for k, _ in original):
            return item  # not a dead letter of ours: its own coordinates are the source
        headers = [(k, v) for k, v in item.headers if k not in SOURCE_HEADERS]
        has_dropped = any(k == VALUE_DROPPED_HEADER for k, _ in headers)
        headers.extend((k, v) for k, v in original if k != VALUE_DROPPED_HEADER or not has_dropped)
        return replace(item, headers=headers)


def _header(record: Any, name: str) -> str | None:
    for key, value in getattr(record, "headers", None) or ():
        if key == name and value is not None:
            return bytes(value).decode("utf-8", "replace")
    return None
