"""Before/after: service variants interleaved on one broker, one backlog, in one window.

On a shared 2-core host one run of ``bench_service.py`` varies as much as a lever changes
the result, so a lever is judged here by rounds: each round measures the in-process
decode+predict+encode rate, then each variant in turn works through the same backlog (a
consumer group of its own, from the earliest offset). Reported per variant: the steady
rate (after its first publish), that rate as a share of the same round's in-process rate,
and CPU seconds of its process tree per 1000 articles (less sensitive to other load than
the rate is); medians and ranges over the rounds.

A variant is ``LABEL=SERVICE ARGS`` (extra ``serve`` flags), or ``LABEL@DIR=SERVICE ARGS``
to run the service from another checkout (``git worktree add /tmp/before main``)::

    python benchmarks/ab_service.py --model artifacts/research-model --rounds 3 \\
        --variant "before@/tmp/before=" --variant "after="
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_service import (
    DEFAULT_DATA,
    PUBLISHED,
    in_process_rates,
    load_articles,
    produce_articles,
    scrape,
)

from devtools.tansu import EmbeddedBroker, ensure_topics, free_port
from model import Predictor

ROOT = Path(__file__).resolve().parent.parent
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Variant:
    label: str
    checkout: Path
    args: list[str]
    rates: list[float] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)
    cpu_per_k: list[float] = field(default_factory=list)


def parse_variant(text: str) -> Variant:
    """``LABEL=ARGS`` or ``LABEL@DIR=ARGS``."""
    head, sep, args = text.partition("=")
    if not sep or not head:
        raise argparse.ArgumentTypeError(f"expected LABEL[@DIR]=ARGS, got {text!r}")
    label, _, checkout = head.partition("@")
    return Variant(label, Path(checkout).resolve() if checkout else ROOT, args.split())


def tree_cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its live descendants (0 once gone)."""
    total = 0.0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            stat = Path(f"/proc/{current}/stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            total += (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
            for task in Path(f"/proc/{current}/task").iterdir():
                pending.extend(int(c) for c in (task / "children").read_text().split())
        except (OSError, ValueError):
            continue
    return total


def _spawn(command: list[str], checkout: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARTICLE_CLASSIFIER_")}
    env["PYTHONPATH"] = str(checkout)
    return subprocess.Popen(command, cwd=checkout, env=env)


async def run_variant(
    variant: Variant, bootstrap: str, topics: tuple[str, str, str], group: str, total: int
) -> tuple[float, float]:
    """(articles/s, CPU s per 1000 articles) of one service working through the backlog."""
    port = free_port()
    command = [
        sys.executable, "-m", "service", "serve", "--model", str(ARGS.model.resolve()),
        "--bootstrap-servers", bootstrap, "--input-topic", topics[0],
        "--output-topic", topics[1], "--dead-letter-topic", topics[2], "--group-id", group,
        "--metrics-host", "127.0.0.1", "--metrics-port", str(port),
        "--session-timeout-ms", "6000", "--log-level", "WARNING", *variant.args,
    ]  # fmt: skip
    process = _spawn(command, variant.checkout)
    try:
        deadline = time.monotonic() + 600
        while (first := scrape(port)).get(PUBLISHED, 0) == 0:
            if time.monotonic() > deadline or process.poll() is not None:
                raise SystemExit(f"{variant.label}: the service published nothing")
            await asyncio.sleep(0.05)
        started, cpu_started = time.monotonic(), tree_cpu_s(process.pid)
        while (last := scrape(port)).get(PUBLISHED, 0) < total:
            if time.monotonic() > deadline or process.poll() is not None:
                raise SystemExit(f"{variant.label}: the service did not finish the backlog")
            await asyncio.sleep(0.1)
        elapsed, cpu = time.monotonic() - started, tree_cpu_s(process.pid) - cpu_started
    finally:
        process.terminate()
        process.wait(timeout=60)
    done = last[PUBLISHED] - first[PUBLISHED]
    return done / elapsed, cpu / done * 1000


async def main_async(variants: list[Variant]) -> None:
    articles = load_articles(ARGS.data, ARGS.articles)
    predictor = Predictor.load(ARGS.model)
    topics = ("ab-in", "ab-out", "ab-dlq")
    with EmbeddedBroker() as broker:
        bootstrap = broker.bootstrap_servers
        await ensure_topics(bootstrap, {topics[0]: 3, topics[1]: 3, topics[2]: 1})
        await produce_articles(bootstrap, topics[0], articles)
        for round_ in range(ARGS.rounds):
            _, full = in_process_rates(predictor, articles, 256)
            order = variants if round_ % 2 == 0 else variants[::-1]
            for variant in order:
                group = f"ab-{round_}-{variant.label}"
                rate, cpu = await run_variant(variant, bootstrap, topics, group, len(articles))
                variant.rates.append(rate)
                variant.ratios.append(rate / full)
                variant.cpu_per_k.append(cpu)
                print(f"round {round_ + 1} {variant.label:>12}: {rate:7,.0f} articles/s "
                      f"= {rate / full:5.0%} of in-process decode+predict+encode "
                      f"({full:,.0f}); {cpu:.3f} CPU s per 1000")  # fmt: skip
    print(f"\n{ARGS.rounds} rounds, {len(articles)} articles; median [min-max]")
    for v in variants:
        print(f"{v.label:>12}: {statistics.median(v.rates):7,.0f} articles/s "
              f"[{min(v.rates):,.0f}-{max(v.rates):,.0f}], "
              f"{statistics.median(v.ratios):4.0%} of in-process "
              f"[{min(v.ratios):.0%}-{max(v.ratios):.0%}], "
              f"{statistics.median(v.cpu_per_k):.3f} CPU s per 1000 "
              f"[{min(v.cpu_per_k):.3f}-{max(v.cpu_per_k):.3f}]")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--articles", type=int, default=20000, help="backlog size")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="JSONL of articles")
    parser.add_argument("--model", type=Path, default=ROOT / "artifacts" / "research-model")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variant", type=parse_variant, action="append", required=True,
                        help="LABEL[@CHECKOUT]=SERVICE ARGS (repeat)")  # fmt: skip
    global ARGS  # noqa: PLW0603 - the parsed command line, read-only after this
    ARGS = parser.parse_args()
    asyncio.run(main_async(ARGS.variant))
    return 0


ARGS: argparse.Namespace

if __name__ == "__main__":
    sys.exit(main())
