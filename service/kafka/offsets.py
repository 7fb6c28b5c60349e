"""Which offsets are safe to commit: those whose every record up to them is acknowledged.

Batches are registered in fetch order and may complete in any order; a partition's
commit offset only moves past a batch when that batch and every earlier batch holding
the same partition are complete. So a crash never commits past an unacknowledged record.
"""

from __future__ import annotations

from collections.abc import Mapping

from aiokafka import TopicPartition


class OffsetTracker:
    """Per-partition bookkeeping of fetched batches and safe commit offsets."""

    def __init__(self) -> None:
        # Per partition, the pending batches in fetch order: [batch_id, next_offset, done].
        self._pending: dict[TopicPartition, list[list[int | bool]]] = {}
        self._records: dict[int, int] = {}

    @property
    def in_flight_records(self) -> int:
        """Records fetched and not yet acknowledged."""
        return sum(self._records.values())

    @property
    def in_flight_batches(self) -> int:
        """Batches fetched and not yet acknowledged."""
        return len(self._records)

    def add(self, batch_id: int, next_offsets: Mapping[TopicPartition, int], records: int) -> None:
        """Register a fetched batch: for each partition, the offset after its last record."""
        if batch_id in self._records:
            raise ValueError(f"batch {batch_id} is already registered")
        self._records[batch_id] = records
        for tp, offset in next_offsets.items():
            self._pending.setdefault(tp, []).append([batch_id, offset, False])

    def complete(self, batch_id: int) -> dict[TopicPartition, int]:
        """Mark a batch acknowledged; return the offsets that may now be committed."""
        self._records.pop(batch_id, None)
        committable: dict[TopicPartition, int] = {}
        for tp, queue in self._pending.items():
            for entry in queue:
                if entry[0] == batch_id:
                    entry[2] = True
            advanced = None
            while queue and queue[0][2]:
                advanced = int(queue.pop(0)[1])
            if advanced is not None:
                committable[tp] = advanced
        for tp in [tp for tp, queue in self._pending.items() if not queue]:
            del self._pending[tp]
        return committable
