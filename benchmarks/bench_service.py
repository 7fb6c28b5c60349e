"""The service through a real broker, side by side with its I/O ceiling and peers.

One run, one broker (the embedded tansu, or Apache Kafka with ``--broker apache-kafka``:
tansu's fetch slows as its log grows, so rates and latency are Apache Kafka's to judge),
one backlog of articles produced up front (6 partitions):

1. In process: ``Predictor.predict`` alone, and bytes -> decode -> predict -> encode ->
   bytes (the service's work per article without Kafka), before and after the broker runs.
2. Through the broker, each contender a new process working through the same backlog in
   its own consumer group: the pass-through loop (getmany, send each record unchanged,
   commit: the I/O ceiling, no model), the service with ``--classify-in thread`` and
   ``process`` and, with ``--peers``, the peers of ``peers.py`` (FastStream per message and
   batch, aiokafka ``async for`` + ``send_and_wait``, a ``getmany`` batch loop). Each is
   measured from its output topic (``contenders.py``): records/s, and the peak RSS of its
   process tree.
3. With ``--peers`` or ``--rate``: end-to-end latency of each classifying contender at each
   fixed offered load (``--rate``, repeatable; default: half the service's median backlog
   rate), p50 and p99; a contender that fell behind the offered rate has no percentile.

``--repeat N`` runs 1 and 2 N times (the contenders' order rotated each time) and 3 N
times, and prints the spread (min / median / max) of every rate and ratio: on a shared
2-core machine one run is not a figure.

Usage: ``python benchmarks/bench_service.py [--articles 30000] [--model DIR] [--data FILE]
[--broker apache-kafka] [--peers] [--rate 2000 --rate 4000] [--repeat 3]``.
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
from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from devtools.apache_kafka import ApacheKafkaBroker
from devtools.tansu import EmbeddedBroker, ensure_topics
from model import Predictor, load_labelled, save_artifact, train
from schemas import ArticleEvent, decode_article, encode_classified, utc_now_rfc3339

sys.path.insert(0, str(Path(__file__).resolve().parent))
from contenders import (
    PARTITIONS,
    BacklogResult,
    Contender,
    Endpoints,
    LatencyResult,
    backlog_run,
    latency_run,
    spread,
)

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


async def produce_articles(bootstrap: str, topic: str, articles: list[dict[str, str]]) -> None:
    """The articles as a backlog of events on ``topic``, keyed by article id."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=10,
                                max_batch_size=512 * 1024)  # fmt: skip
    await producer.start()
    try:
        futures = [
            await producer.send(topic, key=a["article_id"].encode(), value=json.dumps(a).encode())
            for a in articles
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def contenders(args: argparse.Namespace) -> list[Contender]:
    extra = tuple(args.service_args.split())
    chosen = [
        Contender("pass-through loop (no model)", "passthrough"),
        Contender("service, --classify-in thread", "service", ("--classify-in", "thread", *extra)),
        Contender(
            "service, --classify-in process", "service", ("--classify-in", "process", *extra)
        ),
    ]
    if args.peers:
        chosen += [
            Contender("FastStream, per message", "faststream"),
            Contender("FastStream, batch subscriber", "faststream-batch"),
            Contender("aiokafka, async for + send_and_wait", "aiokafka"),
            Contender("aiokafka, getmany batch loop", "getmany"),
        ]
    return chosen


def _fmt(values: Sequence[float], unit: str = "", scale: float = 1.0, digits: int = 0) -> str:
    low, mid, high = spread([v * scale for v in values])
    if len(values) == 1:
        return f"{mid:,.{digits}f}{unit}"
    return f"{mid:,.{digits}f}{unit} ({low:,.{digits}f}-{high:,.{digits}f})"


def broker_for(engine: str, scratch: Path) -> AbstractContextManager[Any]:
    """The broker the run measures through, started on loopback."""
    if engine == "tansu":
        return EmbeddedBroker(log_file=scratch / "tansu.log")
    return ApacheKafkaBroker(data_dir=scratch / "kafka", log_file=scratch / "kafka.log")


async def main_async(args: argparse.Namespace) -> int:
    articles = load_articles(args.data, args.articles)
    chosen = contenders(args)
    with tempfile.TemporaryDirectory() as scratch:
        model = model_dir(args.model, Path(scratch))
        predictor = Predictor.load(model)
        print(
            f"model: {predictor.name} {predictor.version}; broker: {args.broker}; "
            f"{args.repeat} repeat(s)"
        )
        predict_rates: list[float] = []
        full_rates: list[float] = []
        backlog: dict[str, list[BacklogResult]] = {c.label: [] for c in chosen}
        latencies: dict[float, dict[str, list[LatencyResult]]] = {}
        with broker_for(args.broker, Path(scratch)) as broker:
            bootstrap = broker.bootstrap_servers
            await ensure_topics(bootstrap, {"bench-in": PARTITIONS})
            await produce_articles(bootstrap, "bench-in", articles)
            for repeat in range(args.repeat):
                before = in_process_rates(predictor, articles, args.batch_size)
                shift = repeat % len(chosen)
                for contender in chosen[shift:] + chosen[:shift]:
                    at = Endpoints(
                        bootstrap, model, "bench-in",
                        f"out-{contender.slug}-{repeat}", f"bench-{contender.slug}-{repeat}",
                    )  # fmt: skip
                    result = await backlog_run(
                        contender,
                        at,
                        len(articles),
                        max_seconds=args.max_seconds,
                        log=Path(scratch) / f"{at.group_id}.log",
                    )
                    backlog[contender.label].append(result)
                    print(f"  run {repeat + 1}: {contender.label}: {result.rate:,.0f}/s "
                          f"({result.outputs} outputs)", flush=True)  # fmt: skip
                after = in_process_rates(predictor, articles, args.batch_size)
                predict_rates.append((before[0] + after[0]) / 2)
                full_rates.append((before[1] + after[1]) / 2)
            if args.peers or args.rate:
                service = statistics.median(
                    r.rate for r in backlog["service, --classify-in thread"]
                )
                rates = args.rate or [max(1.0, round(service / 2))]
                classifying = [c for c in chosen if c.kind != "passthrough"]
                for rate in rates:
                    print(f"latency: {rate:,.0f} articles/s offered for "
                          f"{args.latency_seconds:.0f} s")  # fmt: skip
                    at_rate = latencies[rate] = {c.label: [] for c in classifying}
                    for repeat in range(args.repeat):
                        shift = repeat % len(classifying)
                        for contender in classifying[shift:] + classifying[:shift]:
                            topic = f"{contender.slug}-{round(rate)}-{repeat}"
                            at = Endpoints(
                                bootstrap, model, f"lat-in-{topic}",
                                f"lat-out-{topic}", f"lat-{topic}",
                            )  # fmt: skip
                            measured = await latency_run(
                                contender,
                                at,
                                articles,
                                rate=rate,
                                seconds=args.latency_seconds,
                                log=Path(scratch) / f"{at.group_id}.log",
                            )
                            at_rate[contender.label].append(measured)
                            p99_ms = measured.quantile(0.99) * 1000
                            answered = f"{measured.received}/{measured.offered}"
                            print(f"  run {repeat + 1}: {contender.label}: "
                                  f"p99 {p99_ms:.1f} ms, {answered}", flush=True)  # fmt: skip
    print_tables(predict_rates, full_rates, backlog, latencies)
    return 0


def print_tables(
    predict_rates: list[float],
    full_rates: list[float],
    backlog: dict[str, list[BacklogResult]],
    latencies: dict[float, dict[str, list[LatencyResult]]],
) -> None:
    """Rates as median (min-max) over the repeats; ratios are taken within each repeat."""
    ceiling = [r.rate for r in backlog["pass-through loop (no model)"]]
    print()
    print("| | articles/s | x in-process decode+predict+encode | x in-process predict "
          "| x pass-through | peak RSS, MiB |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    print(f"| in-process `Predictor.predict` | {_fmt(predict_rates)} | "
          f"{_fmt([p / f for p, f in zip(predict_rates, full_rates, strict=True)], digits=2)} "
          "| 1 | | |")  # fmt: skip
    print(f"| in-process decode + predict + encode | {_fmt(full_rates)} | 1 | "
          f"{_fmt([f / p for p, f in zip(predict_rates, full_rates, strict=True)], digits=2)} "
          "| | |")  # fmt: skip
    peers = {label for runs in latencies.values() for label in runs}
    for label, results in backlog.items():
        if label in peers and not label.startswith("service"):
            continue  # a peer: in the latency tables
        rates = [r.rate for r in results]
        vs_full = [r / f for r, f in zip(rates, full_rates, strict=True)]
        vs_predict = [r / p for r, p in zip(rates, predict_rates, strict=True)]
        vs_ceiling = [r / c for r, c in zip(rates, ceiling, strict=True)]
        rss = [r.rss_bytes for r in results]
        print(f"| {label} | {_fmt(rates)} | {_fmt(vs_full, digits=2)} | "
              f"{_fmt(vs_predict, digits=2)} | {_fmt(vs_ceiling, digits=2)} | "
              f"{_fmt(rss, scale=1 / 2**20)} |")  # fmt: skip
    for rate, at_rate in latencies.items():
        print_peers(full_rates, backlog, at_rate, rate)


def print_peers(
    full_rates: list[float],
    backlog: dict[str, list[BacklogResult]],
    latencies: dict[str, list[LatencyResult]],
    rate: float,
) -> None:
    """The classifying contenders side by side: rate, ratio, latency at the offered load."""
    offered = next(iter(latencies.values()))[0].offered
    print()
    print(f"at {rate:,.0f} articles/s offered:")
    print("| | records/s | x in-process decode+predict+encode | p50 ms | p99 ms "
          "| peak RSS under load, MiB |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for label, runs in latencies.items():
        rates = [r.rate for r in backlog[label]]
        vs_full = [r / f for r, f in zip(rates, full_rates, strict=True)]
        # A contender that fell behind has a growing queue: its latency is not a figure.
        kept = [run for run in runs if run.kept_up]
        if kept:
            p50 = _fmt([run.quantile(0.5) for run in kept], scale=1000, digits=1)
            p99 = _fmt([run.quantile(0.99) for run in kept], scale=1000, digits=1)
            if len(kept) < len(runs):
                p99 += f" ({len(runs) - len(kept)} of {len(runs)} runs fell behind)"
        else:
            share = statistics.median(run.received / run.offered for run in runs)
            p50 = "fell behind"
            p99 = f"fell behind: {share:.0%} of {offered:,} answered in time"
        rss = _fmt([r.rss_bytes for r in backlog[label]], scale=1 / 2**20)
        print(f"| {label} | {_fmt(rates)} | {_fmt(vs_full, digits=2)} | {p50} | {p99} "
              f"| {rss} |")  # fmt: skip
    peers = [label for label in latencies if not label.startswith("service")]
    if peers:
        repeats = range(len(full_rates))
        fastest = [max(backlog[label][n].rate for label in peers) for n in repeats]
        for label in (x for x in latencies if x.startswith("service")):
            ratio = [backlog[label][n].rate / fastest[n] for n in repeats]
            print(f"{label}: x the fastest peer {_fmt(ratio, digits=2)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--articles", type=int, default=10000, help="articles in the backlog")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="JSONL of articles")
    parser.add_argument("--model", type=Path, default=None, help="model dir (default: demo)")
    parser.add_argument("--batch-size", type=int, default=256, help="in-process batch size")
    parser.add_argument("--repeat", type=int, default=1, help="runs; >1 prints the spread")
    parser.add_argument("--peers", action="store_true",
                        help="add the peers of peers.py and the latency table")  # fmt: skip
    parser.add_argument("--max-seconds", type=float, default=15.0,
                        help="stop a backlog run this long after its first output")  # fmt: skip
    parser.add_argument(
        "--rate",
        type=float,
        action="append",
        default=[],
        help="offered rate of a latency run; repeatable (default with --peers: half the service's)",
    )
    parser.add_argument(
        "--broker",
        choices=("tansu", "apache-kafka"),
        default="tansu",
        help="the broker to measure through (apache-kafka: make kafka-jars)",
    )
    parser.add_argument("--latency-seconds", type=float, default=10.0)
    parser.add_argument(
        "--service-args", default="", help='extra serve flags, e.g. "--batch-size 512"'
    )
    args = parser.parse_args()
    if args.repeat < 1 or args.articles < 2:
        parser.error("--repeat must be at least 1 and --articles at least 2")
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
