"""The running service consumes editor feedback beside the articles, through the broker."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    Topics,
    article_records,
    consume,
    make_settings,
    produce,
    running_service,
    settle,
    wait_for,
)
from prometheus_client import CollectorRegistry

from devtools.tansu import EmbeddedBroker, ensure_topics
from service.feedback.quality import QualityTracker

pytestmark = pytest.mark.kafka

BAD_FEEDBACK: list[tuple[str, bytes, bytes | None]] = [
    ("invalid_utf8", b"fb-utf8", b'{"article_id": "caf\xe9"}'),
    ("invalid_json", b"fb-json", b'{"article_id": "fb-json",'),
    ("schema_violation", b"fb-schema", b'{"article_id": "fb-schema", "section": "sport"}'),
    ("schema_violation", b"fb-tombstone", None),
    ("too_large", b"fb-large", json.dumps({"article_id": "x" * 70_000}).encode()),
]


def _feedback(article_id: str, predictor: Any, **fields: Any) -> tuple[bytes, bytes]:
    payload = {
        "article_id": article_id,
        "model_version": predictor.version,
        "editor": "ed-1",
        "corrected_at": "2026-11-20T08:00:00Z",
        **fields,
    }
    return article_id.encode(), json.dumps(payload).encode()


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(f"article_classifier_{name}", labels) or 0.0


async def _feedback_topic(broker: EmbeddedBroker, topics: Topics) -> str:
    name = f"fb-{topics.input}"
    await ensure_topics(broker.bootstrap_servers, {name: 2})
    return name


async def test_verdicts_update_quality_metrics_and_bad_feedback_is_dead_lettered(
    broker: EmbeddedBroker, topics: Topics, model_dir: Path, predictor: Any
) -> None:
    """Valid feedback moves the agreement, tag and correction counters of the model version
    the editor saw; each bad record becomes one dead letter with the usual headers; the
    articles flow meanwhile."""
    feedback_topic = await _feedback_topic(broker, topics)
    section, other = predictor.sections[0], predictor.sections[1]
    tag, added = predictor.tags[0], predictor.tags[1]
    valid = [
        _feedback("fb-1", predictor, predicted_section=section, section=section),
        _feedback("fb-2", predictor, predicted_section=section, section=other),
        _feedback("fb-3", predictor, predicted_tags=[tag], tags=[tag, added]),
        _feedback("fb-4", predictor, predicted_tags=[tag], tags=[]),
    ]
    bad = [(key, value) for _, key, value in BAD_FEEDBACK]
    await produce(broker.bootstrap_servers, feedback_topic, [*bad[:2], *valid, *bad[2:]])
    articles = article_records(20, prefix="with-feedback")
    await produce(broker.bootstrap_servers, topics.input, articles)
    settings = make_settings(
        broker.bootstrap_servers, topics, model_dir, feedback_topic=feedback_topic
    )
    version = predictor.version
    async with running_service(settings, predictor) as service:
        registry = service.registry
        await wait_for(
            lambda: (
                _value(registry, "corrections_total", model_version=version) == len(valid)
                and _value(registry, "feedback_records_total") == len(valid) + len(bad)
                and sum(
                    _value(registry, "feedback_dead_letters_total", reason=reason)
                    for reason in {reason for reason, _, _ in BAD_FEEDBACK}
                )
                == len(bad)
            ),
            timeout_s=60,
        )
        outputs = await consume(broker.bootstrap_servers, topics.output, len(articles))
        assert _value(registry, "feedback_consumer_running") == 1
    assert len(outputs) == len(articles)
    sections = {"model_version": version, "section": section}
    assert _value(registry, "feedback_section_total", **sections, outcome="agreed") == 1
    assert _value(registry, "feedback_section_total", **sections, outcome="corrected") == 1
    tags = {"model_version": version, "tag": tag}
    assert _value(registry, "feedback_tag_total", **tags, outcome="true_positive") == 1
    assert _value(registry, "feedback_tag_total", **tags, outcome="false_positive") == 1
    missed = {"model_version": version, "tag": added, "outcome": "false_negative"}
    assert _value(registry, "feedback_tag_total", **missed) == 1

    dead = await settle(broker.bootstrap_servers, topics.dead_letter, len(bad))
    assert len(dead) == len(bad)
    by_key = {record.key: record for record in dead}
    for reason, key, value in BAD_FEEDBACK:
        letter = by_key[key]
        headers = dict(letter.headers)
        assert letter.value == value
        assert headers["error.reason"] == reason.encode()
        assert headers["error.message"]
        assert headers["source.topic"] == feedback_topic.encode()
        assert int(headers["source.partition"]) in range(2)


async def test_feedback_offsets_are_committed_in_their_own_group(
    broker: EmbeddedBroker, topics: Topics, model_dir: Path, predictor: Any
) -> None:
    """After a clean stop, a restarted service does not count the same verdicts again: the
    feedback group <group-id>.feedback committed them."""
    feedback_topic = await _feedback_topic(broker, topics)
    records = [_feedback(f"c-{i}", predictor, section="sport") for i in range(5)]
    await produce(broker.bootstrap_servers, feedback_topic, records)
    settings = make_settings(
        broker.bootstrap_servers, topics, model_dir, feedback_topic=feedback_topic
    )
    version = predictor.version
    async with running_service(settings, predictor) as first:
        await wait_for(
            lambda: _value(first.registry, "corrections_total", model_version=version) == 5,
            timeout_s=60,
        )
    await produce(broker.bootstrap_servers, feedback_topic, records[:1])
    async with running_service(settings, predictor) as second:
        await wait_for(
            lambda: _value(second.registry, "corrections_total", model_version=version) >= 1,
            timeout_s=60,
        )
        await wait_for(lambda: _value(second.registry, "feedback_consumer_running") == 1)
    assert _value(second.registry, "corrections_total", model_version=version) == 1


async def test_a_failing_feedback_loop_never_stops_the_article_pipeline(
    broker: EmbeddedBroker,
    topics: Topics,
    model_dir: Path,
    predictor: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A bug in the feedback path restarts only the feedback session (cause error, with a
    backoff); every article is still classified and published."""

    def broken(self: QualityTracker, feedback: Any) -> None:
        raise RuntimeError("bug in the quality metrics")

    monkeypatch.setattr(QualityTracker, "record", broken)
    feedback_topic = await _feedback_topic(broker, topics)
    await produce(
        broker.bootstrap_servers, feedback_topic, [_feedback("boom", predictor, section="x")]
    )
    articles = article_records(30, prefix="despite-feedback")
    await produce(broker.bootstrap_servers, topics.input, articles)
    settings = make_settings(
        broker.bootstrap_servers, topics, model_dir, feedback_topic=feedback_topic
    )
    async with running_service(settings, predictor) as service:
        await wait_for(
            lambda: _value(service.registry, "feedback_session_restarts_total", cause="error") >= 2,
            timeout_s=60,
        )
        outputs = await consume(broker.bootstrap_servers, topics.output, len(articles))
        assert not service.task.done()
    assert len(outputs) == len(articles)
    assert service.task.result() == 0


async def test_an_empty_feedback_topic_turns_the_consumer_off(
    broker: EmbeddedBroker, topics: Topics, model_dir: Path, predictor: Any
) -> None:
    """With --feedback-topic "" no feedback consumer runs and the articles still flow."""
    articles = article_records(5, prefix="no-feedback")
    await produce(broker.bootstrap_servers, topics.input, articles)
    settings = make_settings(broker.bootstrap_servers, topics, model_dir, feedback_topic="")
    async with running_service(settings, predictor) as service:
        outputs = await consume(broker.bootstrap_servers, topics.output, len(articles))
        assert _value(service.registry, "feedback_consumer_running") == 0
        assert _value(service.registry, "feedback_session_restarts_total", cause="broker") == 0
    assert len(outputs) == len(articles)
