"""``article-classifier demo``: the whole path on one machine, visible in the terminal.

Embedded broker -> topics -> service (demo model) -> sample articles and a few broken
events in -> every classified article and dead letter printed as it arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord

from devtools.tansu import EmbeddedBroker, ensure_topics
from model import ModelError, Predictor, load_labelled, save_artifact, train
from service.commands.serve import run_service
from service.config.commands import ServeSettings
from service.observe.logs import configure_logging

SAMPLE_ARTICLES = Path(__file__).resolve().parent.parent / "model" / "samples" / "articles.jsonl"
DEMO_MAX_EVENT_BYTES = 64 * 1024
ARRIVAL_TIMEOUT_S = 60.0
_SHOWN_METRICS = (
    "article_classifier_records_consumed_total",
    "article_classifier_articles_published_total",
    "article_classifier_dead_letters_total",
    "article_classifier_predictions_total",
)

#: Broken events a publisher might send, one per dead-letter reason.
INVALID_EVENTS: tuple[tuple[bytes, bytes], ...] = (
    (b"broken-utf8", b'{"article_id": "broken-utf8", "title": "Caf\xe9 owners protest"}'),
    (b"broken-json", b'{"article_id": "broken-json", "title": "Missing brace"'),
    (b"no-article-id", b'{"title": "An event without its article_id", "body": "..."}'),
    (b"too-large", json.dumps({"article_id": "too-large", "body": "x" * 100_000}).encode()),
)


def run_demo(*, model_dir: Path, metrics_port: int, keep_running: bool, corpus: Path) -> int:
    """Run the demo; returns 0 when every expected record arrived."""
    # The service's own JSON log lines (dead letters are warnings) show between the results.
    configure_logging("WARNING")
    predictor = _demo_predictor(model_dir, corpus)
    return asyncio.run(_demo(predictor, model_dir, metrics_port, keep_running=keep_running))


def _demo_predictor(model_dir: Path, corpus: Path) -> Predictor:
    if (model_dir / "model.json").is_file():
        try:
            return Predictor.load(model_dir)
        except ModelError as error:
            _say(f"existing demo model not usable ({error}); training it again")
    _say(f"training the demo model from {corpus} ...")
    trained = train(load_labelled([corpus]).records, name="demo")
    save_artifact(trained, model_dir)
    _say(f"demo model written to {model_dir}")
    return Predictor.load(model_dir)


async def _demo(
    predictor: Predictor, model_dir: Path, metrics_port: int, *, keep_running: bool
) -> int:
    with EmbeddedBroker() as broker:
        _say(f"embedded Kafka-protocol broker (tansu) listening on {broker.bootstrap_servers}")
        settings = ServeSettings(
            bootstrap_servers=broker.bootstrap_servers,
            model=model_dir,
            metrics_host="127.0.0.1",
            metrics_port=metrics_port,
            group_id="article-classifier-demo",
            max_event_bytes=DEMO_MAX_EVENT_BYTES,
        )
        await ensure_topics(
            broker.bootstrap_servers,
            {settings.input_topic: 3, settings.output_topic: 3, settings.dead_letter_topic: 1},
        )
        stop = asyncio.Event()
        service = asyncio.create_task(run_service(settings, predictor=predictor, stop=stop))
        try:
            samples = SAMPLE_ARTICLES.read_bytes().splitlines()
            arrived = await _publish_and_watch(settings, samples)
            expected = len(samples) + len(INVALID_EVENTS)
            _say(f"\n{arrived} of {expected} records came back through Kafka")
            await asyncio.to_thread(_show_metrics, settings.metrics_port)
            if keep_running:
                _say("service still running; press Ctrl-C to stop")
                await asyncio.Event().wait()
            return 0 if arrived == expected else 1
        finally:
            stop.set()
            status = await service
            _say(f"service stopped (exit status {status})")


async def _publish_and_watch(settings: ServeSettings, samples: Sequence[bytes]) -> int:
    consumer = AIOKafkaConsumer(
        settings.output_topic,
        settings.dead_letter_topic,
        bootstrap_servers=settings.bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers, acks="all", max_request_size=4 * 1024 * 1024
    )
    await consumer.start()
    await producer.start()
    try:
        _say(
            f"publishing {len(samples)} sample articles and {len(INVALID_EVENTS)} broken events "
            f"to '{settings.input_topic}'\n"
        )
        for value in samples:
            key = json.loads(value)["article_id"].encode()
            await producer.send(settings.input_topic, value, key=key)
        for key, value in INVALID_EVENTS:
            await producer.send(settings.input_topic, value, key=key)
        await producer.flush()
        return await _watch(consumer, settings, len(samples) + len(INVALID_EVENTS))
    finally:
        await producer.stop()
        await consumer.stop()


async def _watch(consumer: AIOKafkaConsumer, settings: ServeSettings, expected: int) -> int:
    arrived = 0
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(ARRIVAL_TIMEOUT_S):
            while arrived < expected:
                batches = await consumer.getmany(timeout_ms=500)
                for records in batches.values():
                    for record in records:
                        arrived += 1
                        if record.topic == settings.output_topic:
                            _say(_describe_classified(record))
                        else:
                            _say(_describe_dead_letter(record))
    return arrived


def _describe_classified(record: ConsumerRecord[bytes, bytes]) -> str:
    output = json.loads(record.value)
    classification = output["classification"]
    section = classification["section"]
    tags = ", ".join(f"{tag['label']} {tag['score']:.2f}" for tag in classification["tags"]) or "-"
    heading = f"{section['label']} {section['score']:.2f}" if section else "-"
    return (
        f"  classified  {output['article_id']:<12} {heading:<18} tags: {tags:<40} "
        f"| {output.get('title', '')[:60]}"
    )


def _describe_dead_letter(record: ConsumerRecord[bytes, bytes]) -> str:
    headers = {name: value.decode("utf-8", "replace") for name, value in record.headers}
    key = (record.key or b"").decode("utf-8", "replace")
    return f"  dead letter {key:<12} [{headers.get('error.reason')}] {headers.get('error.message')}"


def _show_metrics(port: int) -> None:
    url = f"http://127.0.0.1:{port}/metrics"
    _say(
        f"metrics: {url}   health: http://127.0.0.1:{port}/healthz   ready: http://127.0.0.1:{port}/readyz"
    )
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode("utf-8")
    for line in text.splitlines():
        if line.startswith(_SHOWN_METRICS):
            _say(f"  {line}")


def _say(message: str) -> None:
    print(message, file=sys.stdout, flush=True)
