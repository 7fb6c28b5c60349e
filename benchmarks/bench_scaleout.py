"""Scale-out: one, two and three service instances in one consumer group on one broker.

1. Throughput: a backlog on a 6-partition input topic, worked through by k instances
   (k = 1, 2, 3) started together in a fresh group; the rate is the steady one, over the
   middle half of the outputs by their timestamps (meant to leave out start-up, the joins
   and the uneven end), and is given relative to one instance in the same repeat.
2. Rebalance pause: events are offered at a fixed rate (default: half of one instance's
   rate in the same repeat) to two instances; a third joins, later one of the first two
   leaves (SIGTERM). The pause is the longest time with no output in the 15 s after each
   event (the longest in the 5 s before the join is given for reference), and every
   offered event is checked to have come out (at least once: duplicates are counted).

On a 2-core machine the instances, the broker and this script share the cores, so these
figures are bounded by the cores, not by the group.

Usage: ``python benchmarks/bench_scaleout.py [--articles 60000] [--model DIR] [--repeat 3]``.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import itertools
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from devtools.tansu import EmbeddedBroker, ensure_topics

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_service import DEFAULT_DATA, load_articles, model_dir, produce_articles
from contenders import PARTITIONS, Contender, Endpoints, output_reader, spread, start, stop

SERVICE = Contender("service", "service", ("--classify-in", "thread"))
INSTANCES = (1, 2, 3)
SETTLE_S = 8.0
WINDOW_S = 15.0


def steady_rate(stamps_ms: Sequence[int]) -> float:
    """Outputs per second over the middle half of the outputs, by timestamp."""
    ordered = sorted(stamps_ms)
    low, high = len(ordered) // 4, 3 * len(ordered) // 4
    return (high - low) / ((ordered[high] - ordered[low]) / 1000)


async def throughput(
    bootstrap: str, model: Path, count: int, *, instances: int, tag: str, logs: Path
) -> float:
    """Steady outputs/s of ``instances`` service processes sharing the backlog ``so-in``."""
    at = Endpoints(bootstrap, model, "so-in", f"so-out-{tag}", f"so-{tag}")
    await ensure_topics(bootstrap, {at.output_topic: PARTITIONS})
    reader = output_reader(bootstrap, at.output_topic)
    await reader.start()
    processes = [start(SERVICE, at, logs / f"{tag}-{n}.log") for n in range(instances)]
    stamps: list[int] = []
    try:
        deadline = time.monotonic() + 300
        while len(stamps) < count:
            if time.monotonic() > deadline or any(p.poll() is not None for p in processes):
                raise RuntimeError(f"{instances} instance(s): {len(stamps)} of {count} outputs")
            for records in (await reader.getmany(timeout_ms=200)).values():
                stamps.extend(record.timestamp for record in records)
    finally:
        for process in processes:
            stop(process)
        await reader.stop()
    return steady_rate(stamps)


@dataclass(frozen=True, slots=True)
class Pauses:
    rate: float
    before_ms: float
    join_ms: float
    leave_ms: float
    offered: int
    missing: int
    duplicates: int


def longest_silence_ms(stamps_ms: Sequence[int], start_ms: float, seconds: float) -> float:
    """The longest time without output in [start, start + seconds] (stamps sorted)."""
    first = bisect.bisect_left(stamps_ms, start_ms)
    last = bisect.bisect_right(stamps_ms, start_ms + seconds * 1000)
    points = [start_ms, *stamps_ms[first:last], start_ms + seconds * 1000]
    return max(b - a for a, b in itertools.pairwise(points))


class _OfferedLoad:
    """Articles offered at a steady rate, and the outputs' times and ids as they come."""

    def __init__(
        self,
        producer: AIOKafkaProducer,
        reader: Any,
        topic: str,
        articles: Sequence[dict[str, Any]],
        rate: float,
    ) -> None:
        self._producer, self._reader, self._topic = producer, reader, topic
        self._articles, self._rate = articles, rate
        self.stamps: list[int] = []
        self.ids: list[str] = []
        self.sent = 0
        self.stopping = asyncio.Event()

    async def offer(self) -> None:
        started = time.monotonic()
        while not self.stopping.is_set():
            await asyncio.sleep(max(0.0, started + self.sent / self._rate - time.monotonic()))
            key = f"rb-{self.sent}"
            event = {**self._articles[self.sent % len(self._articles)], "article_id": key}
            await self._producer.send(self._topic, json.dumps(event).encode(), key=key.encode())
            self.sent += 1

    async def read_for(self, seconds: float) -> None:
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            for records in (await self._reader.getmany(timeout_ms=100)).values():
                for record in records:
                    self.stamps.append(record.timestamp)
                    self.ids.append(json.loads(record.value)["article_id"])


async def rebalance(
    bootstrap: str,
    model: Path,
    articles: Sequence[dict[str, Any]],
    *,
    rate: float,
    tag: str,
    logs: Path,
) -> Pauses:
    """Two instances under a steady offered load; a third joins, then one leaves."""
    at = Endpoints(bootstrap, model, f"rb-in-{tag}", f"rb-out-{tag}", f"rb-{tag}")
    await ensure_topics(bootstrap, {at.input_topic: PARTITIONS, at.output_topic: PARTITIONS})
    reader = output_reader(bootstrap, at.output_topic)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await reader.start()
    await producer.start()
    load = _OfferedLoad(producer, reader, at.input_topic, articles, rate)
    processes = [start(SERVICE, at, logs / f"{tag}-{n}.log") for n in range(2)]
    offering = asyncio.create_task(load.offer())
    try:
        deadline = time.monotonic() + 180
        while not load.stamps:
            if time.monotonic() > deadline:
                raise RuntimeError("no output from the first two instances")
            await load.read_for(0.5)
        await load.read_for(SETTLE_S)
        joined_ms = time.time() * 1000
        processes.append(start(SERVICE, at, logs / f"{tag}-2.log"))
        await load.read_for(WINDOW_S)
        left_ms = time.time() * 1000
        stop(processes[0])
        await load.read_for(WINDOW_S)
        load.stopping.set()
        await offering
        await producer.flush()
        # Drain: everything offered comes out (or the deadline passes).
        drain_until = time.monotonic() + 60
        while len(set(load.ids)) < load.sent and time.monotonic() < drain_until:
            await load.read_for(0.5)
    finally:
        load.stopping.set()
        await offering
        for process in processes:
            stop(process)
        await producer.stop()
        await reader.stop()
    stamps, ids, sent = sorted(load.stamps), load.ids, load.sent
    unique = set(ids)
    return Pauses(
        rate=rate,
        before_ms=longest_silence_ms(stamps, joined_ms - 5000, 5.0),
        join_ms=longest_silence_ms(stamps, joined_ms, WINDOW_S),
        leave_ms=longest_silence_ms(stamps, left_ms, WINDOW_S),
        offered=sent,
        missing=len({f"rb-{n}" for n in range(sent)} - unique),
        duplicates=len(ids) - len(unique),
    )


def _fmt(values: Sequence[float], digits: int = 0) -> str:
    low, mid, high = spread(values)
    if len(values) == 1:
        return f"{mid:,.{digits}f}"
    return f"{mid:,.{digits}f} ({low:,.{digits}f}-{high:,.{digits}f})"


async def main_async(args: argparse.Namespace) -> int:
    articles = load_articles(args.data, args.articles)
    rates: dict[int, list[float]] = {k: [] for k in INSTANCES}
    pauses: list[Pauses] = []
    with tempfile.TemporaryDirectory() as scratch:
        model = model_dir(args.model, Path(scratch))
        logs = Path(scratch)
        with EmbeddedBroker() as broker:
            bootstrap = broker.bootstrap_servers
            await ensure_topics(bootstrap, {"so-in": PARTITIONS})
            await produce_articles(bootstrap, "so-in", articles)
            for repeat in range(args.repeat):
                shift = repeat % len(INSTANCES)
                for instances in INSTANCES[shift:] + INSTANCES[:shift]:
                    tag = f"{instances}-{repeat}"
                    rate = await throughput(
                        bootstrap, model, len(articles), instances=instances, tag=tag, logs=logs
                    )
                    rates[instances].append(rate)
                    print(f"  run {repeat + 1}: {instances} instance(s): {rate:,.0f}/s", flush=True)
                offered = args.rate or round(rates[1][-1] / 2)
                measured = await rebalance(
                    bootstrap, model, articles, rate=offered, tag=str(repeat), logs=logs
                )
                pauses.append(measured)
                print(f"  run {repeat + 1}: pause on join {measured.join_ms:.0f} ms, on leave "
                      f"{measured.leave_ms:.0f} ms; {measured.offered} offered, "
                      f"{measured.missing} missing, {measured.duplicates} duplicates",
                      flush=True)  # fmt: skip
    print()
    print("| instances | articles/s | x one instance |")
    print("|---|---|---|")
    for instances in INSTANCES:
        relative = [r / one for r, one in zip(rates[instances], rates[1], strict=True)]
        print(f"| {instances} | {_fmt(rates[instances])} | {_fmt(relative, 2)} |")
    print()
    offered_rates = sorted({p.rate for p in pauses})
    shown = ", ".join(f"{r:,.0f}" for r in offered_rates)
    print(f"| at {shown} articles/s offered | longest time with no output, ms |")
    print("|---|---|")
    print(f"| steady, 2 instances (5 s before the join) | {_fmt([p.before_ms for p in pauses])} |")
    print(f"| a third instance joins | {_fmt([p.join_ms for p in pauses])} |")
    print(f"| one instance leaves (SIGTERM) | {_fmt([p.leave_ms for p in pauses])} |")
    print(f"offered {sum(p.offered for p in pauses)} events in all: "
          f"{sum(p.missing for p in pauses)} missing, "
          f"{sum(p.duplicates for p in pauses)} duplicates")  # fmt: skip
    return 1 if any(p.missing for p in pauses) else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--articles", type=int, default=60000, help="articles in the backlog")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="JSONL of articles")
    parser.add_argument("--model", type=Path, default=None, help="model dir (default: demo)")
    parser.add_argument("--repeat", type=int, default=1, help="runs; >1 prints the spread")
    parser.add_argument(
        "--rate", type=float, default=None, help="offered rate (default: half of one instance's)"
    )
    args = parser.parse_args()
    if args.repeat < 1 or args.articles < 8:
        parser.error("--repeat must be at least 1 and --articles at least 8")
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
