"""Latency of the suggest API while the stream runs, through a real (embedded) broker.

One service process (``python -m service serve --api-port N``) classifies a stream of
events produced at ``--stream-rate`` articles/s while single-article ``POST /v1/classify``
requests arrive at ``--rate`` requests/s, open loop (each request is sent on schedule,
whether or not the previous ones were answered), over keep-alive connections. Reported:
p50, p99 and max of the request latency (send to full response), the status codes, and
how many articles the stream published over the same window (from the service's own
counter), so the figures are known to come from a loaded service.

Usage: ``python benchmarks/bench_api.py [--rate 50] [--stream-rate 500] [--seconds 20]
[--model DIR] [--data FILE]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaProducer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_service import (
    DEFAULT_DATA,
    PUBLISHED,
    load_articles,
    model_dir,
    percentile,
    scrape,
    spawn,
)

from devtools.tansu import EmbeddedBroker, ensure_topics, free_port

_JSON = {"Content-Type": "application/json"}


async def stream(
    bootstrap: str, topic: str, articles: list[dict[str, str]], rate: float, stop: Any
) -> None:
    """Produce articles at ``rate`` per second until ``stop`` is set."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    sent = 0
    try:
        start = time.monotonic()
        while not stop.is_set():
            await asyncio.sleep(max(0.0, start + sent / rate - time.monotonic()))
            article = articles[sent % len(articles)]
            key = article["article_id"].encode()
            await producer.send(topic, json.dumps(article).encode(), key=key)
            sent += 1
        await producer.flush()
    finally:
        await producer.stop()


def stream_process(
    bootstrap: str, topic: str, articles: list[dict[str, str]], rate: float, stop: Any
) -> None:
    """The stream's producer in a process of its own, so the client measuring the API
    shares no interpreter (and no event loop) with it."""
    asyncio.run(stream(bootstrap, topic, articles, rate, stop))


async def offer(
    client: httpx.AsyncClient, bodies: list[bytes], rate: float, seconds: float
) -> tuple[list[float], Counter[int]]:
    """Single-article requests at ``rate`` per second for ``seconds``, open loop."""
    latencies: list[float] = []
    codes: Counter[int] = Counter()

    async def one(body: bytes) -> None:
        sent = time.perf_counter()
        response = await client.post("/v1/classify", content=body, headers=_JSON)
        latencies.append(time.perf_counter() - sent)
        codes[response.status_code] += 1

    tasks = []
    start = time.monotonic()
    for index in range(int(rate * seconds)):
        await asyncio.sleep(max(0.0, start + index / rate - time.monotonic()))
        tasks.append(asyncio.create_task(one(bodies[index % len(bodies)])))
    await asyncio.gather(*tasks)
    return latencies, codes


async def wait_until_serving(client: httpx.AsyncClient, metrics_port: int) -> None:
    """The service is ready (/readyz 200: model, broker, group) and its API answers."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            ready = await client.get(f"http://127.0.0.1:{metrics_port}/readyz")
            if ready.status_code == 200 and (await client.get("/openapi.json")).is_success:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.2)
    raise TimeoutError("the service did not start serving")


async def main_async(args: argparse.Namespace) -> int:
    articles = load_articles(args.data, 2000)
    bodies = [json.dumps({**a, "article_id": f"api-{i}"}).encode() for i, a in enumerate(articles)]
    with tempfile.TemporaryDirectory() as scratch, EmbeddedBroker() as broker:
        model = model_dir(args.model, Path(scratch))
        topics = ("api-bench-in", "api-bench-out", "api-bench-dlq")
        await ensure_topics(broker.bootstrap_servers, {topics[0]: 3, topics[1]: 3, topics[2]: 1})
        metrics_port, api_port = free_port(), free_port()
        extra = ["--api-port", str(api_port), *args.service_args.split()]
        process = spawn(broker.bootstrap_servers, model, topics, metrics_port, extra)
        context = multiprocessing.get_context("spawn")
        stop = context.Event()
        producing = context.Process(
            target=stream_process,
            args=(broker.bootstrap_servers, topics[0], articles, args.stream_rate, stop),
        )
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        try:
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{api_port}", timeout=30, limits=limits
            ) as client:
                await wait_until_serving(client, metrics_port)
                # The stream starts once the service is in its group (no backlog to catch
                # up on), and runs for a warm-up first that is not counted.
                producing.start()
                await offer(client, bodies[:50], args.rate, 3.0)
                before = scrape(metrics_port).get(PUBLISHED, 0)
                started = time.monotonic()
                latencies, codes = await offer(client, bodies, args.rate, args.seconds)
                elapsed = time.monotonic() - started
                published = scrape(metrics_port).get(PUBLISHED, 0) - before
        finally:
            stop.set()
            if producing.pid is not None:
                producing.join(timeout=60)
            process.terminate()
            process.wait(timeout=60)
    print(f"stream: {args.stream_rate:.0f} articles/s offered, {published / elapsed:.0f}/s "
          f"published by the service during the API run")  # fmt: skip
    print(
        f"api: {args.rate:.0f} single-article requests/s for {args.seconds:.0f} s "
        f"({len(latencies)} requests, status {dict(sorted(codes.items()))}): "
        f"p50 {percentile(latencies, 0.5) * 1000:.1f} ms, "
        f"p99 {percentile(latencies, 0.99) * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms"
    )
    return 0 if set(codes) == {200} else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=50.0, help="API requests per second")
    parser.add_argument("--stream-rate", type=float, default=500.0, help="stream articles/s")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the API run")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="JSONL of articles")
    parser.add_argument("--model", type=Path, default=None, help="model dir (default: demo)")
    parser.add_argument(
        "--service-args", default="", help='extra serve flags, e.g. "--classify-in process"'
    )
    return asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
