"""Run the service or one of its peers against a broker and measure it from the outside.

Every contender is measured the same way, by what reaches its output topic, so the service
and the peers are compared on equal terms:

- ``backlog_run``: the contender works through a backlog produced beforehand; its rate is
  the count of outputs over the span of their timestamps (set by the contender's producer
  as it sends), so start-up and the group join are left out. A cap in seconds bounds the
  slow contenders. The resident memory of its process tree is sampled meanwhile.
- ``latency_run``: events are offered at a fixed rate on a fresh topic, each with its own
  key (the article id, which every contender keeps as the output's key); the send time of
  each key is noted and a reader of the output topic takes receive - send. The events are
  serialised before the clock starts and the outputs are not parsed, so this process
  spends little of the shared cores.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from devtools.tansu import ensure_topics, free_port

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = Path(__file__).resolve().parent
#: Partitions of every topic a contender reads or writes (the compose file's count).
PARTITIONS = 6
STARTUP_TIMEOUT_S = 180.0
_PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True, slots=True)
class Contender:
    """``kind`` is "service" or a name of ``peers.py``; ``args`` go to ``serve``."""

    label: str
    kind: str
    args: tuple[str, ...] = ()

    @property
    def slug(self) -> str:
        return "".join(c if c.isalnum() else "-" for c in self.label)[:40]


@dataclass(frozen=True, slots=True)
class Endpoints:
    """The broker, the model and the topics one contender process is started on."""

    bootstrap_servers: str
    model: Path
    input_topic: str
    output_topic: str
    group_id: str


def command(contender: Contender, at: Endpoints) -> list[str]:
    """The command line that starts ``contender`` (a new process) on ``at``."""
    if contender.kind == "service":
        return [
            sys.executable, "-m", "service", "serve",
            "--model", str(at.model), "--bootstrap-servers", at.bootstrap_servers,
            "--input-topic", at.input_topic, "--output-topic", at.output_topic,
            "--dead-letter-topic", f"{at.output_topic}-dlq", "--group-id", at.group_id,
            "--metrics-host", "127.0.0.1", "--metrics-port", str(free_port()),
            "--session-timeout-ms", "6000", "--log-level", "WARNING", "--feedback-topic", "",
            *contender.args,
        ]  # fmt: skip
    return [
        sys.executable, str(BENCHMARKS / "peers.py"), contender.kind,
        "--bootstrap-servers", at.bootstrap_servers, "--model", str(at.model),
        "--input-topic", at.input_topic, "--output-topic", at.output_topic,
        "--group-id", at.group_id, *contender.args,
    ]  # fmt: skip


def start(contender: Contender, at: Endpoints, log: Path) -> subprocess.Popen[bytes]:
    """Start ``contender`` with its output and errors appended to ``log``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARTICLE_CLASSIFIER_")}
    with log.open("ab") as sink:
        return subprocess.Popen(command(contender, at), cwd=ROOT, env=env, stdout=sink, stderr=sink)


def _failed(contender: Contender, log: Path, what: str) -> RuntimeError:
    tail = log.read_text("utf-8", errors="replace").splitlines()[-20:]
    return RuntimeError(
        f"{contender.label}: {what}; the end of its log ({log}):\n" + "\n".join(tail)
    )


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, a bounded wait, then SIGKILL."""
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def tree_rss_bytes(pid: int) -> int:
    """Resident memory of ``pid`` and all its descendants (0 once it has exited)."""
    total, pending = 0, [pid]
    while pending:
        current = pending.pop()
        try:
            with open(f"/proc/{current}/statm", encoding="ascii") as statm:
                total += int(statm.read().split()[1]) * _PAGE
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children", encoding="ascii") as kids:
                    pending.extend(int(child) for child in kids.read().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


@dataclass
class _RssSampler:
    pid: int
    peak: int = 0
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    async def _sample(self) -> None:
        while True:
            self.peak = max(self.peak, tree_rss_bytes(self.pid))
            await asyncio.sleep(0.2)

    def __enter__(self) -> _RssSampler:
        self.task = asyncio.create_task(self._sample())
        return self

    def __exit__(self, *exc: object) -> None:
        if self.task is not None:
            self.task.cancel()


def output_reader(bootstrap_servers: str, topic: str) -> AIOKafkaConsumer:
    # No group: every partition from the beginning, and nothing committed.
    return AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap_servers,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=20,
    )


@dataclass(frozen=True, slots=True)
class BacklogResult:
    rate: float
    outputs: int
    rss_bytes: int


async def backlog_run(
    contender: Contender, at: Endpoints, expected: int, *, max_seconds: float, log: Path
) -> BacklogResult:
    """Start ``contender`` on a topic holding ``expected`` records; its outputs per second.

    The run ends when every output has arrived or ``max_seconds`` after the first one.
    """
    await ensure_topics(at.bootstrap_servers, {at.output_topic: PARTITIONS})
    reader = output_reader(at.bootstrap_servers, at.output_topic)
    await reader.start()
    stamps: list[int] = []
    process = start(contender, at, log)
    try:
        with _RssSampler(process.pid) as rss:
            deadline = time.monotonic() + STARTUP_TIMEOUT_S
            first_seen: float | None = None
            while len(stamps) < expected:
                now = time.monotonic()
                if first_seen is not None and now - first_seen > max_seconds:
                    break
                if now > deadline or process.poll() is not None:
                    raise _failed(contender, log, f"{len(stamps)} of {expected} outputs")
                for records in (await reader.getmany(timeout_ms=200)).values():
                    stamps.extend(record.timestamp for record in records)
                if stamps and first_seen is None:
                    first_seen = time.monotonic()
            peak = rss.peak
    finally:
        stop(process)
        await reader.stop()
    span_s = (max(stamps) - min(stamps)) / 1000
    return BacklogResult((len(stamps) - 1) / span_s, len(stamps), peak)


@dataclass(frozen=True, slots=True)
class LatencyResult:
    offered: int
    received: int
    latencies_s: list[float]
    rss_bytes: int

    def quantile(self, q: float) -> float:
        ordered = sorted(self.latencies_s)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    @property
    def kept_up(self) -> bool:
        return self.received == self.offered


async def latency_run(
    contender: Contender,
    at: Endpoints,
    articles: Sequence[dict[str, Any]],
    *,
    rate: float,
    seconds: float,
    log: Path,
) -> LatencyResult:
    """Offer ``rate`` events/s for ``seconds`` to a warmed-up ``contender``: send -> receive."""
    await ensure_topics(
        at.bootstrap_servers, {at.input_topic: PARTITIONS, at.output_topic: PARTITIONS}
    )
    reader = output_reader(at.bootstrap_servers, at.output_topic)
    producer = AIOKafkaProducer(bootstrap_servers=at.bootstrap_servers, acks="all")
    await reader.start()
    await producer.start()
    process = start(contender, at, log)
    total = int(rate * seconds)
    payloads = [
        (f"lat-{index}".encode(), json.dumps({**articles[index % len(articles)],
                                               "article_id": f"lat-{index}"}).encode())
        for index in range(total)
    ]  # fmt: skip
    sent_at: dict[bytes, float] = {}
    latencies: list[float] = []
    try:
        # Until the contender answers: group joined, model loaded, first batch done.
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        probe = json.dumps({**articles[0], "article_id": "warm-up"}).encode()
        warmed = 0
        while not warmed:
            if time.monotonic() > deadline or process.poll() is not None:
                raise _failed(contender, log, "no answer to the warm-up event")
            await producer.send_and_wait(at.input_topic, probe, key=b"warm-up")
            got = await reader.getmany(timeout_ms=1000)
            warmed = sum(len(records) for records in got.values())
        with _RssSampler(process.pid) as rss:
            offering = asyncio.create_task(
                _offer(producer, at.input_topic, payloads, rate, sent_at)
            )
            deadline = time.monotonic() + seconds + max(5.0, seconds)
            while len(latencies) < total and time.monotonic() < deadline:
                for records in (await reader.getmany(timeout_ms=100)).values():
                    now = time.time()
                    for record in records:
                        sent = sent_at.pop(record.key, None) if record.key else None
                        if sent is not None:  # warm-up echoes and duplicates are not timed
                            latencies.append(now - sent)
            await offering
            peak = rss.peak
    finally:
        stop(process)
        await producer.stop()
        await reader.stop()
    return LatencyResult(total, len(latencies), latencies, peak)


async def _offer(
    producer: AIOKafkaProducer,
    topic: str,
    payloads: Sequence[tuple[bytes, bytes]],
    rate: float,
    sent_at: dict[bytes, float],
) -> None:
    """Send ``payloads`` at ``rate``: every 5 ms, the ones due by then."""
    start_at = time.monotonic()
    index = 0
    while index < len(payloads):
        due = min(len(payloads), int((time.monotonic() - start_at) * rate) + 1)
        while index < due:
            key, value = payloads[index]
            sent_at[key] = time.time()
            await producer.send(topic, value, key=key)
            index += 1
        await asyncio.sleep(0.005)
    await producer.flush()


def spread(values: Sequence[float]) -> tuple[float, float, float]:
    """(min, median, max)."""
    return min(values), statistics.median(values), max(values)
