"""The whole path against the embedded broker: classify, publish, dead-letter, in order."""

from __future__ import annotations

import json
from collections import defaultdict
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
)

from devtools.tansu import EmbeddedBroker
from schemas import ClassifiedArticleEvent

pytestmark = pytest.mark.kafka


async def test_every_event_is_classified_in_key_order(
    broker: EmbeddedBroker, topics: Topics, model_dir: Path, predictor: Any
) -> None:
    """Every valid event yields one valid classified event with its key, in order per key."""
    records = article_records(300, prefix="order", keys=40)
    await produce(broker.bootstrap_servers, topics.input, records)
    settings = make_settings(broker.bootstrap_servers, topics, model_dir)
    async with running_service(settings, predictor):
        outputs = await settle(broker.bootstrap_servers, topics.output, len(records))
    assert len(outputs) == len(records)
    sent: dict[bytes, list[str]] = defaultdict(list)
    for key, value in records:
        assert key is not None
        assert value is not None
        sent[key].append(json.loads(value)["event_id"])
    received: dict[bytes, list[str]] = defaultdict(list)
    for record in outputs:
        event = ClassifiedArticleEvent.model_validate_json(record.value)
        assert record.key == event.article_id.encode()
        assert event.classification.model.name == predictor.name
        assert event.event_id is not None
        received[record.key].append(event.event_id)
    assert received == sent
    assert await consume(broker.bootstrap_servers, topics.dead_letter, 1, timeout_s=0.5) == []


BAD_RECORDS: list[tuple[str, bytes, bytes]] = [
    ("invalid_utf8", b"bad-utf8", b'{"article_id": "bad-utf8", "title": "Caf\xe9"}'),
    ("invalid_json", b"bad-json", b'{"article_id": "bad-json", "title": "no brace"'),
    ("schema_violation", b"bad-schema", b'{"title": "an event without its article_id"}'),
    ("too_large", b"too-large", json.dumps({"article_id": "big", "body": "x" * 9000}).encode()),
]


async def test_each_bad_input_kind_is_dead_lettered_unchanged(
    broker: EmbeddedBroker, topics: Topics, model_dir: Path, predictor: Any
) -> None:
    """Each bad record becomes one dead letter with its bytes and headers; valid ones behind it
    are still classified."""
    valid = article_records(10, prefix="after-bad")
    records = [(key, value) for _, key, value in BAD_RECORDS] + valid
    await produce(broker.bootstrap_servers, topics.input, records)
    settings = make_settings(broker.bootstrap_servers, topics, model_dir, max_event_bytes=8192)
    async with running_service(settings, predictor):
        dead = await settle(broker.bootstrap_servers, topics.dead_letter, len(BAD_RECORDS))
        outputs = await consume(broker.bootstrap_servers, topics.output, len(valid))
    assert len(outputs) == len(valid)
    assert len(dead) == len(BAD_RECORDS)
    by_key = {record.key: record for record in dead}
    for reason, key, value in BAD_RECORDS:
        letter = by_key[key]
        headers = dict(letter.headers)
        assert letter.value == value
        assert headers["error.reason"] == reason.encode()
        assert headers["error.message"]
        assert headers["source.topic"] == topics.input.encode()
        assert int(headers["source.partition"]) in range(3)
        assert int(headers["source.offset"]) >= 0
