"""The replay's pieces without a broker: timestamps, stored ranges, the gate's decisions."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from aiokafka import TopicPartition

from service.config.options import parse_timestamp
from service.core.deadletter import DeadLetterReason
from service.core.records import Outgoing
from service.kafka.replay_gate import Progress, RateLimit, ReplayGate
from service.kafka.replay_range import (
    PartitionRange,
    decode_metadata,
    encode_metadata,
)

TP = TopicPartition("articles.dead-letter", 0)


@dataclass
class FakeRecord:
    offset: int
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    partition: int = 0


class FakeConsumer:
    """Records what the gate pauses and commits."""

    def __init__(self) -> None:
        self.paused: set[TopicPartition] = set()
        self.commits: list[dict[TopicPartition, Any]] = []

    def pause(self, *partitions: TopicPartition) -> None:
        self.paused.update(partitions)

    async def commit(self, offsets: dict[TopicPartition, Any]) -> None:
        self.commits.append(offsets)


def gate(
    consumer: FakeConsumer, start: int, end: int, **options: Any
) -> tuple[ReplayGate, Progress]:
    progress = Progress({TP: PartitionRange(start, end)})
    made = ReplayGate(
        consumer,
        progress,
        job="job1",
        rate_limit=RateLimit(None),
        on_done=lambda: None,
        **options,
    )
    return made, progress


def test_timestamps_are_rfc3339_with_an_offset_or_epoch_ms() -> None:
    """Both forms give epoch milliseconds; a time without an offset is refused."""
    assert parse_timestamp("2026-11-20T12:00:00Z") == 1_795_176_000_000
    assert parse_timestamp("2026-11-20T13:00:00+01:00") == 1_795_176_000_000
    assert parse_timestamp("1795176000000") == 1_795_176_000_000
    for bad in ("2026-11-20T12:00:00", "yesterday", ""):
        with pytest.raises(ValueError, match="RFC 3339"):
            parse_timestamp(bad)


def test_the_stored_range_round_trips_and_foreign_metadata_is_none() -> None:
    """Commit metadata holds the job and the range; anything else decodes to None."""
    text = encode_metadata("abc", PartitionRange(5, 90))
    assert decode_metadata(text) == ("abc", PartitionRange(5, 90))
    assert len(text) < 100
    for foreign in ("", "not json", '{"job": "x"}', "[1, 2]"):
        assert decode_metadata(foreign) is None


def test_only_records_inside_the_range_with_a_chosen_reason_are_admitted() -> None:
    """Offsets outside [start, end) and other reasons are left out; reaching the end pauses."""
    consumer = FakeConsumer()
    replay, _ = gate(consumer, 3, 8, reasons=("too_large",))
    reason = [("error.reason", b"too_large")]
    other = [("error.reason", b"invalid_json")]
    records = [FakeRecord(n, reason if n % 2 else other) for n in range(1, 7)]
    admitted = replay.admit({TP: records})
    assert [r.offset for r in admitted[TP]] == [3, 5]
    assert consumer.paused == set()
    admitted = replay.admit({TP: [FakeRecord(7, reason), FakeRecord(8, reason)]})
    assert [r.offset for r in admitted[TP]] == [7]
    assert consumer.paused == {TP}


async def test_commits_carry_the_range_and_move_the_progress() -> None:
    """Every commit stores the range in its metadata; progress counts from the start."""
    consumer = FakeConsumer()
    replay, progress = gate(consumer, 10, 20)
    assert (progress.done, progress.total) == (0, 10)
    await replay.commit(consumer, {TP: 15})
    (offset, metadata) = consumer.commits[0][TP]
    assert offset == 15
    assert decode_metadata(metadata) == ("job1", PartitionRange(10, 20))
    assert progress.done == 5
    assert "5/10 records (50.0%)" in progress.render()
    assert not progress.all_done()
    await replay.commit(consumer, {TP: 20})
    assert progress.all_done()


def test_a_replayed_dead_letter_that_fails_again_keeps_its_original_source() -> None:
    """source.* headers (and error.value_dropped) come from the replayed dead letter; a
    published output is untouched."""
    consumer = FakeConsumer()
    replay, _ = gate(consumer, 0, 10, dead_letters=True)
    original = [
        ("error.reason", b"classification_error"),
        ("source.topic", b"articles"),
        ("source.partition", b"2"),
        ("source.offset", b"4711"),
    ]
    record = FakeRecord(4, original)
    again = Outgoing(
        topic="articles.dead-letter",
        key=b"k",
        value=b"{}",
        headers=[
            ("error.reason", b"schema_violation"),
            ("error.message", b"article_id: missing"),
            ("source.topic", b"articles.dead-letter"),
            ("source.partition", b"0"),
            ("source.offset", b"4"),
        ],
        source_partition=0,
        source_offset=4,
        source_timestamp_ms=0,
        reason=DeadLetterReason.SCHEMA_VIOLATION,
    )
    published = Outgoing("articles.classified", b"k2", b"{}", [], 0, 5, 0)
    out = replay.rewrite([again, published], {(0, 4): record, (0, 5): FakeRecord(5)})
    assert dict(out[0].headers) == {
        "error.reason": b"schema_violation",
        "error.message": b"article_id: missing",
        "source.topic": b"articles",
        "source.partition": b"2",
        "source.offset": b"4711",
    }
    assert out[1] is published
