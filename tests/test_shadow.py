"""Shadow scoring: a candidate model scores the same articles, and only metrics (and the
optional shadow topic) see its results; it can be promoted by a swap."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from aiokafka.errors import KafkaError
from conftest import (
    DEMO_CORPUS,
    Topics,
    article_records,
    make_settings,
    produce,
    running_service,
    settle,
    wait_for,
)
from prometheus_client import CollectorRegistry, generate_latest

from devtools.tansu import EmbeddedBroker, ensure_topics
from model import Predictor, TrainedModel, load_labelled, save_artifact, train
from schemas import ArticleEvent, Classification, ClassifiedArticleEvent, LabelScore, ModelRef
from service.core.classify import classify_batch
from service.core.records import Outgoing, ShadowBatch
from service.core.records import Topics as OutTopics
from service.core.shadow import CandidateScorer
from service.kafka.shadow import ShadowPublisher
from service.models.loading import ModelSpec
from service.models.workers import ProcessClassifier, WireRecord
from service.observe.metrics import ServiceMetrics
from service.observe.shadow import ShadowObserver

OUT = OutTopics(output="out", dead_letter="dlq")


class _Fixed:
    """A predictor answering each article from a table keyed by article id."""

    def __init__(self, version: str, answers: dict[str, tuple[str, list[str]]]) -> None:
        self.name, self.version = "fixed", version
        self._answers = answers

    def predict(self, articles: Sequence[ArticleEvent]) -> list[Classification]:
        ref = ModelRef(name=self.name, version=self.version)
        results = []
        for article in articles:
            section, tags = self._answers[article.article_id]
            results.append(
                Classification(
                    section=LabelScore(label=section, score=0.9),
                    tags=[LabelScore(label=tag, score=0.8) for tag in tags],
                    model=ref,
                )
            )
        return results


class _Broken:
    name, version = "broken", "b1"

    def predict(self, articles: Sequence[ArticleEvent]) -> list[Classification]:
        raise RuntimeError("candidate cannot run")


def _wire(ids: Sequence[str]) -> list[WireRecord]:
    return [
        WireRecord(
            "in",
            0,
            offset,
            1_700_000_000_000,
            key.encode(),
            b'{"article_id": "%s", "title": "t"}' % key.encode(),
        )
        for offset, key in enumerate(ids)
    ]


LIVE = _Fixed(
    "live-1",
    {"a": ("sport", ["football"]), "b": ("business", []), "c": ("politics", ["uk", "tax"])},
)
CANDIDATE = _Fixed(
    "cand-2",
    {"a": ("sport", ["football"]), "b": ("politics", ["tax"]), "c": ("politics", ["uk"])},
)


def test_the_comparison_counts_agreement_jaccard_and_flips() -> None:
    """Per batch: articles compared, sections agreeing, each article's tag Jaccard, and
    each label the candidate added or removed; the live outputs are unchanged."""
    records = [*_wire(["a", "b", "c"]), WireRecord("in", 0, 9, 0, b"bad", b"{oops")]
    plain = classify_batch(records, LIVE, topics=OUT, max_event_bytes=4096)
    shadowed = classify_batch(
        records, LIVE, topics=OUT, max_event_bytes=4096, shadow=CandidateScorer(CANDIDATE)
    )
    assert [_classification(o.value) for o in shadowed.outgoing] == [
        _classification(o.value) for o in plain.outgoing
    ]
    assert [(o.topic, o.key) for o in shadowed.outgoing] == [
        (o.topic, o.key) for o in plain.outgoing
    ]
    assert _versions(shadowed.outgoing) == {"live-1"}
    shadow = shadowed.shadow
    assert shadow is not None
    assert (shadow.model_version, shadow.shadow_version) == ("live-1", "cand-2")
    assert (shadow.articles, shadow.section_agreements, shadow.failures) == (3, 2, 0)
    assert shadow.jaccards == (1.0, 0.0, 0.5)
    assert shadow.flips == {
        ("section", "politics", "added"): 1,
        ("section", "business", "removed"): 1,
        ("tag", "tax", "added"): 1,
        ("tag", "tax", "removed"): 1,
    }
    assert shadow.outgoing == ()


def test_a_failing_candidate_never_touches_the_live_outputs() -> None:
    """A candidate that raises is counted as failing on every article; the live outputs
    are exactly those of a batch without a shadow."""
    records = _wire(["a", "b"])
    shadowed = classify_batch(
        records, LIVE, topics=OUT, max_event_bytes=4096, shadow=CandidateScorer(_Broken())
    )
    assert _versions(shadowed.outgoing) == {"live-1"}
    assert [o.topic for o in shadowed.outgoing] == ["out", "out"]
    assert shadowed.shadow is not None
    assert (shadowed.shadow.articles, shadowed.shadow.failures) == (0, 2)


def test_with_a_shadow_topic_the_candidate_outputs_follow_the_contract() -> None:
    """With --shadow-topic, each valid article also yields a candidate output record for
    that topic: same key, a valid ClassifiedArticleEvent carrying the candidate version."""
    result = classify_batch(
        _wire(["a", "b"]),
        LIVE,
        topics=OUT,
        max_event_bytes=4096,
        shadow=CandidateScorer(CANDIDATE, topic="shadow"),
    )
    assert result.shadow is not None
    items = result.shadow.outgoing
    assert [(item.topic, item.key) for item in items] == [("shadow", b"a"), ("shadow", b"b")]
    events = [ClassifiedArticleEvent.model_validate_json(item.value or b"") for item in items]
    assert {event.classification.model.version for event in events} == {"cand-2"}
    assert [o.topic for o in result.outgoing] == ["out", "out"]


def test_metrics_are_labelled_by_both_versions_and_dropped_when_one_changes() -> None:
    """The observer counts under (live version, candidate version); after a swap the old
    pair's series are removed, so label values stay bounded by the two label sets."""
    registry = CollectorRegistry()
    observer = ShadowObserver(ServiceMetrics(registry))
    batch = ShadowBatch(
        model_version="live-1",
        shadow_version="cand-2",
        articles=3,
        section_agreements=2,
        jaccards=(1.0, 0.0, 0.5),
        flips={("tag", "tax", "added"): 1},
        failures=0,
        duration_s=0.01,
    )
    observer.observe(batch)
    observer.observe(batch)
    pair = {"model_version": "live-1", "shadow_version": "cand-2"}
    sample = registry.get_sample_value
    assert sample("article_classifier_shadow_articles_total", pair) == 6
    assert sample("article_classifier_shadow_section_agreements_total", pair) == 4
    assert sample("article_classifier_shadow_tag_jaccard_sum", pair) == 3.0
    flip = {**pair, "head": "tag", "label": "tax", "change": "added"}
    assert sample("article_classifier_shadow_label_flips_total", flip) == 2
    observer.observe(ShadowBatch("live-2", "cand-2", 1, 1, (1.0,), {}, 0, 0.01))
    exposed = generate_latest(registry).decode()
    assert 'model_version="live-1"' not in exposed
    assert 'model_version="live-2"' in exposed


@pytest.fixture(scope="module")
def candidate_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A candidate trained on two thirds of the demo corpus (it disagrees now and then)."""
    records = load_labelled([DEMO_CORPUS]).records
    trained: TrainedModel = train(records[::3] + records[1::3], name="demo", version="cand")
    return save_artifact(trained, tmp_path_factory.mktemp("candidate") / "cand")


async def test_process_mode_scores_the_shadow_in_the_same_worker(
    model_dir: Path, candidate_dir: Path
) -> None:
    """In worker-process mode the candidate is loaded beside the live model and each
    batch's comparison reaches the event loop; the live outputs carry the live version."""
    seen: list[ShadowBatch] = []
    live = Predictor.load(model_dir)
    classifier = ProcessClassifier(
        model_dir,
        topics=OUT,
        max_event_bytes=1 << 20,
        log_level="INFO",
        spec=ModelSpec(model_dir, shadow=candidate_dir),
        on_shadow=seen.append,
    )
    try:
        identity = await classifier.start()
        assert classifier.models.shadow is not None
        assert classifier.models.shadow.version == "cand"
        records = [
            WireRecord("in", 0, offset, 0, key, value)
            for offset, (key, value) in enumerate(article_records(40, prefix="p"))
        ]
        result = await classifier.classify(records)
    finally:
        classifier.close()
    assert identity.version == live.version
    assert _versions(result.outgoing) == {live.version}
    assert result.shadow is None  # handed to the observer, not to the pipeline
    assert len(seen) == 1
    assert seen[0].articles == 40
    assert (seen[0].model_version, seen[0].shadow_version) == (live.version, "cand")


@pytest.mark.kafka
async def test_shadow_through_the_broker_then_promotion_by_swap(
    broker: EmbeddedBroker,
    topics: Topics,
    model_dir: Path,
    candidate_dir: Path,
    tmp_path: Path,
) -> None:
    """The candidate scores every article: the output topic carries only the live model,
    the shadow topic the candidate (same keys), the metrics count every article; then
    pointing --model at the candidate promotes it without a restart."""
    live_version = Predictor.load(model_dir).version
    link = tmp_path / "current"
    link.symlink_to(shutil.copytree(model_dir, tmp_path / "live"))
    shadow_topic = f"shadow-{topics.input}"
    await ensure_topics(broker.bootstrap_servers, {shadow_topic: 3})
    settings = make_settings(
        broker.bootstrap_servers,
        topics,
        link,
        shadow_model=candidate_dir,
        shadow_topic=shadow_topic,
        model_poll_s=0.2,
    )
    first = article_records(300, prefix="s")
    async with running_service(settings, None) as service:
        value = service.registry.get_sample_value
        pair = {"model_version": live_version, "shadow_version": "cand"}
        await produce(broker.bootstrap_servers, topics.input, first)
        outputs = await settle(broker.bootstrap_servers, topics.output, len(first))
        shadowed = await settle(broker.bootstrap_servers, shadow_topic, len(first))
        await wait_for(lambda: value("article_classifier_shadow_articles_total", pair) == 300)
        agreements = value("article_classifier_shadow_section_agreements_total", pair)
        assert agreements is not None
        assert 0 < agreements <= 300
        assert value("article_classifier_shadow_model_info", {"name": "demo", "version": "cand"})

        link.unlink()
        link.symlink_to(candidate_dir)
        await wait_for(
            lambda: value("article_classifier_model_reloads_total", {"model": "primary"}) == 1
        )
        second = article_records(30, prefix="promoted")
        await produce(broker.bootstrap_servers, topics.input, second)
        after = await settle(broker.bootstrap_servers, topics.output, len(first) + len(second))
    assert _versions_of_values(outputs) == {live_version}
    assert _versions_of_values(shadowed) == {"cand"}
    assert sorted(r.key for r in shadowed) == sorted(r.key for r in outputs)
    promoted = [r for r in after if r.key.startswith(b"promoted")]
    assert len(promoted) == 30
    assert _versions_of_values(promoted) == {"cand"}


def _versions(outgoing: Sequence[Any]) -> set[str]:
    return {
        ClassifiedArticleEvent.model_validate_json(item.value).classification.model.version
        for item in outgoing
        if item.reason is None
    }


def _versions_of_values(records: Sequence[Any]) -> set[str]:
    return {json.loads(r.value)["classification"]["model"]["version"] for r in records}


def _classification(value: bytes | None) -> object:
    if value is None or not value.startswith(b'{"article_id"'):
        return value
    return ClassifiedArticleEvent.model_validate_json(value).classification


class _RefusingProducer:
    """A producer whose every send fails (a missing topic, a broker gone)."""

    def __init__(self) -> None:
        self.started = 0

    async def start(self) -> None:
        self.started += 1

    async def stop(self) -> None:
        return None

    async def send(self, topic: str, **_: Any) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_exception(KafkaError("topic refused"))
        return future


async def test_shadow_records_that_cannot_be_sent_are_counted_not_retried() -> None:
    """The shadow topic is best effort: refused sends and batches beyond the queue are
    counted as failures, and nothing waits on them."""
    producer = _RefusingProducer()
    failed: list[int] = []
    publisher = ShadowPublisher(lambda: producer, on_failure=failed.append, queue_batches=1)
    item = Outgoing("shadow", b"k", b"{}", [], 0, 0, 0)
    try:
        publisher.submit([item, item])
        publisher.submit([item])  # the queue holds one batch: this one is dropped
        await wait_for(lambda: sum(failed) == 3)
    finally:
        await publisher.close()
    assert sorted(failed) == [1, 2]
    assert producer.started == 1
