"""``--section-floor`` end to end: options, model loading, the counter, classify and serve."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from conftest import (
    Broker,
    Topics,
    article_records,
    consume,
    make_settings,
    produce,
    running_service,
    serve_settings,
)
from prometheus_client import CollectorRegistry

from schemas import Classification, LabelScore, ModelRef
from service.commands.offline import run_classify
from service.commands.wiring import model_spec, trust_policy
from service.config.commands import ConfigError
from service.core.records import BatchResult, Verdict
from service.models.loading import load_models
from service.observe.batches import BatchMetrics
from service.observe.metrics import ServiceMetrics

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_ARTICLES = ROOT / "model" / "samples" / "articles.jsonl"


def _sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def test_the_floor_is_an_option_of_serve_within_0_and_1(tmp_path: Path) -> None:
    """``--section-floor`` (and its variable) reach the settings; outside 0..1 is refused."""
    assert serve_settings("--model", str(tmp_path)).section_floor is None
    assert serve_settings("--model", str(tmp_path), "--section-floor", "0.4").section_floor == 0.4
    env = {"ARTICLE_CLASSIFIER_SECTION_FLOOR": "0.25"}
    assert serve_settings("--model", str(tmp_path), env=env).section_floor == 0.25
    with pytest.raises(ConfigError, match="section-floor"):
        serve_settings("--model", str(tmp_path), "--section-floor", "1.5")


def test_the_model_spec_carries_the_floor_into_the_loaded_predictor(model_dir: Path) -> None:
    """The composition root's spec loads the predictor with the configured floor."""
    settings = serve_settings("--model", str(model_dir), "--section-floor", "0.7")
    spec = model_spec(settings, trust_policy(settings), section_floor=settings.section_floor)
    loaded = load_models(spec)
    assert getattr(loaded.primary, "section_floor", None) == 0.7


def test_uncertain_sections_are_counted_by_section() -> None:
    """A verdict of a flagged section counts once under its section; others do not count."""
    ref = ModelRef(name="m", version="1")
    flagged = Verdict.of(
        Classification(
            section=LabelScore(label="sport", score=0.3, uncertain=True), tags=[], model=ref
        )
    )
    sure = Verdict.of(
        Classification(
            section=LabelScore(label="sport", score=0.9, uncertain=False), tags=[], model=ref
        )
    )
    plain = Verdict.of(
        Classification(section=LabelScore(label="world", score=0.2), tags=[], model=ref)
    )
    assert (flagged.uncertain, sure.uncertain, plain.uncertain) == (True, False, False)
    registry = CollectorRegistry()
    metrics = ServiceMetrics(registry)
    metrics.show_sections(("sport", "world"))
    BatchMetrics(metrics, 0.5).on_classified(BatchResult(verdicts=[flagged, sure, plain, flagged]))
    name = "article_classifier_uncertain_sections_total"
    assert _sample(registry, name, section="sport", language="default") == 2
    assert registry.get_sample_value(name, {"section": "world", "language": "default"}) == 0


def test_classify_flags_every_section_under_the_floor(model_dir: Path) -> None:
    """The offline classify command writes ``uncertain`` on each section with a floor, and
    leaves it out without one."""
    runs = {}
    for floor in (None, 1.0):
        sink = io.BytesIO()
        with SAMPLE_ARTICLES.open("rb") as source:
            status = run_classify(
                model_dir,
                source,
                sink,
                strict=True,
                max_event_bytes=1 << 20,
                stderr=io.StringIO(),
                section_floor=floor,
            )
        assert status == 0
        runs[floor] = [json.loads(line) for line in sink.getvalue().splitlines()]
    assert all("uncertain" not in out["classification"]["section"] for out in runs[None])
    assert all(out["classification"]["section"]["uncertain"] is True for out in runs[1.0])


@pytest.mark.kafka
async def test_serve_flags_and_counts_sections_under_the_floor(
    broker: Broker, topics: Topics, model_dir: Path
) -> None:
    """Through serve: with a floor of 1.0 every output section is ``uncertain: true`` and
    the counter adds up to the articles classified."""
    settings = make_settings(broker.bootstrap_servers, topics, model_dir, section_floor=1.0)
    count = 12
    async with running_service(settings, None) as service:
        await produce(broker.bootstrap_servers, topics.input, article_records(count))
        outputs = await consume(broker.bootstrap_servers, topics.output, count)
    values = [json.loads(record.value) for record in outputs]
    assert len(values) == count
    assert all(value["classification"]["section"]["uncertain"] is True for value in values)
    total = sum(
        sample.value
        for metric in service.registry.collect()
        if metric.name == "article_classifier_uncertain_sections"
        for sample in metric.samples
        if sample.name.endswith("_total")
    )
    assert total == count
