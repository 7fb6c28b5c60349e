"""The benchmark's peers of the service do the same job, so that comparing rates is honest."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, Broker, Topics, article_records, consume, produce, stop_process

from schemas import ArticleEvent, ClassifiedArticleEvent

COUNT = 24
CLASSIFYING_PEERS = ("faststream", "faststream-batch", "aiokafka", "getmany")


def _spawn_peer(
    name: str, broker: Broker, topics: Topics, model_dir: Path, log: Path
) -> subprocess.Popen[bytes]:
    command = [
        sys.executable, "benchmarks/peers.py", name,
        "--bootstrap-servers", broker.bootstrap_servers, "--model", str(model_dir),
        "--input-topic", topics.input, "--output-topic", topics.output,
        "--group-id", topics.group, "--batch-size", "8",
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARTICLE_CLASSIFIER_")}
    with log.open("ab") as sink:
        return subprocess.Popen(command, cwd=ROOT, env=env, stdout=sink, stderr=sink)


async def _run_peer(
    name: str, broker: Broker, topics: Topics, model_dir: Path, log: Path
) -> list[Any]:
    """Produce COUNT events, run the peer until it has published COUNT records, stop it."""
    await produce(broker.bootstrap_servers, topics.input, article_records(COUNT, prefix=name))
    process = _spawn_peer(name, broker, topics, model_dir, log)
    try:
        out = await consume(broker.bootstrap_servers, topics.output, COUNT, timeout_s=90)
    finally:
        status = stop_process(process)
    assert status == 0, f"{name} exited with {status}: see {log}"
    return out


@pytest.mark.kafka
@pytest.mark.parametrize("name", CLASSIFYING_PEERS)
async def test_each_peer_classifies_every_event_with_the_service_model_and_contract(
    name: str, broker: Broker, topics: Topics, model_dir: Path, predictor: Any, tmp_path: Path
) -> None:
    """A peer turns N input events into N valid classified outputs keyed by article id, each
    carrying the classification model.Predictor gives that event."""
    out = await _run_peer(name, broker, topics, model_dir, tmp_path / "peer.log")
    assert len(out) == COUNT
    inputs = {
        key: ArticleEvent.model_validate_json(value)
        for key, value in article_records(COUNT, prefix=name)
        if key is not None and value is not None
    }
    seen: set[str] = set()
    for record in out:
        classified = ClassifiedArticleEvent.model_validate_json(record.value)
        assert record.key == classified.article_id.encode()
        event = inputs[record.key]
        assert classified.event_id == event.event_id
        (expected,) = predictor.predict([event])
        assert classified.classification.section == expected.section
        assert classified.classification.tags == expected.tags
        seen.add(classified.article_id)
    assert len(seen) == COUNT


@pytest.mark.kafka
async def test_the_passthrough_loop_forwards_every_record_unchanged(
    broker: Broker, topics: Topics, model_dir: Path, tmp_path: Path
) -> None:
    """The I/O ceiling's loop publishes each input record's key and value as they came."""
    out = await _run_peer("passthrough", broker, topics, model_dir, tmp_path / "peer.log")
    sent = dict(article_records(COUNT, prefix="passthrough"))
    assert {record.key: record.value for record in out} == sent
    assert all(json.loads(record.value)["article_id"] for record in out)
