"""Cost of the processing guarantee, in one run on one machine with the same data and model.

Three configurations: at-least-once on tansu, at-least-once on Apache Kafka, exactly-once on
Apache Kafka (one broker of each engine, on 127.0.0.1). For each, one service process:

1. Throughput: the articles are produced up front and the service works through them; the
   rate is taken from its own ``articles_published_total`` after its first batch (start-up
   and group join excluded). Exactly-once counts an article once its transaction commits.
2. Latency: events are offered at a fixed rate, each carrying its send time; a
   ``read_committed`` consumer of the output topic measures send -> receive (p50, p99), so
   exactly-once is measured as downstream sees it: at the commit of the transaction.

Usage: ``python benchmarks/bench_guarantees.py [--articles 10000] [--rate 500]
[--latency-seconds 10] [--data FILE] [--model DIR]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from devtools.apache_kafka import ApacheKafkaBroker
from devtools.tansu import EmbeddedBroker, ensure_topics, free_port
from model import load_labelled, save_artifact, train

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "reuters21578" / "train.jsonl"
DEMO_CORPUS = ROOT / "model" / "samples" / "demo.jsonl"
PUBLISHED = "article_classifier_articles_published_total"
RUNS = (
    ("tansu", "at-least-once"),
    ("apache-kafka", "at-least-once"),
    ("apache-kafka", "exactly-once"),
)


def load_articles(path: Path, count: int) -> list[dict[str, str]]:
    """Articles from ``path`` (JSONL with title/body) if it exists, else from the demo corpus."""
    source = path if path.is_file() else DEMO_CORPUS
    rows = [json.loads(line) for line in source.read_text("utf-8").splitlines() if line.strip()]
    rows = [row for row in rows if str(row.get("body", "")).strip()]
    articles = [
        {"article_id": f"bench-{i}", "title": rows[i % len(rows)].get("title", ""),
         "body": rows[i % len(rows)]["body"]}
        for i in range(count)
    ]  # fmt: skip
    mean = statistics.mean(len(a["title"]) + len(a["body"]) for a in articles)
    print(f"articles: {count} from {source}, mean {mean:.0f} chars")
    return articles


def spawn(bootstrap: str, model: Path, topics: tuple[str, str, str], port: int, mode: str) -> Any:
    command = [
        sys.executable, "-m", "service", "serve",
        "--model", str(model), "--bootstrap-servers", bootstrap,
        "--input-topic", topics[0], "--output-topic", topics[1],
        "--dead-letter-topic", topics[2], "--group-id", f"bench-{topics[0]}",
        "--metrics-host", "127.0.0.1", "--metrics-port", str(port),
        "--session-timeout-ms", "6000", "--log-level", "WARNING",
        "--processing-guarantee", mode,
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARTICLE_CLASSIFIER_")}
    return subprocess.Popen(command, cwd=ROOT, env=env)


def published(port: int) -> float:
    """``articles_published_total`` of the service (0 until it answers)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return 0.0
    for line in text.splitlines():
        if line.startswith(PUBLISHED + " "):
            return float(line.split()[1])
    return 0.0


async def topics_for(bootstrap: str, name: str) -> tuple[str, str, str]:
    topics = (f"{name}-in", f"{name}-out", f"{name}-dlq")
    await ensure_topics(bootstrap, {topics[0]: 3, topics[1]: 3, topics[2]: 1})
    return topics


async def throughput(
    bootstrap: str, model: Path, articles: list[dict[str, str]], mode: str
) -> float:
    """Articles/s published by one service process working through a backlog."""
    topics = await topics_for(bootstrap, f"tp-{mode}")
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=10,
                                max_batch_size=512 * 1024)  # fmt: skip
    await producer.start()
    try:
        futures = [
            await producer.send(
                topics[0], key=a["article_id"].encode(), value=json.dumps(a).encode()
            )
            for a in articles
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    port = free_port()
    process = spawn(bootstrap, model, topics, port, mode)
    try:
        deadline = time.monotonic() + 900
        # Polling the service's own counter: there is no event to wait on.
        while (first := published(port)) == 0:
            if time.monotonic() > deadline:
                raise TimeoutError("the service published nothing")
            await asyncio.sleep(0.05)
        started = time.monotonic()
        while (last := published(port)) < len(articles):
            if time.monotonic() > deadline:
                raise TimeoutError("the service did not finish the backlog")
            await asyncio.sleep(0.25)
        elapsed = time.monotonic() - started
    finally:
        process.terminate()
        process.wait(timeout=60)
    return (last - first) / elapsed


async def latency(
    bootstrap: str,
    model: Path,
    articles: list[dict[str, str]],
    mode: str,
    *,
    rate: float,
    seconds: float,
) -> list[float]:
    """Send -> read_committed receive, in seconds, at ``rate`` articles/s offered."""
    topics = await topics_for(bootstrap, f"lat-{mode}")
    port = free_port()
    process = spawn(bootstrap, model, topics, port, mode)
    consumer = AIOKafkaConsumer(topics[1], bootstrap_servers=bootstrap, auto_offset_reset="latest",
                                group_id=f"bench-reader-{mode}", session_timeout_ms=6000,
                                fetch_max_wait_ms=10, isolation_level="read_committed")  # fmt: skip
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await consumer.start()
    await producer.start()
    samples: list[float] = []
    try:
        probe = {**articles[0], "article_id": "warmup"}
        while not samples:  # until the service answers
            await producer.send_and_wait(topics[0], json.dumps(probe).encode(), key=b"warmup")
            got = await consumer.getmany(timeout_ms=1000)
            samples.extend(0.0 for batch in got.values() for _ in batch)
        samples.clear()
        total = int(rate * seconds)

        async def offer() -> None:
            start = time.monotonic()
            for index in range(total):
                await asyncio.sleep(max(0.0, start + index / rate - time.monotonic()))
                event = {**articles[index % len(articles)], "bench_sent": time.time()}
                await producer.send(topics[0], json.dumps(event).encode(), key=str(index).encode())

        offering = asyncio.create_task(offer())
        deadline = time.monotonic() + seconds + 30
        while len(samples) < total and time.monotonic() < deadline:
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                now = time.time()
                samples.extend(
                    now - json.loads(r.value)["bench_sent"]
                    for r in batch
                    if b"bench_sent" in r.value
                )
        await offering
    finally:
        await producer.stop()
        await consumer.stop()
        process.terminate()
        process.wait(timeout=60)
    return samples


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def broker_for(engine: str, scratch: Path) -> AbstractContextManager[Any]:
    scratch.mkdir(parents=True, exist_ok=True)
    if engine == "tansu":
        return EmbeddedBroker(log_file=scratch / "tansu.log")
    return ApacheKafkaBroker(data_dir=scratch / "kafka", log_file=scratch / "kafka.log")


async def main_async(args: argparse.Namespace) -> int:
    articles = load_articles(args.data, args.articles)
    rows: list[tuple[str, str, float, list[float]]] = []
    with tempfile.TemporaryDirectory() as scratch_dir:
        scratch = Path(scratch_dir)
        model = args.model
        if model is None:
            model = scratch / "demo-model"
            save_artifact(train(load_labelled([DEMO_CORPUS]).records, name="demo"), model)
        for engine in dict.fromkeys(engine for engine, _ in RUNS):
            with broker_for(engine, scratch / engine) as broker:
                for run_engine, mode in RUNS:
                    if run_engine != engine:
                        continue
                    bootstrap = broker.bootstrap_servers
                    rate = await throughput(bootstrap, model, articles, mode)
                    lat = await latency(
                        bootstrap,
                        model,
                        articles,
                        mode,
                        rate=args.rate,
                        seconds=args.latency_seconds,
                    )
                    rows.append((engine, mode, rate, lat))
                    print(f"measured {engine} {mode}: {rate:,.0f} articles/s", flush=True)
    print(
        f"\n| broker | guarantee | articles/s ({args.articles:,} backlog) | p50 latency |"
        f" p99 latency | (at {args.rate:,.0f}/s offered, {args.latency_seconds:.0f} s) |"
    )
    print("|---|---|---|---|---|---|")
    for engine, mode, rate, lat in rows:
        if not lat:
            print(f"| {engine} | {mode} | {rate:,.0f} | no samples | | |")
            continue
        print(
            f"| {engine} | {mode} | {rate:,.0f} | {percentile(lat, 0.5) * 1000:.1f} ms"
            f" | {percentile(lat, 0.99) * 1000:.1f} ms | {len(lat)} samples |"
        )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--articles", type=int, default=10_000, help="backlog for throughput")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="JSONL of articles")
    parser.add_argument("--model", type=Path, default=None, help="model dir (default: demo)")
    parser.add_argument("--rate", type=float, default=500.0, help="offered rate for latency")
    parser.add_argument("--latency-seconds", type=float, default=10.0)
    return asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
