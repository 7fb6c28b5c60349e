"""``make chaos``: a bounded soak of the whole delivery promise under random faults.

An embedded broker behind a ``FaultProxy`` (faults hit only the service's connections, so
the feeder and the final audit keep a clean path), a feeder producing continuously (keys
repeating, 1 in ``poison_every`` records poison), and service instances as subprocesses.
Until the duration is up, one fault at a time, chosen at random: kill -9 an instance,
SIGTERM one, partition the service from the broker for a random while, or add an instance;
after each, the soak waits for recovery (every live instance ready and outputs growing)
and records how long that took. Then it stops producing, lets everything drain, audits the
topics and prints a table. Exit status 1 when anything was lost, per-key order broke, an
instance exited unasked or did not recover.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from chaos.ledger import Audit, Feeder, await_delivery
from chaos.proxy import FaultProxy, client_id_prefix
from devtools.tansu import EmbeddedBroker, ensure_topics, free_port
from model import load_labelled, save_artifact, train

ROOT = Path(__file__).resolve().parent.parent
DEMO_CORPUS = ROOT / "model" / "samples" / "demo.jsonl"
CLIENT_ID = "article-classifier"
_RECOVERY_BOUND_S = 120.0
_EXIT_BOUND_S = 45.0
_INPUT_PARTITIONS = 3
_DESCRIPTION = (
    "A bounded soak: random kill -9, SIGTERM, partitions and joins while producing, then an"
    " audit (nothing lost, per-key order); exit status 1 on a broken promise."
)


@dataclass
class Instance:
    """One service subprocess."""

    name: str
    process: subprocess.Popen[bytes]
    port: int
    log: Path
    expected_exit: bool = False

    def alive(self) -> bool:
        return self.process.poll() is None


@dataclass
class Soak:
    """The run's moving parts and what happened."""

    bootstrap: str
    proxy: FaultProxy
    topics: tuple[str, str, str]
    group: str
    model_dir: Path
    workdir: Path
    rng: random.Random
    max_instances: int
    #: In the service's group (so it reads its commits) but never joins it: no subscription.
    watcher: AIOKafkaConsumer
    instances: list[Instance] = field(default_factory=list)
    faults: Counter[str] = field(default_factory=Counter)
    recoveries: list[tuple[str, float]] = field(default_factory=list)
    unrecovered: list[str] = field(default_factory=list)
    _count: int = 0

    def live(self) -> list[Instance]:
        return [instance for instance in self.instances if instance.alive()]

    def spawn(self) -> Instance:
        self._count += 1
        port = free_port()
        log = self.workdir / f"instance-{self._count}.log"
        command = [
            sys.executable, "-m", "service", "serve",
            "--model", str(self.model_dir),
            "--bootstrap-servers", self.proxy.address,
            "--input-topic", self.topics[0],
            "--output-topic", self.topics[1],
            "--dead-letter-topic", self.topics[2],
            "--group-id", self.group,
            "--client-id", CLIENT_ID,
            "--metrics-host", "127.0.0.1",
            "--metrics-port", str(port),
            "--batch-size", "64",
            "--session-timeout-ms", "6000",
            "--shutdown-timeout-s", "20",
        ]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith("ARTICLE_CLASSIFIER_")}
        env["PYTHONUNBUFFERED"] = "1"
        with log.open("ab") as sink:
            process = subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=sink, stderr=sink, stdin=subprocess.DEVNULL
            )
        instance = Instance(f"instance-{self._count}", process, port, log)
        self.instances.append(instance)
        return instance

    async def stop(self, instance: Instance, sig: int) -> None:
        instance.expected_exit = True
        if instance.alive():
            instance.process.send_signal(sig)
        try:
            await asyncio.to_thread(instance.process.wait, _EXIT_BOUND_S)
        except subprocess.TimeoutExpired:
            self.unrecovered.append(f"{instance.name} ignored signal {sig}")
            instance.process.kill()
            await asyncio.to_thread(instance.process.wait, 5)

    async def recovered(self, backlog: dict[TopicPartition, int]) -> bool:
        """Every live instance ready and the group's commits past ``backlog`` (the input end
        offsets when the fault ended): all that came before the fault is out."""
        live = self.live()
        if not live:
            return False
        statuses = await asyncio.gather(*(_readyz(instance.port) for instance in live))
        if any(status != 200 for status in statuses):
            return False
        try:
            for tp, end in backlog.items():
                committed = await self.watcher.committed(tp)
                if committed is None or committed < end:
                    return False
        except KafkaError:
            return False
        return True

    async def backlog(self) -> dict[TopicPartition, int]:
        """The input topic's end offsets now."""
        partitions = [TopicPartition(self.topics[0], p) for p in range(_INPUT_PARTITIONS)]
        ends: dict[TopicPartition, int] = await self.watcher.end_offsets(partitions)
        return ends

    async def inject(self, kind: str) -> None:
        """One fault, then wait (bounded) for recovery and record how long it took."""
        live = self.live()
        if kind == "kill -9":
            await self.stop(self.rng.choice(live), signal.SIGKILL)
        elif kind == "sigterm":
            await self.stop(self.rng.choice(live), signal.SIGTERM)
        elif kind == "partition":
            self.proxy.partition()
            await asyncio.sleep(self.rng.uniform(3.0, 25.0))
            self.proxy.restore()
        elif kind == "add instance":
            self.spawn()
        self.faults[kind] += 1
        if not self.live():
            self.spawn()  # the group must not stay empty: an orchestrator would restart it
        backlog = await self.backlog()
        started = time.monotonic()
        while not await self.recovered(backlog):
            if time.monotonic() - started > _RECOVERY_BOUND_S:
                self.unrecovered.append(f"{kind}: no recovery within {_RECOVERY_BOUND_S:.0f} s")
                return
            await asyncio.sleep(0.25)
        self.recoveries.append((kind, time.monotonic() - started))

    def choose(self) -> str:
        """A random fault that is possible now; each kind once before any repeats."""
        live = len(self.live())
        kinds = ["partition"]
        if live > 0:
            kinds += ["kill -9", "sigterm"]
        if live < self.max_instances:
            kinds.append("add instance")
        fresh = [kind for kind in kinds if not self.faults[kind]]
        return self.rng.choice(fresh or kinds)

    def kill_all(self) -> None:
        for instance in self.instances:
            if instance.alive():
                instance.process.kill()
                instance.process.wait(5)

    def unexpected_exits(self) -> list[str]:
        return [
            f"{i.name} exited with {i.process.returncode}"
            for i in self.instances
            if not i.alive() and not i.expected_exit
        ]


async def _readyz(port: int) -> int:
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 2)
    except (OSError, TimeoutError):
        return 0
    try:
        writer.write(b"GET /readyz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        await writer.drain()
        head = await asyncio.wait_for(reader.readline(), 5)
        return int(head.split()[1])
    except (OSError, TimeoutError, ValueError, IndexError):
        return 0
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def _train_demo_model(out: Path) -> Path:
    save_artifact(train(load_labelled([DEMO_CORPUS]).records, name="demo"), out)
    return out


async def run(args: argparse.Namespace) -> int:
    """The whole soak; the exit status."""
    rng = random.Random(args.seed)  # noqa: S311 - fault choices, reproducible by seed
    model_dir = args.model or _train_demo_model(args.workdir / "model")
    broker_port = free_port()
    tag = uuid.uuid4().hex[:8]
    topics = (f"articles-{tag}", f"articles.classified-{tag}", f"articles.dead-letter-{tag}")
    started = time.monotonic()
    async with contextlib.AsyncExitStack() as stack:
        proxy = await stack.enter_async_context(
            FaultProxy(broker_port, scope=client_id_prefix(CLIENT_ID))
        )
        broker = EmbeddedBroker(
            broker_port, advertised_port=proxy.port, log_file=args.workdir / "tansu.log"
        )
        await asyncio.to_thread(broker.start)
        stack.push_async_callback(asyncio.to_thread, broker.stop)
        bootstrap = broker.bootstrap_servers
        await ensure_topics(bootstrap, {topics[0]: _INPUT_PARTITIONS, topics[1]: 3, topics[2]: 1})
        group = f"chaos-{tag}"
        watcher = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
        )
        await watcher.start()
        stack.push_async_callback(watcher.stop)
        soak = Soak(
            bootstrap, proxy, topics, group, model_dir, args.workdir, rng, args.max_instances,
            watcher,
        )  # fmt: skip
        stack.callback(soak.kill_all)
        feeder = Feeder(
            bootstrap, topics[0], keys=args.keys, chunk=100, pause_s=0.1,
            poison_every=args.poison_every,
        )  # fmt: skip
        feeding = asyncio.create_task(feeder.run())
        for _ in range(2):
            soak.spawn()
        _say(f"soak for {args.duration_s:.0f} s (seed {args.seed}); logs in {args.workdir}")
        deadline = started + args.duration_s
        while time.monotonic() < deadline:
            await asyncio.sleep(rng.uniform(2.0, 6.0))
            if time.monotonic() >= deadline:
                break
            kind = soak.choose()
            _say(f"{time.monotonic() - started:6.1f} s  {kind}  (live: {len(soak.live())})")
            await soak.inject(kind)
        feeder.stop()
        await asyncio.wait_for(feeding, 60)
        if not soak.live():
            soak.spawn()
        _say(f"stopped producing after {feeder.acked} events; draining")
        result = await await_delivery(bootstrap, *topics, timeout_s=240)
        unexpected = soak.unexpected_exits()
        for instance in soak.live():
            await soak.stop(instance, signal.SIGTERM)
    elapsed = time.monotonic() - started
    print(_table(result, soak, elapsed, feeder.acked))
    problems = [*unexpected, *soak.unrecovered]
    for problem in problems:
        _say(f"problem: {problem}")
    if not result.ok or problems:
        _say(f"FAILED: {result.summary()}")
        return 1
    return 0


def _table(result: Audit, soak: Soak, elapsed: float, acked: int) -> str:
    kinds = ("kill -9", "sigterm", "partition", "add instance")
    faults = " / ".join(str(soak.faults[kind]) for kind in kinds)
    worst = max(soak.recoveries, key=lambda item: item[1], default=("-", 0.0))
    order = "held" if not result.out_of_order else f"BROKEN ({len(result.out_of_order)} keys)"
    return "\n".join(
        [
            "| events | outputs | dead letters | faults: kill -9 / SIGTERM / partition / "
            "join | lost | duplicates | per-key order | max recovery | run |",
            "|---|---|---|---|---|---|---|---|---|",
            f"| {result.inputs:,} | {result.outputs:,} | {result.dead_letters:,} | {faults} "
            f"| {len(result.lost)} | {result.duplicates:,} "
            f"| {order} "
            f"| {worst[1]:.1f} s ({worst[0]}) | {elapsed:.0f} s |",
            f"(acknowledged by the broker to the feeder: {acked:,})",
        ]
    )


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chaos", description=_DESCRIPTION)
    parser.add_argument("--duration-s", type=float, default=180.0, help="how long faults go on")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    parser.add_argument("--max-instances", type=int, default=3)
    parser.add_argument("--keys", type=int, default=200, help="distinct article ids")
    parser.add_argument("--poison-every", type=int, default=50, help="1 in N records poison")
    parser.add_argument("--model", type=Path, default=None, help="model dir (default: demo)")
    parser.add_argument("--workdir", type=Path, default=None, help="logs (default: a temp dir)")
    args = parser.parse_args(argv)
    if args.duration_s <= 0 or args.max_instances < 1:
        parser.error("--duration-s must be positive and --max-instances at least 1")
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1_000_000)
    args.workdir = args.workdir or Path(tempfile.mkdtemp(prefix="chaos-"))
    args.workdir.mkdir(parents=True, exist_ok=True)
    return asyncio.run(run(args))
