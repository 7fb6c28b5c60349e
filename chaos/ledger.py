"""What went in and what came out: feeding numbered events, reading topics whole, and the
audit of the delivery promise (nothing lost, per-key order, duplicates counted).

Every input record has an identity: its ``event_id`` when the value is a JSON object that
has one, else the value itself (a poison record). A dead letter carries the input value
unchanged and an output carries the input's ``event_id``, so both map back to the input.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

_QUIET_S = 1.5

#: (key, identity) of one record, in the order of its partition.
Entry = tuple[str, str]

_TITLES = (
    "Central bank holds interest rates as inflation eases",
    "Striker scores twice as city win the cup final",
    "Parliament passes the budget after a late-night vote",
    "Chipmaker shares jump on record quarterly profit",
    "Minister resigns over leaked trade memo",
)


def identity(value: bytes | None) -> str:
    """The event id of a JSON event, else the value itself (poison records)."""
    if value is None:
        return "<null>"
    with contextlib.suppress(ValueError):
        event = json.loads(value)
        found = event.get("event_id") if isinstance(event, dict) else None
        if isinstance(found, str):
            return found
    return value.decode("utf-8", errors="replace")


def event_value(key: str, event_id: str, index: int) -> bytes:
    """A valid article event."""
    title = _TITLES[index % len(_TITLES)]
    body = f"{title}. Report number {index} on the matter, with more detail to follow."
    return json.dumps(
        {"article_id": key, "event_id": event_id, "title": title, "body": body}
    ).encode()


def poison_value(event_id: str, index: int) -> bytes:
    """A record the service must dead-letter: invalid JSON, or a schema violation."""
    if index % 2:
        return f"not json {event_id}".encode()
    return json.dumps({"article_id": "", "event_id": event_id, "title": " "}).encode()


@dataclass
class Feeder:
    """Produces numbered events (keys repeating, every ``poison_every``-th one poison) in
    chunks until ``total`` or ``stop()``; ``acked`` counts what the broker acknowledged."""

    bootstrap_servers: str
    topic: str
    total: int | None = None
    keys: int = 100
    chunk: int = 200
    pause_s: float = 0.05
    poison_every: int | None = None
    prefix: str = "e"
    acked: int = 0
    failures: int = 0
    _next: int = 0
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    def stop(self) -> None:
        """Finish the chunk in progress, then return from ``run``."""
        self._stop.set()

    async def run(self) -> None:
        """Produce until done; a chunk that fails is sent again (the input may then hold
        a record twice, which the audit tolerates)."""
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap_servers, acks="all", linger_ms=5
        )
        await producer.start()
        try:
            while not self._stop.is_set() and (count := self._chunk_size()):
                records = [self._record(self._next + i) for i in range(count)]
                try:
                    futures = [await producer.send(self.topic, key=k, value=v) for k, v in records]
                    await asyncio.gather(*futures)
                except KafkaError:
                    self.failures += 1
                    await asyncio.sleep(0.5)
                    continue
                self._next += count
                self.acked += count
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), self.pause_s)
        finally:
            await producer.stop()

    def _chunk_size(self) -> int:
        if self.total is None:
            return self.chunk
        return max(0, min(self.chunk, self.total - self._next))

    def _record(self, index: int) -> tuple[bytes, bytes]:
        key = f"{self.prefix}-k{index % self.keys}"
        event_id = f"{self.prefix}-{index}"
        if self.poison_every and index % self.poison_every == self.poison_every - 1:
            return key.encode(), poison_value(event_id, index)
        return key.encode(), event_value(key, event_id, index)


async def read_topic(
    bootstrap_servers: str,
    topic: str,
    *,
    timeout_s: float = 60.0,
    isolation_level: str = "read_uncommitted",
) -> dict[int, list[Entry]]:
    """Every record of ``topic`` up to its end offsets now, per partition in offset order
    (with ``read_committed``: the records of committed transactions, up to the last stable
    offset)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 * 1024 * 1024,
        isolation_level=isolation_level,
    )
    await consumer.start()
    try:
        deadline = time.monotonic() + timeout_s
        # Subscribed without a group, every partition is assigned once the topic's metadata
        # arrives (Apache Kafka sends none unasked: ``topics()`` does not fill the client's
        # metadata, so ``partitions_for_topic`` stays None there).
        consumer.subscribe([topic])
        while not consumer.assignment():
            if time.monotonic() > deadline:
                raise TimeoutError(f"topic {topic!r} has no partitions")
            await consumer.getmany(timeout_ms=100)
        assigned = sorted(consumer.assignment())
        await consumer.seek_to_beginning(*assigned)
        ends: dict[TopicPartition, int] = await consumer.end_offsets(assigned)
        out: dict[int, list[Entry]] = {tp.partition: [] for tp in assigned}
        # The end offsets first, then until nothing more comes for a while: tansu reports
        # an end offset short of the last record batch's tail (its base offset + 1).
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < _QUIET_S or [
            tp for tp in assigned if await _behind(consumer, tp, ends[tp])
        ]:
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic!r} did not reach its end offsets")
            batches = await consumer.getmany(timeout_ms=200)
            for tp, records in batches.items():
                out[tp.partition].extend(
                    ((r.key or b"").decode(), identity(r.value)) for r in records
                )
                quiet_since = time.monotonic()
        return out
    finally:
        await consumer.stop()


async def _behind(consumer: AIOKafkaConsumer, tp: TopicPartition, end: int) -> bool:
    position: int = await consumer.position(tp)
    return position < end


async def count_records(bootstrap_servers: str, topics: Iterable[str]) -> int:
    """Roughly how many records the topics hold: the sum of their end offsets, which tansu
    reports short of each partition's last batch (fine to see growth, not to count)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer.topics()
        wanted: list[TopicPartition] = []
        for topic in topics:
            partitions = consumer.partitions_for_topic(topic) or set()
            wanted.extend(TopicPartition(topic, p) for p in partitions)
        ends: dict[TopicPartition, int] = await consumer.end_offsets(wanted) if wanted else {}
        return sum(ends.values())
    finally:
        await consumer.stop()


@dataclass(frozen=True)
class Audit:
    """The delivery promise checked over whole topics."""

    inputs: int
    outputs: int
    dead_letters: int
    lost: list[str]
    duplicates: int
    #: Keys whose output sequence, keeping the last copy of each event, is not in input order.
    out_of_order: list[str]

    @property
    def ok(self) -> bool:
        """Nothing lost and per-key order held."""
        return not self.lost and not self.out_of_order

    def summary(self) -> str:
        """One line for a log or an assertion message."""
        return (
            f"inputs={self.inputs} outputs={self.outputs} dead_letters={self.dead_letters} "
            f"lost={len(self.lost)} {self.lost[:5]} duplicates={self.duplicates} "
            f"out_of_order_keys={len(self.out_of_order)} {self.out_of_order[:5]}"
        )


def audit(
    inputs: dict[int, list[Entry]],
    outputs: dict[int, list[Entry]],
    dead_letters: dict[int, list[Entry]],
) -> Audit:
    """Every input on the output or dead-letter topic at least once; per key, the output
    sequence with only the last copy of each event kept is in input order (the README's
    promise: a re-published record may follow a later one, its last copy is in order)."""
    given = [entry for part in inputs.values() for entry in part]
    published = [entry for part in outputs.values() for entry in part]
    dead = [entry for part in dead_letters.values() for entry in part]
    copies = Counter(ident for _, ident in published + dead)
    wanted = {ident for _, ident in given}
    lost = sorted(wanted - set(copies))
    # Input duplicates (a producer retry) are not the service's: count against unique ids.
    duplicates = sum(copies.values()) - len(set(copies))
    in_order = _per_key(given)
    out_of_order = []
    for key, sequence in _per_key(published).items():
        kept = _last_copies(sequence)
        expected = [ident for ident in _first_copies(in_order.get(key, [])) if ident in kept]
        if kept != expected:
            out_of_order.append(key)
    return Audit(
        inputs=len(wanted),
        outputs=len(published),
        dead_letters=len(dead),
        lost=lost,
        duplicates=duplicates,
        out_of_order=sorted(out_of_order),
    )


def _per_key(entries: Sequence[Entry]) -> dict[str, list[str]]:
    by_key: dict[str, list[str]] = {}
    for key, ident in entries:
        by_key.setdefault(key, []).append(ident)
    return by_key


def _last_copies(sequence: Sequence[str]) -> list[str]:
    last = {ident: index for index, ident in enumerate(sequence)}
    return [ident for index, ident in enumerate(sequence) if last[ident] == index]


def _first_copies(sequence: Sequence[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for ident in sequence:
        if ident not in seen:
            seen.add(ident)
            out.append(ident)
    return out


async def audit_topics(
    bootstrap_servers: str,
    input_topic: str,
    output_topic: str,
    dead_letter_topic: str,
    *,
    isolation_level: str = "read_uncommitted",
) -> Audit:
    """Read the three topics whole and audit them (the outputs as ``isolation_level`` says)."""
    inputs, outputs, dead = await asyncio.gather(
        read_topic(bootstrap_servers, input_topic),
        read_topic(bootstrap_servers, output_topic, isolation_level=isolation_level),
        read_topic(bootstrap_servers, dead_letter_topic, isolation_level=isolation_level),
    )
    return audit(inputs, outputs, dead)


async def await_delivery(
    bootstrap_servers: str,
    input_topic: str,
    output_topic: str,
    dead_letter_topic: str,
    *,
    timeout_s: float,
    isolation_level: str = "read_uncommitted",
) -> Audit:
    """Audit until every input reached the output or dead-letter topic (or the deadline);
    return the last audit. (Whole topics are read each time: the broker's end offsets
    cannot be trusted as counts, see ``read_topic``.)"""
    deadline = time.monotonic() + timeout_s
    while True:
        result = await audit_topics(
            bootstrap_servers,
            input_topic,
            output_topic,
            dead_letter_topic,
            isolation_level=isolation_level,
        )
        if not result.lost or time.monotonic() > deadline:
            return result
        await asyncio.sleep(1.0)
