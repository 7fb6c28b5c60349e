"""Profile the service under sustained load with py-spy, and say where the time goes.

A backlog of articles is produced to an embedded broker; one service process (``python -m
service serve``, as ``bench_service.py`` starts it) works through it. Once it has published
its first batch (start-up and the group join are over), py-spy attaches to it for
``--seconds``, sampling every thread (``--idle``: waiting counts too) of the service and,
with ``--classify-in process``, of its worker process (``--subprocesses``); ``--native``
shows the C frames, which is how a thread waiting for the GIL is told apart from one
waiting for I/O. The raw stacks are written to ``--out`` and summarised per thread by
``profile_breakdown`` (``--report FILE`` summarises an existing file again).

Usage::

    python benchmarks/profile_service.py --data ../shared/data/reuters21578/train.jsonl \\
        --model artifacts/research-model --articles 40000 --seconds 8 \\
        --out artifacts/profile.txt [--service-args "--classify-in process"]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_service import (
    DEFAULT_DATA,
    PUBLISHED,
    load_articles,
    produce_articles,
    scrape,
    spawn,
)
from profile_breakdown import aggregate, merge_idle_threads, render

from devtools.tansu import EmbeddedBroker, ensure_topics, free_port

ROOT = Path(__file__).resolve().parent.parent


def py_spy() -> str:
    """The py-spy next to this interpreter (the dev extra installs it), else on PATH."""
    local = Path(sys.executable).with_name("py-spy")
    found = str(local) if local.is_file() else shutil.which("py-spy")
    if found is None:
        raise SystemExit("py-spy not found: pip install py-spy (it is in the dev extra)")
    return found


def record_command(pid: int, out: Path, *, seconds: float, rate: int, native: bool) -> list[str]:
    """The py-spy command that samples ``pid`` and its children for ``seconds``."""
    command = [
        py_spy(), "record", "--pid", str(pid), "--duration", str(max(1, round(seconds))),
        "--rate", str(rate), "--format", "raw", "--output", str(out),
        "--threads", "--idle", "--subprocesses",
    ]  # fmt: skip
    if native:
        command.append("--native")
    return command


async def profile(args: argparse.Namespace) -> None:
    """Record ``args.out`` while the service works through a backlog."""
    articles = load_articles(args.data, args.articles)
    topics = ("profile-in", "profile-out", "profile-dlq")
    with EmbeddedBroker() as broker:
        bootstrap = broker.bootstrap_servers
        await ensure_topics(bootstrap, {topics[0]: 3, topics[1]: 3, topics[2]: 1})
        await produce_articles(bootstrap, topics[0], articles)
        port = free_port()
        process = spawn(bootstrap, args.model, topics, port, args.service_args.split())
        try:
            deadline = time.monotonic() + 600
            while (first := scrape(port)).get(PUBLISHED, 0) == 0:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise SystemExit("the service published nothing")
                await asyncio.sleep(0.05)
            started = time.monotonic()
            command = record_command(
                process.pid, args.out, seconds=args.seconds, rate=args.rate, native=args.native
            )
            spy = await asyncio.create_subprocess_exec(*command, stdout=subprocess.DEVNULL)
            if await spy.wait() != 0:
                raise SystemExit(f"py-spy failed (exit {spy.returncode}): {' '.join(command)}")
            elapsed = time.monotonic() - started
            last = scrape(port)
        finally:
            process.terminate()
            process.wait(timeout=60)
    published = last.get(PUBLISHED, 0) - first.get(PUBLISHED, 0)
    rate = published / elapsed
    print(f"while sampled: {published:,.0f} articles in {elapsed:.1f} s = {rate:,.0f} articles/s"
          " (py-spy slows the process down a little)")  # fmt: skip
    if last.get(PUBLISHED, 0) >= len(articles):
        print("WARNING: the backlog ran out while sampling: idle time is included; "
              "raise --articles or lower --seconds")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--articles", type=int, default=40000, help="backlog size")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="JSONL of articles")
    parser.add_argument("--model", type=Path, default=ROOT / "artifacts" / "research-model")
    parser.add_argument("--seconds", type=float, default=8.0, help="how long to sample")
    parser.add_argument("--rate", type=int, default=100, help="samples per second")
    parser.add_argument("--out", type=Path, default=ROOT / "artifacts" / "profile.txt")
    parser.add_argument("--no-native", dest="native", action="store_false",
                        help="Python frames only (GIL waits are then not told apart)")  # fmt: skip
    parser.add_argument("--min-busy", type=float, default=0.02,
                        help="threads busy less than this share are summed")  # fmt: skip
    parser.add_argument("--service-args", default="", help="extra serve flags")
    parser.add_argument("--report", type=Path, default=None,
                        help="only summarise this existing raw profile")  # fmt: skip
    args = parser.parse_args()
    if args.report is None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        asyncio.run(profile(args))
    source = args.report or args.out
    with source.open(encoding="utf-8") as lines:
        profiles = aggregate(lines)
    print(f"profile: {source}")
    print(render(merge_idle_threads(profiles, min_busy=args.min_busy)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
