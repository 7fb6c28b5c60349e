"""Interoperability and observability: librdkafka clients, and the HTTP endpoints."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any, cast

import pytest
from conftest import (
    Topics,
    article_records,
    consume,
    consume_with_librdkafka,
    http_get,
    make_settings,
    produce,
    produce_with_librdkafka,
    running_service,
)

from devtools.tansu import EmbeddedBroker
from schemas import ClassifiedArticleEvent

pytestmark = pytest.mark.kafka


async def test_librdkafka_clients_round_trip(
    broker: EmbeddedBroker, topics: Topics, model_dir: Path, predictor: Any
) -> None:
    """Events produced with librdkafka come back classified to a librdkafka consumer."""
    records = article_records(40, prefix="rdkafka")
    bootstrap = broker.bootstrap_servers
    await asyncio.to_thread(produce_with_librdkafka, bootstrap, topics.input, records)
    async with running_service(make_settings(bootstrap, topics, model_dir), predictor):
        outputs = await asyncio.to_thread(
            consume_with_librdkafka, bootstrap, topics.output, f"{topics.group}-reader", 40
        )
    received_keys = [cast(bytes, message.key()) for message in outputs]
    assert sorted(received_keys) == sorted(cast(bytes, key) for key, _ in records)
    for message in outputs:
        event = ClassifiedArticleEvent.model_validate_json(message.value())
        assert message.key() == event.article_id.encode()


def _sample(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


async def test_health_readiness_and_metrics_over_http(
    broker: EmbeddedBroker, topics: Topics, model_dir: Path, predictor: Any
) -> None:
    """/healthz and /readyz answer 200 when running, and /metrics counts what was sent."""
    bootstrap = broker.bootstrap_servers
    records = [*article_records(30, prefix="http"), (b"broken", b"{not json")]
    await produce(bootstrap, topics.input, records)
    async with running_service(make_settings(bootstrap, topics, model_dir), predictor) as svc:
        await consume(bootstrap, topics.output, 30)
        await consume(bootstrap, topics.dead_letter, 1)
        status, body = await http_get(svc.port, "/healthz")
        assert status == 200
        status, body = await http_get(svc.port, "/readyz")
        assert status == 200, body
        assert json.loads(body)["checks"] == {
            "model_loaded": True,
            "broker_reachable": True,
            "consumer_in_group": True,
            "breaker_closed": True,
            "topics_exist": True,
            "access_granted": True,
            "schema_registry_reachable": True,
        }
        assert (await http_get(svc.port, "/nope"))[0] == 404
        deadline = time.monotonic() + 10
        while True:
            status, metrics = await http_get(svc.port, "/metrics")
            published = _sample(metrics, "article_classifier_articles_published_total")
            if published == 30 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
    assert status == 200
    assert published == 30
    assert _sample(metrics, "article_classifier_records_consumed_total") == 31
    assert _sample(metrics, "article_classifier_articles_classified_total") == 30
    assert _sample(metrics, 'article_classifier_dead_letters_total{reason="invalid_json"}') == 1
    assert _sample(metrics, "article_classifier_batch_size_count") >= 1
    assert _sample(metrics, "article_classifier_end_to_end_latency_seconds_count") == 30
    assert _sample(metrics, "article_classifier_tags_per_article_count") == 30
    assert _sample(metrics, "article_classifier_ready") == 1
    assert f'version="{predictor.version}"' in metrics
    assert "article_classifier_in_flight_records" in metrics
    predictions = [
        line
        for line in metrics.splitlines()
        if line.startswith("article_classifier_predictions_total{")
    ]
    assert sum(float(line.rsplit(" ", 1)[1]) for line in predictions) == 30
