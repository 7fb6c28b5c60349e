"""``reclassify``: a time range of a topic (or the dead-letter topic) replayed through a model
with the service's pipeline, against the embedded broker."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from conftest import (
    ROOT,
    Topics,
    article_records,
    consume,
    make_settings,
    running_service,
    settle,
    wait_for,
)
from prometheus_client import CollectorRegistry

from devtools.tansu import EmbeddedBroker
from service.commands.reclassify import ReplayError, run_reclassify
from service.config.commands import ReclassifySettings
from service.kafka.replay_gate import SOURCE_HEADERS
from service.kafka.replay_range import decode_metadata

pytestmark = pytest.mark.kafka

HOUR_MS = 3_600_000
#: Recent enough that the broker's retention (7 days by default) keeps the records.
BASE_MS = (int(time.time() * 1000) // HOUR_MS - 6) * HOUR_MS


async def produce_at(
    bootstrap_servers: str, topic: str, records: Sequence[tuple[bytes, bytes, int]]
) -> None:
    """Produce (key, value, timestamp ms) records in order and wait for the acknowledgements."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, acks="all", linger_ms=5)
    await producer.start()
    try:
        futures = [
            await producer.send(topic, key=key, value=value, timestamp_ms=ts)
            for key, value, ts in records
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def now_ms() -> int:
    """A record timestamp the broker's retention keeps."""
    return int(time.time() * 1000)


def pairs(count: int, prefix: str) -> list[tuple[bytes, bytes]]:
    """``count`` valid (key, value) events with ids ``prefix-N``."""
    return [(k, v) for k, v in article_records(count, prefix=prefix) if k and v]


def replay_settings(
    broker: EmbeddedBroker, topics: Topics, model_dir: Path, **options: Any
) -> ReclassifySettings:
    """Reclassify settings for a test: the test's topics, its own group per test, from the
    beginning unless ``from_timestamp`` is given."""
    service = make_settings(broker.bootstrap_servers, topics, model_dir)
    shared = {
        name: value
        for name, value in service.model_dump().items()
        if name in ReclassifySettings.model_fields
    }
    values: dict[str, Any] = {
        **shared,
        "from_beginning": "from_timestamp" not in options,
        "replay_group_id": f"{topics.group}-replay",
        "progress_interval_s": 0.2,
        **options,
    }
    return ReclassifySettings(**values)


def ids(records: Sequence[Any]) -> list[str]:
    """Article ids of consumed output records."""
    return [json.loads(record.value)["article_id"] for record in records]


async def test_a_range_is_replayed_interrupted_and_resumed(
    broker: EmbeddedBroker, topics: Topics, model_dir: Path, predictor: Any
) -> None:
    """Records before --from-timestamp and at/after --until-timestamp are never published;
    every record in between is, at least once, across a stop and a resumed run; a third
    run finds the range done."""
    before = pairs(40, "old")
    inside = pairs(400, "in")
    after = pairs(40, "new")
    start_ms, until_ms = BASE_MS + HOUR_MS, BASE_MS + 3 * HOUR_MS
    rows = [(k, v, BASE_MS + i) for i, (k, v) in enumerate(before)]
    rows += [(k, v, start_ms + i * 1000) for i, (k, v) in enumerate(inside)]
    rows += [(k, v, until_ms + i) for i, (k, v) in enumerate(after)]
    await produce_at(broker.bootstrap_servers, topics.input, rows)

    settings = replay_settings(
        broker,
        topics,
        model_dir,
        from_timestamp=start_ms,
        until_timestamp=until_ms,
        rate_limit=100.0,
    )
    stop = asyncio.Event()
    log = io.StringIO()
    registry = CollectorRegistry()
    first = asyncio.create_task(
        run_reclassify(settings, stop=stop, predictor=predictor, stderr=log, registry=registry)
    )

    def some_published() -> bool:
        published = registry.get_sample_value("article_classifier_articles_published_total")
        return first.done() or (published or 0) >= 60

    await wait_for(some_published, timeout_s=60, interval_s=0.02)
    stop.set()
    assert await asyncio.wait_for(first, 60) == 1
    partial = await consume(broker.bootstrap_servers, topics.output, len(inside), timeout_s=2)
    assert 60 <= len(set(ids(partial))) < len(inside), "the stop should land mid-range"
    assert "interrupted" in log.getvalue()

    log = io.StringIO()
    status = await run_reclassify(settings, stop=asyncio.Event(), predictor=predictor, stderr=log)
    assert status == 0
    assert "done" in log.getvalue()
    assert "400/400 records (100.0%)" in log.getvalue()
    published = await settle(broker.bootstrap_servers, topics.output, len(inside))
    wanted = {k.decode() for k, _ in inside}
    assert set(ids(published)) == wanted
    for record in published:
        event = json.loads(record.value)
        assert record.key == event["article_id"].encode()
        assert event["classification"]["model"]["version"] == predictor.version

    log = io.StringIO()
    again = await run_reclassify(settings, stop=asyncio.Event(), predictor=predictor, stderr=log)
    assert again == 0
    assert "nothing to replay" in log.getvalue()
    assert len(await settle(broker.bootstrap_servers, topics.output, len(published))) == len(
        published
    )


async def test_dead_letters_that_now_pass_are_published_the_rest_keep_their_source(
    broker: EmbeddedBroker, topics: Topics, model_dir: Path, predictor: Any
) -> None:
    """Dead letters of a too-small --max-event-bytes pass once it is raised (--reason
    too_large replays only them); replaying every reason dead-letters the invalid ones again
    with the original source.* headers."""
    small = pairs(20, "ok")
    large = [
        (key, json.dumps({**json.loads(value), "body": json.loads(value)["body"] * 8}).encode())
        for key, value in pairs(12, "big")
    ]
    broken = [(b"broken-%d" % i, b'{"article_id": "broken-%d",' % i) for i in range(5)]
    records = [*small, *large, *broken]
    cap = max(len(v) for _, v in small) + 1
    assert all(len(v) > cap for _, v in large)
    live = make_settings(broker.bootstrap_servers, topics, model_dir, max_event_bytes=cap)
    await produce_at(broker.bootstrap_servers, topics.input, [(k, v, now_ms()) for k, v in records])
    async with running_service(live, predictor):
        letters = await consume(
            broker.bootstrap_servers, topics.dead_letter, len(large) + len(broken)
        )
    assert len(letters) == len(large) + len(broken)
    origin = {record.key: dict(record.headers) for record in letters}

    settings = replay_settings(
        broker, topics, model_dir, from_dead_letters=True, reason=["too_large"]
    )
    status = await run_reclassify(settings, stop=asyncio.Event(), predictor=predictor)
    assert status == 0
    published = await settle(broker.bootstrap_servers, topics.output, len(small) + len(large))
    assert sorted(ids(published)) == sorted(k.decode() for k, _ in [*small, *large])
    assert len(await settle(broker.bootstrap_servers, topics.dead_letter, len(letters))) == len(
        letters
    ), "--reason too_large leaves the invalid_json dead letters alone"

    everything = replay_settings(broker, topics, model_dir, from_dead_letters=True)
    everything = everything.model_copy(update={"replay_group_id": f"{topics.group}-all"})
    assert await run_reclassify(everything, stop=asyncio.Event(), predictor=predictor) == 0
    dead = await settle(broker.bootstrap_servers, topics.dead_letter, len(letters) + len(broken))
    again = dead[len(letters) :]
    assert sorted(r.key for r in again) == sorted(k for k, _ in broken)
    for record in again:
        headers = dict(record.headers)
        assert headers["error.reason"] == b"invalid_json"
        for name in SOURCE_HEADERS:
            assert headers[name] == origin[record.key][name]
        assert headers["source.topic"] == topics.input.encode()
        assert record.value == dict(broken)[record.key]


def test_the_command_replays_to_the_end_and_a_signal_interrupts_resumably(
    broker: EmbeddedBroker, topics: Topics, model_dir: Path, tmp_path: Path
) -> None:
    """`article-classifier reclassify` as a subprocess (20 records/s, progress every 5 s):
    SIGTERM mid-range exits 143 after committing; the same command then finishes with 0
    and a progress line on stderr."""
    records = pairs(300, "cli")
    asyncio.run(
        produce_at(broker.bootstrap_servers, topics.input, [(k, v, now_ms()) for k, v in records])
    )
    command = [
        sys.executable, "-m", "service", "reclassify",
        "--model", str(model_dir),
        "--bootstrap-servers", broker.bootstrap_servers,
        "--input-topic", topics.input,
        "--output-topic", topics.output,
        "--dead-letter-topic", topics.dead_letter,
        "--group-id", f"{topics.group}-cli",
        "--from-beginning",
        "--rate-limit", "20/s",
        "--batch-size", "20",
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARTICLE_CLASSIFIER_")}
    log = tmp_path / "first.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=sink, stderr=sink)
    deadline = time.monotonic() + 90
    while _replayed(log) == 0:
        assert process.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 128 + signal.SIGTERM, log.read_text()
    assert b"interrupted" in log.read_bytes()

    rerun = [*command[:-4], "--batch-size", "100"]
    finished = subprocess.run(
        rerun, check=False, cwd=ROOT, env=env, capture_output=True, timeout=120
    )
    assert finished.returncode == 0, finished.stderr.decode()
    assert b"done: 300/300 records (100.0%)" in finished.stderr
    published = asyncio.run(settle(broker.bootstrap_servers, topics.output, len(records)))
    assert set(ids(published)) == {k.decode() for k, _ in records}


def _replayed(log: Path) -> int:
    """The highest ``done`` of the progress lines in ``log`` so far."""
    found = re.findall(rb"reclassify: ([0-9,]+)/300", log.read_bytes())
    return max((int(done.replace(b",", b"")) for done in found), default=0)


def test_bad_options_exit_2_with_the_option_named(model_dir: Path) -> None:
    """No start given, an unparsable time, an unknown reason: status 2 and a clear message."""
    base = [sys.executable, "-m", "service", "reclassify", "--model", str(model_dir)]
    cases = [
        ([], "--from-timestamp TS or --from-beginning"),
        (["--from-timestamp", "yesterday"], "--from-timestamp='yesterday'"),
        (["--from-beginning", "--from-dead-letters", "--reason", "nope"], "--reason='nope'"),
        (["--from-beginning", "--rate-limit", "fast"], "--rate-limit='fast'"),
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARTICLE_CLASSIFIER_")}
    for extra, message in cases:
        result = subprocess.run(
            [*base, *extra], check=False, cwd=ROOT, env=env, capture_output=True, timeout=60
        )
        assert result.returncode == 2, result.stderr.decode()
        assert message in result.stderr.decode()


async def test_a_group_holding_another_replays_range_is_refused(
    broker: EmbeddedBroker, topics: Topics, model_dir: Path, predictor: Any
) -> None:
    """The range is stored with the commits; the same group asked for another range is
    refused with a message naming the group (on a broker that keeps commit metadata)."""
    await produce_at(
        broker.bootstrap_servers, topics.input, [(k, v, now_ms()) for k, v in pairs(5, "g")]
    )
    settings = replay_settings(broker, topics, model_dir)
    assert await run_reclassify(settings, stop=asyncio.Event(), predictor=predictor) == 0
    admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
    await admin.start()
    try:
        partitions = [TopicPartition(topics.input, p) for p in range(3)]
        stored = await admin.list_consumer_group_offsets(
            settings.consumer_group, partitions=partitions
        )
    finally:
        await admin.close()
    if not any(item.metadata for item in stored.values()):
        pytest.skip("this broker does not keep commit metadata (tansu): the range is replanned")
    assert all(decode_metadata(item.metadata) is not None for item in stored.values())
    other = settings.model_copy(update={"until_timestamp": BASE_MS + HOUR_MS})
    with pytest.raises(ReplayError, match="holds the progress of another replay"):
        await run_reclassify(other, stop=asyncio.Event(), predictor=predictor)
