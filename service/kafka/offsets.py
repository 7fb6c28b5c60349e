"""Which offsets are safe to commit: those whose every record up to them is acknowledged.

The pipeline's stages are single FIFO queues (fetch, classify, send, acknowledge, one batch
at a time each), so batches are acknowledged in the order they were fetched: once a batch
is acknowledged, every batch before it is too, and its partitions' next offsets may be
committed. A batch acknowledged out of that order would be a bug, and is refused rather
than allowed to commit past an unacknowledged record.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import NamedTuple

from aiokafka import TopicPartition


class _InFlight(NamedTuple):
    batch_id: int
    next_offsets: Mapping[TopicPartition, int]
    records: int


class OffsetTracker:
    """The fetched batches not yet acknowledged, in fetch order."""

    def __init__(self) -> None:
        self._batches: deque[_InFlight] = deque()
        self._records = 0

    @property
    def in_flight_records(self) -> int:
        """Records fetched and not yet acknowledged."""
        return self._records

    @property
    def in_flight_batches(self) -> int:
        """Batches fetched and not yet acknowledged."""
        return len(self._batches)

    def add(self, batch_id: int, next_offsets: Mapping[TopicPartition, int], records: int) -> None:
        """Register a fetched batch: for each partition, the offset after its last record."""
        if self._batches and batch_id <= self._batches[-1].batch_id:
            raise ValueError(f"batch {batch_id} is already registered or out of fetch order")
        self._batches.append(_InFlight(batch_id, dict(next_offsets), records))
        self._records += records

    def complete(self, batch_id: int) -> dict[TopicPartition, int]:
        """Mark the oldest batch acknowledged; return the offsets that may now be committed."""
        if not self._batches or self._batches[0].batch_id != batch_id:
            oldest = self._batches[0].batch_id if self._batches else None
            raise RuntimeError(f"batch {batch_id} acknowledged before batch {oldest}")
        done = self._batches.popleft()
        self._records -= done.records
        return dict(done.next_offsets)
