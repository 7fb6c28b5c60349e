"""What the editors' desk costs: memory per article kept, and work per arriving article.

1. Memory: ``--max-articles`` N classified BBC News articles (``--data``, bodies of 2-3 KB,
   classified with explanations by the demo model as ``serve --explain 5`` would publish
   them) held by ``DeskState``: Python heap growth measured by tracemalloc, divided by N.
2. Per arriving article, with the state full (every arrival evicts the oldest): decoding
   the record (``ClassifiedArticleEvent.model_validate_json``) and ``DeskState.add_article``;
   then the same with ``--feeds`` live feeds open, each rendering the article's row for
   its browser (what the SSE stream of each feed does).
3. Reading a page: the review queue (sorting the N articles) and the feed (the newest 200).
4. The process: peak RSS of a Python that imports the command line (what
   ``article-classifier desk`` loads before it starts), and the RSS of a real
   ``article-classifier desk`` once it holds the N articles, read from an embedded broker.

Usage: ``PYTHONPATH=. python benchmarks/bench_desk.py [--data ../shared/data/bbc-news/train.jsonl]
[--max-articles 2000] [--arrivals 20000] [--feeds 10]``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import socket
import subprocess
import sys
import time
import tracemalloc
import urllib.request
from pathlib import Path

from model import Predictor, load_labelled, save_artifact, train
from schemas import ClassifiedArticleEvent
from service.core.classify import classify_values
from service.desk.pages import article_row
from service.desk.state import DeskState, Filters

ROOT = Path(__file__).resolve().parent.parent


def _classified(data: Path, predictor: Predictor, count: int) -> list[bytes]:
    lines = [json.loads(line) for line in data.read_text("utf-8").splitlines() if line.strip()]
    events = [
        json.dumps(
            {
                "article_id": f"desk-{i}",
                "event_id": f"e-{i}",
                "title": lines[i % len(lines)]["title"],
                "body": lines[i % len(lines)]["body"],
            }
        ).encode()
        for i in range(min(count, len(lines)))
    ]
    values = [
        o.value
        for o in classify_values(events, predictor, max_event_bytes=1 << 20, explain=5)
        if hasattr(o, "value")
    ]
    out: list[bytes] = []
    for i in range(count):
        event = json.loads(values[i % len(values)])
        event["article_id"] = f"desk-{i}"
        out.append(json.dumps(event).encode())
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--data", type=Path, default=ROOT.parent / "shared/data/bbc-news/train.jsonl"
    )
    parser.add_argument("--max-articles", type=int, default=2000)
    parser.add_argument("--arrivals", type=int, default=20000)
    parser.add_argument("--feeds", type=int, default=10)
    args = parser.parse_args(argv)
    # VmHWM of the child itself: ru_maxrss would count this (larger) process, forked from.
    probe = (
        "import sys, service.commands.cli; "
        "print([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0], "
        "'sklearn' in sys.modules)"
    )
    peak_kib, sklearn = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout.split()
    print(
        f"process importing the command line (as `article-classifier desk` does): peak RSS "
        f"{int(peak_kib) / 1024:.1f} MiB (scikit-learn loaded: {sklearn})"
    )

    import tempfile  # noqa: PLC0415

    model_dir = Path(tempfile.mkdtemp(prefix="bench-desk-")) / "demo"
    save_artifact(
        train(load_labelled([ROOT / "model/samples/demo.jsonl"]).records, name="demo"), model_dir
    )
    predictor = Predictor.load(model_dir)
    n = args.max_articles
    values = _classified(args.data, predictor, n + args.arrivals)
    sizes = sorted(len(v) for v in values[:n])
    print(
        f"records: median {sizes[len(sizes) // 2]} bytes (title, body, classification with "
        f"explanations), {len(values)} in all"
    )

    gc.collect()
    tracemalloc.start()
    start_heap, _ = tracemalloc.get_traced_memory()
    state = DeskState(max_articles=n, max_verdicts=5000)
    for value in values[:n]:
        state.add_article(ClassifiedArticleEvent.model_validate_json(value))
    gc.collect()
    held, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    per_article = (held - start_heap) / n
    print(
        f"memory: {n} articles held in {(held - start_heap) / 2**20:.1f} MiB of Python heap, "
        f"{per_article / 1024:.1f} KiB per article (tracemalloc)"
    )

    arrivals = values[n:]
    started = time.perf_counter()
    for value in arrivals:
        state.add_article(ClassifiedArticleEvent.model_validate_json(value))
    per = (time.perf_counter() - started) / len(arrivals)
    print(f"per arriving article, no feed open: {per * 1e6:.0f} us (decode + add, evicting)")

    async def with_feeds() -> float:
        feeds = [state.subscribe() for _ in range(args.feeds)]
        filters = Filters()
        begun = time.perf_counter()
        for value in arrivals:
            state.add_article(ClassifiedArticleEvent.model_validate_json(value))
            for feed in feeds:
                article = feed.get_nowait()
                if article is not None and filters.matches(article):
                    article_row(article)
        return (time.perf_counter() - begun) / len(arrivals)

    per_feeds = asyncio.run(with_feeds())
    print(
        f"per arriving article, {args.feeds} feeds open: {per_feeds * 1e6:.0f} us "
        f"(+ one row rendered per feed)"
    )
    begun = time.perf_counter()
    for _ in range(20):
        state.queue()
    print(
        f"review queue of {n} articles: {(time.perf_counter() - begun) / 20 * 1e3:.2f} ms "
        "per page view (sort)"
    )
    begun = time.perf_counter()
    for _ in range(20):
        state.feed(Filters(query="profit"))
    print(f"feed with a headline search: {(time.perf_counter() - begun) / 20 * 1e3:.2f} ms")
    rss_kib = _desk_process_rss(values[:n])
    print(
        f"an `article-classifier desk` process holding {n} articles: RSS {rss_kib / 1024:.1f} MiB"
    )
    return 0


def _desk_process_rss(values: list[bytes]) -> int:
    """The RSS (KiB) of a desk process once it holds ``values`` (published to a broker)."""
    from aiokafka import AIOKafkaProducer  # noqa: PLC0415

    from devtools.tansu import EmbeddedBroker, ensure_topics  # noqa: PLC0415

    async def publish(servers: str) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=servers, acks="all", linger_ms=20)
        await producer.start()
        try:
            sent = [await producer.send("articles.classified", value) for value in values]
            await asyncio.gather(*sent)
        finally:
            await producer.stop()

    with EmbeddedBroker() as broker:
        servers = broker.bootstrap_servers
        asyncio.run(ensure_topics(servers, {"articles.classified": 3, "articles.feedback": 1}))
        asyncio.run(publish(servers))
        port = str(_free_port())
        process = subprocess.Popen(
            [sys.executable, "-m", "service", "desk", "--bootstrap-servers", servers,
             "--desk-port", port, "--desk-max-articles", str(len(values)),
             "--log-level", "ERROR"],
            cwd=ROOT,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                if _held(port) >= len(values):
                    break
                time.sleep(0.5)
            status = Path(f"/proc/{process.pid}/status").read_text()
            return int(
                next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS"))
            )
        finally:
            process.terminate()
            process.wait(30)


def _held(port: str) -> float:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as answer:
            text = answer.read().decode()
    except OSError:
        return 0.0
    for line in text.splitlines():
        if line.startswith("article_classifier_desk_articles "):
            return float(line.split()[1])
    return 0.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


if __name__ == "__main__":
    raise SystemExit(main())
