"""Exactly-once delivery without a broker: ``PartitionTransactions`` over a fake
transactional producer that keeps what each transaction wrote until it commits."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import MessageSizeTooLargeError, ProducerFenced
from prometheus_client import CollectorRegistry

from service.config.commands import ServeSettings
from service.core.deadletter import DeadLetterReason
from service.core.errors import DeliveryError
from service.core.records import Outgoing
from service.kafka import transactions as transactions_module
from service.kafka.transactions import PartitionTransactions
from service.observe.metrics import ServiceMetrics

TP = TopicPartition("articles", 0)
Written = tuple[str, bytes | None]


class _Builder:
    def __init__(self) -> None:
        self.values: list[bytes | None] = []

    def append(self, *, timestamp: Any, key: Any, value: bytes | None, headers: Any) -> object:
        self.values.append(value)
        return object()

    def size(self) -> int:
        return sum(len(value or b"") for value in self.values)


@dataclass
class _Broker:
    """What the fake producers share: the committed log and offsets, and what to refuse."""

    refuse: set[bytes] = field(default_factory=set)
    fence: bool = False
    committed: list[Written] = field(default_factory=list)
    offsets: list[dict[TopicPartition, int]] = field(default_factory=list)
    aborted: int = 0
    started: int = 0


class _FakeTransactionalProducer:
    """Records written in a transaction become visible only when it commits."""

    def __init__(self, broker: _Broker) -> None:
        self._broker = broker
        self._pending: list[Written] = []

    async def start(self) -> None:
        self._broker.started += 1

    async def stop(self) -> None:
        self._pending = []

    async def partitions_for(self, topic: str) -> set[int]:
        return {0}

    def create_batch(self) -> _Builder:
        return _Builder()

    async def begin_transaction(self) -> None:
        self._pending = []

    async def send_batch(self, builder: _Builder, topic: str, partition: int) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if any(value in self._broker.refuse for value in builder.values):
            future.set_exception(MessageSizeTooLargeError())
        else:
            self._pending.extend((topic, value) for value in builder.values)
            future.set_result(None)
        return future

    async def send(self, topic: str, *, value: bytes | None, **_: Any) -> Any:
        builder = _Builder()
        builder.append(timestamp=None, key=None, value=value, headers=[])
        return await self.send_batch(builder, topic, 0)

    async def send_offsets_to_transaction(
        self, offsets: dict[TopicPartition, int], group_id: str
    ) -> None:
        self._pending_offsets = offsets

    async def commit_transaction(self) -> None:
        if self._broker.fence:
            raise ProducerFenced()
        self._broker.committed.extend(self._pending)
        self._broker.offsets.append(self._pending_offsets)
        self._pending = []

    async def abort_transaction(self) -> None:
        self._broker.aborted += 1
        self._pending = []


@pytest.fixture
def broker(monkeypatch: pytest.MonkeyPatch) -> _Broker:
    """A fake broker behind every transactional producer the module makes."""
    shared = _Broker()
    monkeypatch.setattr(
        transactions_module,
        "make_transactional_producer",
        lambda *_: _FakeTransactionalProducer(shared),
    )
    return shared


async def _transactions() -> tuple[PartitionTransactions, ServiceMetrics]:
    settings = ServeSettings(
        model=Path("m"), processing_guarantee="exactly-once", dead_letter_topic="dlq"
    )
    metrics = ServiceMetrics(CollectorRegistry())
    made = PartitionTransactions(settings, metrics, {"out": 1_000_000, "dlq": 1_000_000})
    await made.assign([TP])
    return made, metrics


def _out(value: bytes, offset: int) -> Outgoing:
    return Outgoing("out", b"k", value, [], 0, offset, 0)


def _dead(value: bytes, offset: int) -> Outgoing:
    return Outgoing("dlq", b"k", value, [], 0, offset, 0, DeadLetterReason.INVALID_JSON)


async def test_a_batch_and_its_offset_commit_together(broker: _Broker) -> None:
    """Every output and dead letter of the batch, and the next offset, in one commit."""
    made, metrics = await _transactions()
    delivery = await made.commit(TP, [_out(b"a", 0), _dead(b"b", 1), _out(b"c", 2)], 3, {})
    assert broker.committed == [("out", b"a"), ("out", b"c"), ("dlq", b"b")]
    assert broker.offsets == [{TP: 3}]
    assert [item.value for item in delivery.delivered] == [b"a", b"b", b"c"]
    assert metrics.transactions_committed._value.get() == 1


async def test_a_refused_output_is_isolated_into_a_dead_letter(broker: _Broker) -> None:
    """The broker refuses one output: the transaction is aborted, the record probed alone,
    and the batch committed again with that record as an output_rejected dead letter; the
    records around it are committed once, in order."""
    broker.refuse = {b"poison"}
    made, _ = await _transactions()
    records = [_out(b"a", 0), _out(b"poison", 1), _out(b"c", 2)]
    sources = {(0, 1): _Source(b'{"article_id": "p"}', 1)}
    delivery = await made.commit(TP, records, 3, sources)
    assert broker.committed == [("out", b"a"), ("out", b"c"), ("dlq", b'{"article_id": "p"}')]
    assert broker.offsets == [{TP: 3}]
    assert delivery.rejected == 1
    assert broker.aborted >= 1


async def test_a_refused_dead_letter_loses_its_value_and_is_still_committed(
    broker: _Broker,
) -> None:
    """A dead letter refused alone goes out without its value (the decision still lands)."""
    broker.refuse = {b"huge"}
    made, _ = await _transactions()
    delivery = await made.commit(TP, [_dead(b"huge", 0), _out(b"ok", 1)], 2, {})
    assert broker.committed == [("dlq", None), ("out", b"ok")]
    assert delivery.values_dropped == 1


async def test_a_fenced_producer_fails_the_batch_and_commits_nothing(broker: _Broker) -> None:
    """Another instance owns the partition now: DeliveryError, nothing visible, counted."""
    broker.fence = True
    made, metrics = await _transactions()
    with pytest.raises(DeliveryError, match="fenced"):
        await made.commit(TP, [_out(b"a", 0)], 1, {})
    assert broker.committed == []
    assert broker.offsets == []
    assert metrics.transactions_aborted.labels("fenced")._value.get() == 1


@dataclass
class _Source:
    value: bytes
    offset: int
    key: bytes | None = b"k"
    topic: str = "articles"
    partition: int = 0
    timestamp: int = 0
    headers: tuple[tuple[str, bytes], ...] = ()
