"""What editor feedback costs: in process per verdict, and through the embedded broker.

1. In process: ``decode_feedback`` + ``QualityTracker.record`` per verdict (the work the
   feedback consumer does on the event loop for each record).
2. Through the broker: the service runs (demo model, in this process); once its feedback
   consumer has a session, ``--verdicts`` feedback events are produced and the rate is
   taken from its own ``corrections_total`` counter, from the first to the last counted.

Usage: ``python benchmarks/bench_feedback.py [--verdicts 20000]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from aiokafka import AIOKafkaProducer
from prometheus_client import CollectorRegistry

from devtools.tansu import EmbeddedBroker, ensure_topics
from model import Predictor, load_labelled, save_artifact, train
from schemas import ArticleFeedback, decode_feedback
from service.commands.serve import run_service
from service.config.commands import ServeSettings
from service.feedback.quality import QualityTracker
from service.observe.metrics import ServiceMetrics

ROOT = Path(__file__).resolve().parent.parent
DEMO_CORPUS = ROOT / "model" / "samples" / "demo.jsonl"


def verdicts(predictor: Predictor, count: int) -> list[bytes]:
    """Realistic verdicts: a section kept or changed, two tags given, one kept, one added."""
    sections, tags = predictor.sections, predictor.tags
    out = []
    for index in range(count):
        predicted = sections[index % len(sections)]
        given = [tags[index % len(tags)], tags[(index + 1) % len(tags)]]
        payload = {
            "article_id": f"bench-{index}",
            "event_id": f"evt-{index}",
            "model_version": predictor.version,
            "predicted_section": predicted,
            "predicted_tags": given,
            "section": predicted if index % 5 else sections[(index + 1) % len(sections)],
            "tags": [given[0], tags[(index + 2) % len(tags)]],
            "editor": f"ed-{index % 17}",
            "corrected_at": "2026-11-20T09:00:00Z",
        }
        out.append(json.dumps(payload).encode())
    return out


def in_process(predictor: Predictor, values: list[bytes]) -> float:
    """Verdicts per second through decode + record, best of three runs."""
    tracker = QualityTracker(
        ServiceMetrics(CollectorRegistry()), sections=predictor.sections, tags=predictor.tags
    )
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for value in values:
            decoded = decode_feedback(value)
            assert isinstance(decoded, ArticleFeedback)
            tracker.record(decoded)
        best = min(best, time.perf_counter() - started)
    return len(values) / best


async def through_broker(model_dir: Path, predictor: Predictor, values: list[bytes]) -> float:
    """Verdicts per second counted by the running service."""
    async with EmbeddedBroker() as broker:
        topics = {"bench-in": 1, "bench-out": 1, "bench-dlq": 1, "bench-feedback": 3}
        await ensure_topics(broker.bootstrap_servers, topics)
        settings = ServeSettings(
            model=model_dir,
            bootstrap_servers=broker.bootstrap_servers,
            input_topic="bench-in",
            output_topic="bench-out",
            dead_letter_topic="bench-dlq",
            feedback_topic="bench-feedback",
            group_id="bench",
            metrics_host="127.0.0.1",
            metrics_port=0,
        )
        registry = CollectorRegistry()
        stop = asyncio.Event()
        service = asyncio.create_task(
            run_service(settings, predictor=predictor, stop=stop, registry=registry)
        )

        def counted() -> float:
            labels = {"model_version": predictor.version}
            return registry.get_sample_value("article_classifier_corrections_total", labels) or 0

        def running() -> bool:
            return registry.get_sample_value("article_classifier_feedback_consumer_running") == 1

        await _until(running, 60)
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap_servers, linger_ms=5)
        await producer.start()
        try:
            # One warm-up verdict so the group has its partitions before the clock starts.
            await producer.send_and_wait("bench-feedback", values[0])
            await _until(lambda: counted() >= 1, 60)
            started = time.perf_counter()
            for value in values:
                await producer.send("bench-feedback", value)
            await producer.flush()
        finally:
            await producer.stop()
        await _until(lambda: counted() >= len(values) + 1, 300)
        elapsed = time.perf_counter() - started
        stop.set()
        await asyncio.wait_for(service, 60)
        return len(values) / elapsed


async def _until(condition: Callable[[], object], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout_s} s")
        await asyncio.sleep(0.05)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--verdicts", type=int, default=20_000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "demo"
        save_artifact(train(load_labelled([DEMO_CORPUS]).records, name="demo"), model_dir)
        predictor = Predictor.load(model_dir)
        values = verdicts(predictor, args.verdicts)
        print(f"in process: {in_process(predictor, values):,.0f} verdicts/s (decode + record)")
        rate = asyncio.run(through_broker(model_dir, predictor, values))
        print(f"through the broker: {rate:,.0f} verdicts/s counted by the running service")
    return 0


if __name__ == "__main__":
    sys.exit(main())
