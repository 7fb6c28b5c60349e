"""The cost of shadow scoring (``--shadow-model``): throughput with and without a candidate.

1. In process: ``classify_batch`` over the articles in batches, without and with a
   ``CandidateScorer`` (decode + predict + encode, plus the candidate and the comparison).
2. Through the embedded broker: one ``serve`` process works through a backlog of the
   articles, once without and once with ``--shadow-model`` (fresh topics each time); the
   rate comes from its own ``articles_published_total`` after its first batch, as in
   ``bench_service.py``. The order of the two service runs alternates with ``--reverse``.

Usage: ``python benchmarks/bench_shadow.py --model DIR [--shadow-model DIR]
[--articles 30000] [--data FILE] [--service-args "--classify-in process"]``. Without
``--shadow-model`` the candidate is a copy of ``--model`` (the same size, so the same cost).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench_service import (
    DEFAULT_DATA,
    PUBLISHED,
    load_articles,
    model_dir,
    produce_articles,
    scrape,
    spawn,
)

from devtools.tansu import EmbeddedBroker, ensure_topics, free_port
from model import Predictor
from service.core.classify import classify_batch
from service.core.records import Topics
from service.core.shadow import CandidateScorer
from service.models.workers import WireRecord


def in_process(
    live: Predictor, candidate: Predictor | None, articles: list[dict[str, str]], batch: int
) -> float:
    """Articles per second of classify_batch (with the candidate's scoring, if given)."""
    records = [
        WireRecord("bench", 0, offset, 0, a["article_id"].encode(), json.dumps(a).encode())
        for offset, a in enumerate(articles)
    ]
    topics = Topics("out", "dlq")
    scorer = CandidateScorer(candidate) if candidate is not None else None
    classify_batch(records[:batch], live, topics=topics, max_event_bytes=1 << 20, shadow=scorer)
    started = time.perf_counter()
    for start in range(0, len(records), batch):
        classify_batch(
            records[start : start + batch],
            live,
            topics=topics,
            max_event_bytes=1 << 20,
            shadow=scorer,
        )
    return len(records) / (time.perf_counter() - started)


async def service_rate(
    bootstrap: str, model: Path, articles: list[dict[str, str]], tag: str, extra: list[str]
) -> float:
    """Articles/s published by one service process working through a backlog."""
    topics = (f"shadow-bench-in-{tag}", f"shadow-bench-out-{tag}", f"shadow-bench-dlq-{tag}")
    await ensure_topics(bootstrap, {topics[0]: 3, topics[1]: 3, topics[2]: 1})
    await produce_articles(bootstrap, topics[0], articles)
    port = free_port()
    process = spawn(bootstrap, model, topics, port, extra)
    try:
        deadline = time.monotonic() + 600
        # Polling the service's own counter: there is no event to wait on (as bench_service).
        while (first := scrape(port)).get(PUBLISHED, 0) == 0:
            if time.monotonic() > deadline:
                raise TimeoutError("the service published nothing")
            await asyncio.sleep(0.05)
        started = time.monotonic()
        while (last := scrape(port)).get(PUBLISHED, 0) < len(articles):
            if time.monotonic() > deadline:
                raise TimeoutError("the service did not finish the backlog")
            await asyncio.sleep(0.25)
        elapsed = time.monotonic() - started
    finally:
        process.terminate()
        process.wait(timeout=60)
    return (last[PUBLISHED] - first[PUBLISHED]) / elapsed


async def main_async(args: argparse.Namespace) -> int:
    articles = load_articles(args.data, args.articles)
    with tempfile.TemporaryDirectory() as scratch:
        live_dir = model_dir(args.model, Path(scratch))
        shadow_dir = args.shadow_model or Path(
            shutil.copytree(live_dir, Path(scratch) / "candidate")
        )
        live, candidate = Predictor.load(live_dir), Predictor.load(shadow_dir)
        print(f"model {live.name} {live.version}; candidate {candidate.name} {candidate.version}")
        alone = in_process(live, None, articles, args.batch_size)
        shadowed = in_process(live, candidate, articles, args.batch_size)
        print(f"in process, classify_batch alone:        {alone:8,.0f} articles/s")
        print(f"in process, classify_batch + shadow:     {shadowed:8,.0f} articles/s "
              f"({shadowed / alone:.0%})")  # fmt: skip
        extra = args.service_args.split()
        runs = [("plain", extra), ("shadow", [*extra, "--shadow-model", str(shadow_dir)])]
        if args.reverse:
            runs.reverse()
        rates: dict[str, float] = {}
        with EmbeddedBroker() as broker:
            for tag, flags in runs:
                rates[tag] = await service_rate(
                    broker.bootstrap_servers, live_dir, articles, tag, flags
                )
        print(f"service, without --shadow-model:         {rates['plain']:8,.0f} articles/s")
        print(f"service, with --shadow-model:            {rates['shadow']:8,.0f} articles/s "
              f"({rates['shadow'] / rates['plain']:.0%})")  # fmt: skip
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--articles", type=int, default=10000)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="JSONL of articles")
    parser.add_argument("--model", type=Path, default=None, help="live model (default: demo)")
    parser.add_argument("--shadow-model", type=Path, default=None, help="candidate model")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--reverse", action="store_true", help="run the shadowed service first")
    parser.add_argument("--service-args", default="", help="extra serve flags")
    return asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
