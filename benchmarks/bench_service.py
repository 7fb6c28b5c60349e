"""End-to-end benchmark of the service through a real (embedded) broker.

1. In-process baseline: ``Predictor.predict`` on the articles in batches.
2. Throughput: the articles are produced up front, one service process (``python -m
   service serve``) works through them; the rate is measured from its own
   ``articles_published_total`` counter, after its first batch (startup and group join
   excluded). Target: at least 85% of the in-process rate.
3. Latency: events are produced at a fixed rate well below saturation; each carries its
   send time, and a consumer of the output topic measures send -> receive (p50, p99).

Usage: ``python benchmarks/bench_service.py [--articles 5000] [--model DIR] [--data FILE]``.
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
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from model import Predictor, load_labelled, save_artifact, train
from schemas import ArticleEvent, decode_article, encode_classified, utc_now_rfc3339
from service.broker import EmbeddedBroker, ensure_topics, free_port

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "reuters21578" / "train.jsonl"
DEMO_CORPUS = ROOT / "model" / "samples" / "demo.jsonl"


def load_articles(path: Path, count: int) -> list[dict[str, str]]:
    """Reuters-length articles from ``path`` if it exists, else generated ~800-char ones."""
    articles: list[dict[str, str]] = []
    if path.is_file():
        with path.open(encoding="utf-8") as lines:
            for line in lines:
                row = json.loads(line)
                if row.get("body", "").strip():
                    articles.append({"title": row.get("title", ""), "body": row["body"]})
                if len(articles) == count:
                    break
        source = str(path)
    else:
        demo = [json.loads(line) for line in DEMO_CORPUS.read_text("utf-8").splitlines()]
        for index in range(count):
            parts = [demo[(index + k) % len(demo)]["body"] for k in range(3)]
            articles.append({"title": demo[index % len(demo)]["title"], "body": " ".join(parts)})
        source = "generated from the demo corpus"
    while len(articles) < count:
        articles.extend(articles[: count - len(articles)])
    for index, article in enumerate(articles):
        article["article_id"] = f"bench-{index}"
    mean = statistics.mean(len(a["title"]) + len(a["body"]) for a in articles)
    print(f"articles: {count} from {source}, mean {mean:.0f} chars")
    return articles


def model_dir(explicit: Path | None, scratch: Path) -> Path:
    if explicit is not None:
        return explicit
    out = scratch / "demo-model"
    save_artifact(train(load_labelled([DEMO_CORPUS]).records, name="demo"), out)
    return out


def in_process_rates(
    predictor: Predictor, articles: list[dict[str, str]], batch: int
) -> tuple[float, float]:
    """Articles per second of ``predict`` alone, and of bytes -> decode -> predict -> encode
    bytes (the same work per article as the service, without Kafka)."""
    raw = [json.dumps(a).encode() for a in articles]
    events = [ArticleEvent.model_validate(a) for a in articles]
    predictor.predict(events[:batch])  # warm-up
    started = time.perf_counter()
    for start in range(0, len(events), batch):
        predictor.predict(events[start : start + batch])
    predict_only = len(events) / (time.perf_counter() - started)
    started = time.perf_counter()
    for start in range(0, len(raw), batch):
        decoded = [decode_article(value) for value in raw[start : start + batch]]
        valid = [event for event in decoded if isinstance(event, ArticleEvent)]
        stamp = utc_now_rfc3339()
        for event, result in zip(valid, predictor.predict(valid), strict=True):
            encode_classified(event, result, stamp)
    full = len(raw) / (time.perf_counter() - started)
    return predict_only, full


def spawn(
    bootstrap: str, model: Path, topics: tuple[str, str, str], port: int, extra_args: list[str]
) -> Any:
    command = [
        sys.executable, "-m", "service", "serve",
        "--model", str(model), "--bootstrap-servers", bootstrap,
        "--input-topic", topics[0], "--output-topic", topics[1],
        "--dead-letter-topic", topics[2], "--group-id", f"bench-{topics[0]}",
        "--metrics-host", "127.0.0.1", "--metrics-port", str(port),
        "--session-timeout-ms", "6000", "--log-level", "WARNING",
    ]  # fmt: skip
    command += extra_args
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARTICLE_CLASSIFIER_")}
    return subprocess.Popen(command, cwd=ROOT, env=env)


def scrape(port: int) -> dict[str, float]:
    """The service's unlabelled samples from /metrics (empty until it answers)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return {}
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("article_classifier_") and "{" not in line:
            name, value = line.split()
            samples[name] = float(value)
    return samples


PUBLISHED = "article_classifier_articles_published_total"
CLASSIFYING_S = "article_classifier_classification_duration_seconds_sum"


async def produce_all(bootstrap: str, topic: str, payloads: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=10,
                                max_batch_size=512 * 1024)  # fmt: skip
    await producer.start()
    try:
        futures = [await producer.send(topic, key=k, value=v) for k, v in payloads]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def throughput(
    bootstrap: str, model: Path, articles: list[dict[str, str]], extra_args: list[str]
) -> tuple[float, float]:
    """Articles/s published by one service process working through a backlog, and the
    share of that time its classification thread was busy."""
    topics = ("bench-in", "bench-out", "bench-dlq")
    await ensure_topics(bootstrap, {topics[0]: 3, topics[1]: 3, topics[2]: 1})
    payloads = [(a["article_id"].encode(), json.dumps(a).encode()) for a in articles]
    await produce_all(bootstrap, topics[0], payloads)
    port = free_port()
    process = spawn(bootstrap, model, topics, port, extra_args)
    try:
        deadline = time.monotonic() + 600
        # Polling the service's own counter over HTTP: there is no event to wait on. The
        # window starts after its first batch, so start-up and the group join are excluded.
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
    rate = (last[PUBLISHED] - first[PUBLISHED]) / elapsed
    busy = (last[CLASSIFYING_S] - first[CLASSIFYING_S]) / elapsed
    return rate, busy


async def latency(
    bootstrap: str,
    model: Path,
    articles: list[dict[str, str]],
    rate: float,
    seconds: float,
    *,
    extra_args: list[str],
) -> list[float]:
    topics = ("lat-in", "lat-out", "lat-dlq")
    await ensure_topics(bootstrap, {topics[0]: 3, topics[1]: 3, topics[2]: 1})
    port = free_port()
    process = spawn(bootstrap, model, topics, port, extra_args)
    consumer = AIOKafkaConsumer(topics[1], bootstrap_servers=bootstrap, auto_offset_reset="latest",
                                group_id="bench-latency-reader", session_timeout_ms=6000,
                                fetch_max_wait_ms=10)  # fmt: skip
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await consumer.start()
    await producer.start()
    samples: list[float] = []
    try:
        # Warm up until the service answers, then offer a steady rate.
        probe = {**articles[0], "article_id": "warmup"}
        while not samples:
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
                samples.extend(now - json.loads(r.value)["bench_sent"] for r in batch)
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


async def main_async(args: argparse.Namespace) -> int:
    articles = load_articles(args.data, args.articles)
    with tempfile.TemporaryDirectory() as scratch:
        model = model_dir(args.model, Path(scratch))
        predictor = Predictor.load(model)
        print(f"model: {predictor.name} {predictor.version}")
        # In-process rates before and after the service run, averaged: the machine is shared,
        # and this keeps a slow spell from favouring either side.
        before = in_process_rates(predictor, articles, args.batch_size)
        with EmbeddedBroker() as broker:
            service, busy = await throughput(
                broker.bootstrap_servers, model, articles, args.service_args.split()
            )
            after = in_process_rates(predictor, articles, args.batch_size)
            baseline, full = (before[0] + after[0]) / 2, (before[1] + after[1]) / 2
            print(f"in-process Predictor.predict:          {baseline:8,.0f} articles/s "
                  f"(batch {args.batch_size}; {before[0]:,.0f} before, "
                  f"{after[0]:,.0f} after)")  # fmt: skip
            print(f"in-process decode + predict + encode:  {full:8,.0f} articles/s")
            ratio = service / baseline
            verdict = "meets" if ratio >= 0.85 else "BELOW"
            print(f"service end to end (one process):      {service:8,.0f} articles/s "
                  f"= {ratio:.0%} of predict alone ({verdict} the 85% target), "
                  f"{service / full:.0%} of decode+predict+encode; "
                  f"classification thread busy {busy:.0%}")  # fmt: skip
            rate = args.rate or max(1.0, round(baseline * 0.1))
            samples = await latency(
                broker.bootstrap_servers,
                model,
                articles,
                rate,
                args.latency_seconds,
                extra_args=args.service_args.split(),
            )
    if not samples:
        print("latency: no samples")
        return 1
    print(
        f"latency at {rate:.0f} articles/s offered for {args.latency_seconds:.0f} s "
        f"({len(samples)} samples): p50 {percentile(samples, 0.5) * 1000:.1f} ms, "
        f"p99 {percentile(samples, 0.99) * 1000:.1f} ms, max {max(samples) * 1000:.1f} ms"
    )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--articles", type=int, default=10000, help="articles for throughput")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="JSONL of articles")
    parser.add_argument("--model", type=Path, default=None, help="model dir (default: demo)")
    parser.add_argument("--batch-size", type=int, default=256, help="in-process batch size")
    parser.add_argument("--rate", type=float, default=None,
                        help="offered rate for latency (default: 10%% of in-process)")  # fmt: skip
    parser.add_argument("--latency-seconds", type=float, default=10.0)
    parser.add_argument(
        "--service-args", default="", help='extra serve flags, e.g. "--classify-in process"'
    )
    return asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
