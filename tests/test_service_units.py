"""Pure pieces of the service: settings, dead-letter headers, offsets, batch classification."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiokafka import TopicPartition
from conftest import serve_settings

from schemas import ArticleEvent, Classification, LabelScore, ModelRef
from service.config.commands import ConfigError, ServeSettings
from service.core.classify import classify_batch
from service.core.deadletter import MAX_MESSAGE_BYTES, DeadLetterReason, dead_letter_headers
from service.core.records import Topics
from service.kafka.offsets import OffsetTracker
from service.observe.logs import JsonFormatter

TP0 = TopicPartition("articles", 0)
TP1 = TopicPartition("articles", 1)


def _parse(*argv: str) -> ServeSettings:
    return serve_settings(*argv)


def test_settings_from_flags_convert_and_keep_defaults() -> None:
    """Flags arrive as strings and become typed settings; unset options keep defaults."""
    settings = _parse("--model", "m", "--batch-size", "32")
    assert settings.model == Path("m")
    assert settings.batch_size == 32
    assert settings.input_topic == "articles"
    assert settings.shutdown_timeout_s == 30
    assert settings.max_event_bytes == 1024 * 1024


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--batch-size", "zero"], "--batch-size='zero'"),
        (["--batch-size", "0"], "--batch-size='0'"),
        (["--metrics-port", "70000"], "--metrics-port='70000'"),
        (["--security-protocol", "TLS"], "--security-protocol='TLS'"),
        (["--low-confidence-threshold", "2"], "--low-confidence-threshold='2'"),
    ],
)
def test_bad_values_name_the_option_and_value(argv: list[str], named: str) -> None:
    """A bad value raises ConfigError naming the flag and the value given."""
    with pytest.raises(ConfigError, match=named.replace("[", r"\[")):
        (_parse("--model", "m", *argv))


def test_missing_model_dir_and_same_topics_are_refused() -> None:
    """The model directory is required and the three topics must differ."""
    with pytest.raises(ConfigError, match="--model"):
        (_parse())
    with pytest.raises(ConfigError, match="three different topics"):
        (_parse("--model", "m", "--output-topic", "articles"))


def test_sasl_needs_credentials_and_hides_the_password() -> None:
    """SASL without credentials is refused; the password never shows in messages."""
    with pytest.raises(ConfigError, match="SASL_SSL needs"):
        (_parse("--model", "m", "--security-protocol", "SASL_SSL"))
    settings = _parse(
        "--model",
        "m",
        "--security-protocol",
        "SASL_PLAINTEXT",
        "--sasl-mechanism",
        "PLAIN",
        "--sasl-plain-username",
        "u",
        "--sasl-plain-password",
        "hunter2",
    )
    assert "hunter2" not in repr(settings)


def test_dead_letter_headers_are_utf8_and_bounded() -> None:
    """Headers carry reason, message and source coordinates as UTF-8; long messages are cut."""
    headers = {
        name: value or b""
        for name, value in dead_letter_headers(
            DeadLetterReason.INVALID_JSON, "é" * 2000, topic="in", partition=2, offset=41
        )
    }
    assert headers["error.reason"] == b"invalid_json"
    assert headers["source.topic"] == b"in"
    assert headers["source.partition"] == b"2"
    assert headers["source.offset"] == b"41"
    assert len(headers["error.message"]) <= MAX_MESSAGE_BYTES
    headers["error.message"].decode("utf-8")


def test_each_acknowledged_batch_makes_its_offsets_committable() -> None:
    """Batches are acknowledged in fetch order: each one's next offsets become committable
    as it is, and the in-flight counts follow."""
    tracker = OffsetTracker()
    tracker.add(1, {TP0: 10, TP1: 5}, records=15)
    tracker.add(2, {TP0: 20}, records=10)
    assert tracker.in_flight_records == 25
    assert tracker.complete(1) == {TP0: 10, TP1: 5}
    assert tracker.complete(2) == {TP0: 20}
    assert (tracker.in_flight_batches, tracker.in_flight_records) == (0, 0)


def test_a_batch_acknowledged_out_of_fetch_order_is_refused() -> None:
    """Acknowledging a later batch first is a bug: refused, so nothing is committed past a
    batch that is not acknowledged yet."""
    tracker = OffsetTracker()
    tracker.add(1, {TP0: 10}, records=1)
    tracker.add(2, {TP0: 20}, records=1)
    with pytest.raises(RuntimeError, match="batch 2 acknowledged before batch 1"):
        tracker.complete(2)
    assert tracker.complete(1) == {TP0: 10}


def test_offsets_refuse_a_batch_registered_twice() -> None:
    """Registering the same batch id twice is a bug, reported at once."""
    tracker = OffsetTracker()
    tracker.add(1, {TP0: 1}, records=1)
    with pytest.raises(ValueError, match="already registered"):
        tracker.add(1, {TP0: 2}, records=1)


@dataclass
class _Record:
    value: bytes | None
    offset: int
    key: bytes | None = b"k"
    topic: str = "in"
    partition: int = 0
    timestamp: int = 0
    headers: tuple[tuple[str, bytes | None], ...] = ()


class _FlakyPredictor:
    """Fails on any batch holding an article titled 'poison'."""

    name = "flaky"
    version = "1"

    def predict(self, articles: Sequence[ArticleEvent]) -> list[Classification]:
        if any(article.title == "poison" for article in articles):
            raise RuntimeError("model blew up")
        ref = ModelRef(name=self.name, version=self.version)
        return [Classification(section=LabelScore(label="x", score=0.9), tags=[], model=ref)] * len(
            articles
        )


def _event(article_id: str, title: str) -> bytes:
    return json.dumps({"article_id": article_id, "title": title}).encode()


def test_model_failure_isolates_the_poison_article() -> None:
    """When the model fails on a batch, each article is retried alone and only the one that
    still fails becomes a classification_error dead letter."""
    records = [
        _Record(_event("a", "fine"), 0),
        _Record(_event("b", "poison"), 1),
        _Record(b"\xff", 2),
        _Record(_event("c", "also fine"), 3),
    ]
    result = classify_batch(
        records, _FlakyPredictor(), topics=Topics("out", "dlq"), max_event_bytes=1000
    )
    assert [item.topic for item in result.outgoing] == ["out", "dlq", "dlq", "out"]
    assert [item.reason for item in result.outgoing] == [
        None,
        DeadLetterReason.CLASSIFICATION_ERROR,
        DeadLetterReason.INVALID_UTF8,
        None,
    ]
    assert result.outgoing[1].value == records[1].value
    assert len(result.verdicts) == 2


def test_json_log_lines_carry_extra_fields() -> None:
    """A log record becomes one JSON object with its extra fields as keys."""
    record = logging.LogRecord("service", logging.WARNING, "f", 1, "dead letter", None, None)
    record.article_id = "a-1"
    record.partition = 2
    record.offset = 7
    line = json.loads(JsonFormatter().format(record))
    assert line["event"] == "dead letter"
    assert line["level"] == "warning"
    assert (line["article_id"], line["partition"], line["offset"]) == ("a-1", 2, 7)


def test_defaults_match_the_documented_topics() -> None:
    """The default topics are the documented ones."""
    settings = ServeSettings(model=Path("m"))
    assert (settings.output_topic, settings.dead_letter_topic) == (
        "articles.classified",
        "articles.dead-letter",
    )
