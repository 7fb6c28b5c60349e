"""The two delivery modes the pipeline calls (``service.kafka.delivery``), without a broker."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import TopicPartition

from service.core.errors import BrokerUnavailableError, DeliveryError
from service.core.records import Delivery, InputRecord, Outgoing
from service.kafka.delivery import AtLeastOnce, ExactlyOnce
from service.kafka.publish import SourceKey

TP0 = TopicPartition("articles", 0)
TP1 = TopicPartition("articles", 1)


@dataclass
class _Record:
    offset: int


@dataclass
class _Consumer:
    """Committed offsets to read back, and the seeks made."""

    committed_offsets: dict[TopicPartition, int | None]
    seeks: dict[TopicPartition, int] = field(default_factory=dict)

    async def committed(self, tp: TopicPartition) -> int | None:
        return self.committed_offsets[tp]

    async def beginning_offsets(self, tps: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        return dict.fromkeys(tps, 7)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks[tp] = offset


@dataclass
class _Transactions:
    """Per partition, the records and offset each commit was given."""

    ready: set[TopicPartition] = field(default_factory=set)
    commits: list[tuple[TopicPartition, list[bytes | None], int]] = field(default_factory=list)
    released: list[TopicPartition] = field(default_factory=list)
    fail_assign: bool = False

    async def assign(self, assigned: Iterable[TopicPartition]) -> None:
        if self.fail_assign:
            raise DeliveryError("a transactional producer did not start")
        self.ready.update(assigned)

    async def release(self, revoked: Iterable[TopicPartition]) -> None:
        self.released.extend(revoked)

    async def commit(
        self,
        tp: TopicPartition,
        outgoing: Sequence[Outgoing],
        next_offset: int,
        sources: Mapping[SourceKey, InputRecord],
    ) -> Delivery:
        self.commits.append((tp, [item.value for item in outgoing], next_offset))
        return Delivery(delivered=list(outgoing))


def _exactly_once(
    consumer: _Consumer, transactions: _Transactions, failures: list[BaseException]
) -> ExactlyOnce:
    return ExactlyOnce(
        transactions,  # type: ignore[arg-type]
        consumer,
        input_topic="articles",
        fail=failures.append,
    )


def _out(value: bytes, partition: int, offset: int) -> Outgoing:
    return Outgoing("out", b"k", value, [], partition, offset, 0)


async def test_exactly_once_processes_only_partitions_fenced_and_sought() -> None:
    """Before a partition's producer is started nothing of it is processed; after, only the
    records from the committed offset read once its previous owner was fenced."""
    consumer = _Consumer({TP0: 5, TP1: None})
    mode = _exactly_once(consumer, _Transactions(), [])
    fetched: dict[TopicPartition, list[Any]] = {
        TP0: [_Record(3), _Record(5), _Record(6)],
        TP1: [_Record(9)],
    }
    assert mode.admit(fetched) == {}
    await mode.assigned({TP0, TP1})
    assert consumer.seeks == {TP0: 5, TP1: 7}
    admitted = mode.admit(fetched)
    assert {tp: [r.offset for r in records] for tp, records in admitted.items()} == {
        TP0: [5, 6],
        TP1: [9],
    }


async def test_exactly_once_commits_each_input_partition_with_its_offset() -> None:
    """A batch over two input partitions is two transactions, each with its next offset;
    the acknowledgement returns what they delivered together."""
    transactions = _Transactions()
    mode = _exactly_once(_Consumer({}), transactions, [])
    outgoing = [_out(b"a", 0, 1), _out(b"b", 1, 4), _out(b"c", 0, 2)]
    acknowledge = await mode.send(outgoing, {TP0: 3, TP1: 5}, {})
    assert sorted(transactions.commits) == [(TP0, [b"a", b"c"], 3), (TP1, [b"b"], 5)]
    delivery = await acknowledge()
    assert sorted(item.value or b"" for item in delivery.delivered) == [b"a", b"b", b"c"]
    assert not mode.commits_offsets


async def test_exactly_once_ends_the_session_when_revoked_with_work_in_flight() -> None:
    """Revoked before the drain finished: the session fails (the next owner fences the
    open transactions); drained: the producers are released."""
    failures: list[BaseException] = []
    transactions = _Transactions()
    mode = _exactly_once(_Consumer({}), transactions, failures)
    await mode.revoked({TP0}, drained=False)
    assert [type(error) for error in failures] == [DeliveryError]
    assert transactions.released == []
    await mode.revoked({TP1}, drained=True)
    assert transactions.released == [TP1]


async def test_exactly_once_assignment_failure_ends_the_session() -> None:
    """A producer that cannot start (its previous owner unfenced) fails the session."""
    failures: list[BaseException] = []
    mode = _exactly_once(_Consumer({TP0: 1}), _Transactions(fail_assign=True), failures)
    await mode.assigned({TP0})
    assert [type(error) for error in failures] == [BrokerUnavailableError]
    assert mode.admit({TP0: [_Record(1)]}) == {}


async def test_at_least_once_confirms_then_lets_the_pipeline_commit() -> None:
    """At least once: every fetched record is processed, the acknowledgement awaits the
    publisher's confirmation, and the pipeline commits the offsets afterwards."""
    confirmed: list[object] = []

    class _Publisher:
        async def publish(self, outgoing: Sequence[Outgoing]) -> list[object]:
            return ["sent"]

        async def confirm(self, sent: object, sources: object) -> Delivery:
            confirmed.append(sent)
            return Delivery(delivered=[_out(b"a", 0, 0)])

    mode = AtLeastOnce(_Publisher())  # type: ignore[arg-type]
    fetched: dict[TopicPartition, list[Any]] = {TP0: [_Record(1)]}
    assert mode.admit(fetched) is fetched
    acknowledge = await mode.send([_out(b"a", 0, 0)], {TP0: 1}, {})
    assert confirmed == []
    assert len((await acknowledge()).delivered) == 1
    assert confirmed == [["sent"]]
    assert mode.commits_offsets
