"""Live quality metrics from editor verdicts, without a broker: counts and bounded series."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaTimeoutError, MessageSizeTooLargeError
from conftest import serve_settings, wait_for
from prometheus_client import CollectorRegistry

from devtools.tansu import free_port
from schemas import ArticleFeedback
from service.config.commands import (
    ConfigError,
    ServeSettings,
)
from service.feedback.consumer import FeedbackConsumer, quality_tracker
from service.feedback.quality import QualityTracker, manifest_labels, serving_labels
from service.observe.metrics import ServiceMetrics

SECTIONS = ("business", "politics", "sport")
TAGS = ("uk", "usa", "elections")


def _feedback(**fields: Any) -> ArticleFeedback:
    values: dict[str, Any] = {
        "article_id": "a-1",
        "model_version": "v1",
        "corrected_at": "2026-11-20T08:00:00Z",
        **fields,
    }
    return ArticleFeedback.model_validate(values)


def _tracker(max_versions: int = 5) -> tuple[QualityTracker, CollectorRegistry]:
    registry = CollectorRegistry()
    tracker = QualityTracker(
        ServiceMetrics(registry), sections=SECTIONS, tags=TAGS, max_versions=max_versions
    )
    return tracker, registry


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(f"article_classifier_{name}", labels)


def _series(registry: CollectorRegistry, name: str) -> list[dict[str, str]]:
    return [
        sample.labels
        for metric in registry.collect()
        for sample in metric.samples
        if sample.name == f"article_classifier_{name}"
    ]


def test_section_agreement_counts_kept_and_changed_sections_per_version() -> None:
    """A kept section counts as agreed, a changed one as corrected, under the predicted
    section and the version the editor saw; a verdict without prediction counts only once."""
    tracker, registry = _tracker()
    tracker.record(_feedback(predicted_section="business", section="business"))
    tracker.record(_feedback(predicted_section="business", section="politics"))
    tracker.record(_feedback(predicted_section="business", section="business"))
    tracker.record(_feedback(model_version=None, section="sport"))
    assert _value(registry, "corrections_total", model_version="v1") == 3
    assert _value(registry, "corrections_total", model_version="none") == 1
    agreed = {"model_version": "v1", "section": "business", "outcome": "agreed"}
    corrected = {**agreed, "outcome": "corrected"}
    assert _value(registry, "feedback_section_total", **agreed) == 2
    assert _value(registry, "feedback_section_total", **corrected) == 1
    assert len(_series(registry, "feedback_section_total")) == 2


def test_tag_verdicts_give_true_and_false_positives_and_false_negatives() -> None:
    """Given and kept is a true positive, given and removed a false positive, added a false
    negative; tags outside the model's label set count as _other."""
    tracker, registry = _tracker()
    tracker.record(
        _feedback(predicted_tags=["uk", "usa"], tags=["uk", "elections", "brand-new-tag"])
    )
    tracker.record(_feedback(predicted_tags=["uk"], tags=[]))
    tracker.record(_feedback(tags=["usa"]))  # nothing predicted: no tag verdict
    expected = {
        ("uk", "true_positive"): 1,
        ("uk", "false_positive"): 1,
        ("usa", "false_positive"): 1,
        ("elections", "false_negative"): 1,
        ("_other", "false_negative"): 1,
    }
    for (tag, outcome), count in expected.items():
        labels = {"model_version": "v1", "tag": tag, "outcome": outcome}
        assert _value(registry, "feedback_tag_total", **labels) == count, (tag, outcome)
    assert len(_series(registry, "feedback_tag_total")) == len(expected)


def test_series_of_the_oldest_version_are_removed_past_the_bound() -> None:
    """With max_versions=2, a third version removes every series of the least recently seen
    one, so a flood of versions (or of forged ones) cannot grow the series without bound."""
    tracker, registry = _tracker(max_versions=2)
    for version in ("v1", "v2", "v1", "v3"):
        tracker.record(
            _feedback(
                model_version=version,
                predicted_section="sport",
                section="sport",
                predicted_tags=["uk"],
                tags=["uk"],
            )
        )
    assert tracker.versions == ["v1", "v3"]
    for name in ("corrections_total", "feedback_section_total", "feedback_tag_total"):
        versions = {labels["model_version"] for labels in _series(registry, name)}
        assert versions == {"v1", "v3"}, name
    assert _value(registry, "corrections_total", model_version="v1") == 2


def test_label_set_comes_from_the_predictor_or_the_manifest(
    model_dir: Path, predictor: Any
) -> None:
    """The tracker knows the loaded model's sections and tags, read from the manifest when the
    model lives in a worker process; an unreadable manifest leaves every label _other."""
    sections, tags = manifest_labels(model_dir)
    assert sorted(sections) == sorted(predictor.sections)
    assert sorted(tags) == sorted(predictor.tags)
    assert manifest_labels(model_dir / "missing") == ([], [])
    settings = ServeSettings(model=model_dir, feedback_max_versions=1)
    registry = CollectorRegistry()
    tracker = quality_tracker(settings, ServiceMetrics(registry))
    tracker.record(_feedback(predicted_tags=[predictor.tags[0]], tags=[]))
    labels = {"model_version": "v1", "tag": predictor.tags[0], "outcome": "false_positive"}
    assert _value(registry, "feedback_tag_total", **labels) == 1


async def test_an_unreachable_broker_is_retried_with_backoff_until_stopped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """With no broker listening, the feedback loop logs, counts restarts (cause broker) and
    keeps retrying; a stop ends it promptly."""
    settings = ServeSettings(model=tmp_path, bootstrap_servers=f"127.0.0.1:{free_port()}")
    registry = CollectorRegistry()
    metrics = ServiceMetrics(registry)
    consumer = FeedbackConsumer(settings, metrics, QualityTracker(metrics))
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))

    def restarts() -> float:
        return _value(registry, "feedback_session_restarts_total", cause="broker") or 0.0

    await wait_for(lambda: restarts() >= 2, timeout_s=60)
    assert not task.done()
    assert _value(registry, "feedback_consumer_running") == 0
    stop.set()
    await asyncio.wait_for(task, 30)
    assert "feedback session failed on the broker; retrying" in caplog.text


def _settings(*argv: str, env: dict[str, str] | None = None) -> ServeSettings:
    return serve_settings("--model", "m", *argv, env=env)


def test_feedback_options_default_on_turn_off_when_empty_and_refuse_a_shared_topic() -> None:
    """The feedback consumer reads articles.feedback in <group-id>.feedback by default; an
    empty topic (flag or environment) turns it off; it may not share a pipeline topic."""
    default = _settings("--group-id", "newsroom")
    assert default.feedback_topic == "articles.feedback"
    assert default.feedback_group_id == "newsroom.feedback"
    assert default.feedback_max_versions == 5
    assert _settings("--feedback-topic", "").feedback_topic == ""
    assert _settings(env={"ARTICLE_CLASSIFIER_FEEDBACK_TOPIC": ""}).feedback_topic == ""
    with pytest.raises(ConfigError, match="--feedback-topic='articles'"):
        _settings("--feedback-topic", "articles")
    with pytest.raises(ConfigError, match="--feedback-max-versions='0'"):
        _settings("--feedback-max-versions", "0")


@dataclass
class _Record:
    key: bytes | None
    value: bytes | None
    topic: str = "feedback"
    partition: int = 0
    offset: int = 0
    headers: tuple[tuple[str, bytes | None], ...] = ()


class _Producer:
    """Acknowledges dead letters up to ``limit`` bytes of value; refuses larger ones the way
    a topic's max.message.bytes does, or fails every send with ``failure``."""

    def __init__(self, limit: int, failure: Exception | None = None) -> None:
        self.limit = limit
        self.failure = failure
        self.sent: list[tuple[bytes | None, dict[str, bytes]]] = []

    async def send(
        self, topic: str, *, key: bytes | None, value: bytes | None, headers: Any
    ) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.failure is not None:
            future.set_exception(self.failure)
        elif len(value or b"") > self.limit:
            future.set_exception(MessageSizeTooLargeError())
        else:
            self.sent.append((value, dict(headers)))
            future.set_result(None)
        return future

    async def send_and_wait(self, topic: str, **kwargs: Any) -> None:
        await (await self.send(topic, **kwargs))


def _fetched(*values: bytes | None) -> dict[TopicPartition, list[Any]]:
    records = [_Record(b"k", value, offset=index) for index, value in enumerate(values)]
    return {TopicPartition("feedback", 0): records}


VERDICT = b'{"article_id": "a", "section": "sport", "corrected_at": "2026-11-20T08:00:00Z"}'
SMALL_BAD = b'{"article_id": "a"}'
LARGE_BAD = b" " * 70_000


async def test_a_dead_letter_the_topic_refuses_goes_on_without_its_value(tmp_path: Path) -> None:
    """A bad record too large for the dead-letter topic is forwarded with its headers, no
    value and error.value_dropped; if even that is refused it is logged and skipped; any
    other send failure fails the batch (the session restarts and nothing is committed)."""
    registry = CollectorRegistry()
    metrics = ServiceMetrics(registry)
    consumer = FeedbackConsumer(ServeSettings(model=tmp_path), metrics, QualityTracker(metrics))
    producer = _Producer(limit=10_000)
    await consumer._handle(_fetched(VERDICT, SMALL_BAD, LARGE_BAD), producer)
    assert [(value, headers["error.reason"]) for value, headers in producer.sent] == [
        (SMALL_BAD, b"schema_violation"),
        (None, b"too_large"),
    ]
    assert producer.sent[1][1]["error.value_dropped"] == b"70000"
    assert _value(registry, "corrections_total", model_version="none") == 1
    assert _value(registry, "feedback_dead_letters_total", reason="too_large") == 1

    refusing = _Producer(limit=-1)
    await consumer._handle(_fetched(SMALL_BAD), refusing)
    assert refusing.sent == []
    assert _value(registry, "feedback_dead_letters_total", reason="schema_violation") == 1

    failing = _Producer(limit=10_000, failure=KafkaTimeoutError())
    with pytest.raises(KafkaTimeoutError):
        await consumer._handle(_fetched(SMALL_BAD), failing)


def test_labels_of_each_language_model_and_of_a_swapped_in_model_count_by_name(
    model_dir: Path, tmp_path: Path
) -> None:
    """With ``--model de=DIR`` the German model's labels are series of their own, not
    ``_other``; labels of a model swapped in later join the set (``serving_labels``)."""
    german = tmp_path / "de"
    german.mkdir()
    (german / "model.json").write_text(
        json.dumps({"sections": ["inland"], "tags": ["bundesliga"]}), encoding="utf-8"
    )
    settings = serve_settings("--model", str(model_dir), "--model", f"de={german}")
    registry = CollectorRegistry()
    tracker = quality_tracker(settings, ServiceMetrics(registry))
    verdict = {"predicted_tags": ["bundesliga"], "tags": ["bundesliga", "wahl"]}
    tracker.record(
        _feedback(model_version="de-1", predicted_section="inland", section="inland", **verdict)
    )
    agreed = {"model_version": "de-1", "section": "inland", "outcome": "agreed"}
    assert _value(registry, "feedback_section_total", **agreed) == 1
    kept = {"model_version": "de-1", "tag": "bundesliga", "outcome": "true_positive"}
    assert _value(registry, "feedback_tag_total", **kept) == 1
    unknown = {"model_version": "de-1", "tag": "_other", "outcome": "false_negative"}
    assert _value(registry, "feedback_tag_total", **unknown) == 1

    (german / "model.json").write_text(
        json.dumps({"sections": ["inland"], "tags": ["bundesliga", "wahl"]}), encoding="utf-8"
    )
    tracker.add_labels(*serving_labels([model_dir, german]))
    tracker.record(_feedback(model_version="de-2", **verdict))
    added = {"model_version": "de-2", "tag": "wahl", "outcome": "false_negative"}
    assert _value(registry, "feedback_tag_total", **added) == 1
