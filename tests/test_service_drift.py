"""Explanations and drift gauges from a running service, against the embedded broker."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    Record,
    Topics,
    consume,
    demo_texts,
    http_get,
    make_settings,
    produce,
    running_service,
    wait_for,
)
from prometheus_client.parser import text_string_to_metric_families

from devtools.tansu import EmbeddedBroker
from schemas import ArticleEvent, ClassifiedArticleEvent
from service.config.options import (
    WorkerKind,
)

pytestmark = pytest.mark.kafka

WINDOW = 100
GERMAN = [
    (
        "Gemeinderat beschließt neue Straßenbahnlinie",
        "Der Gemeinderat hat am Dienstag beschlossen, die Straßenbahn bis zum Bahnhof zu "
        "verlängern. Die Bauarbeiten sollen im Frühjahr beginnen und zwei Jahre dauern.",
    ),
    (
        "Überschwemmungen im Süden: Hunderte Häuser geräumt",
        "Nach tagelangem Regen sind mehrere Flüsse über die Ufer getreten. Feuerwehr und "
        "Hilfsdienste brachten die Bewohner in Sicherheit; Schulen bleiben geschlossen.",
    ),
    (
        "Bäckerei gewinnt Preis für das beste Vollkornbrot",
        "Eine kleine Bäckerei aus dem Dorf wurde von der Innung ausgezeichnet. Der Meister "
        "backt seit dreißig Jahren nach dem Rezept seiner Großmutter.",
    ),
]


def _in_domain(count: int) -> list[Record]:
    texts = demo_texts()
    random.Random(7).shuffle(texts)
    return _records("in", texts[:count])


def _out_of_domain(count: int) -> list[Record]:
    """Half made-up words, half German news."""
    rng = random.Random(11)
    texts = []
    for index in range(count):
        if index % 2:
            texts.append(GERMAN[index % len(GERMAN)])
            continue
        words = [
            "".join(rng.choice("bcdfghjklmnpqrstvwxz") + rng.choice("aeiouy") for _ in range(3))
            for _ in range(40)
        ]
        texts.append((" ".join(words[:6]).capitalize(), " ".join(words) + "."))
    return _records("ood", texts)


def _records(prefix: str, texts: list[tuple[str, str]]) -> list[Record]:
    return [
        (
            f"{prefix}-{i}".encode(),
            json.dumps({"article_id": f"{prefix}-{i}", "title": title, "body": body}).encode(),
        )
        for i, (title, body) in enumerate(texts)
    ]


async def _metrics(port: int) -> dict[str, float]:
    status, body = await http_get(port, "/metrics")
    assert status == 200
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
        # Unlabelled series, and the drift series of the one (default) model.
        if sample.labels in ({}, {"language": "default"})
    }


async def _after(port: int, classified: int) -> dict[str, float]:
    """The metrics once ``classified`` articles have been classified."""
    found: dict[str, float] = {}

    async def done() -> bool:
        found.update(await _metrics(port))
        return found.get("article_classifier_articles_classified_total", 0) >= classified

    await wait_for(done, timeout_s=60)
    return found


def _drift(metrics: dict[str, float]) -> dict[str, float]:
    prefix = "article_classifier_drift_"
    return {name.removeprefix(prefix): v for name, v in metrics.items() if name.startswith(prefix)}


@pytest.mark.parametrize("kind", [WorkerKind.THREAD, WorkerKind.PROCESS])
async def test_out_of_domain_text_moves_the_drift_gauges_and_outputs_are_explained(
    broker: EmbeddedBroker, topics: Topics, model_dir: Path, predictor: Any, kind: WorkerKind
) -> None:
    """In-domain articles keep the gauges near the training data; the same number of made-up
    and German articles then fill the window and move every gauge; with --explain 3 each
    output carries the predictor's own explanations."""
    in_domain, out_of_domain = _in_domain(WINDOW), _out_of_domain(WINDOW)
    settings = make_settings(
        broker.bootstrap_servers,
        topics,
        model_dir,
        drift_window=WINDOW,
        explain=3,
        classify_in=kind,
    )
    # A given predictor always runs in a thread; the process mode loads model_dir itself.
    given = predictor if kind is WorkerKind.THREAD else None
    async with running_service(settings, given) as service:
        await produce(broker.bootstrap_servers, topics.input, in_domain)
        before = _drift(await _after(service.port, WINDOW))
        await produce(broker.bootstrap_servers, topics.input, out_of_domain)
        after = _drift(await _after(service.port, 2 * WINDOW))
        outputs = await consume(broker.bootstrap_servers, topics.output, 2 * WINDOW)

    assert before["window_articles"] == after["window_articles"] == WINDOW
    assert before["training_tags_per_article"] == pytest.approx(predictor.baseline.tags_per_article)
    # The demo vocabulary keeps words seen in two training articles or more: 15% of the
    # training text's own tokens fall outside it.
    assert before["unknown_token_share"] < 0.25
    assert after["unknown_token_share"] > 0.9
    assert before["section_divergence"] < 0.05
    assert after["section_divergence"] > 0.3
    assert before["mean_section_score"] > 0.9
    assert after["mean_section_score"] < before["mean_section_score"] - 0.3
    assert after["mean_tags_per_article"] < before["mean_tags_per_article"] / 2

    assert len(outputs) == 2 * WINDOW
    for record in outputs:
        event = ClassifiedArticleEvent.model_validate_json(record.value)
        source = ArticleEvent(article_id=event.article_id, title=event.title, body=event.body)
        (expected,) = predictor.predict([source], explain=3)
        assert event.classification == expected
        assert event.classification.explanations is not None
