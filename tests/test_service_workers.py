"""Where batches are classified: a worker process by default, or a thread."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from model import ModelError
from schemas import ClassifiedArticleEvent
from service.core.records import Topics
from service.models.workers import ProcessClassifier, ThreadClassifier, WireRecord

TOPICS = Topics(output="out", dead_letter="dlq")


def _records(count: int) -> list[WireRecord]:
    value = b'{"article_id": "a%d", "title": "Striker scores twice as city win the cup final"}'
    return [
        WireRecord("in", 0, offset, 1_700_000_000_000, b"a%d" % offset, value % offset)
        for offset in range(count)
    ]


async def test_process_and_thread_workers_give_the_same_outputs(model_dir: Path) -> None:
    """A batch classified in the worker process equals the same batch classified in a thread."""
    in_process = ProcessClassifier(model_dir, topics=TOPICS, max_event_bytes=4096, log_level="INFO")
    in_thread = ThreadClassifier(model_dir, topics=TOPICS, max_event_bytes=4096)
    try:
        assert await in_process.start() == await in_thread.start()
        records = [*_records(3), WireRecord("in", 0, 3, 0, b"bad", b"{broken")]
        by_process = await in_process.classify(records)
        by_thread = await in_thread.classify(records)
    finally:
        in_process.close()
        in_thread.close()

    def comparable(value: bytes | None) -> object:
        if value is None or not value.startswith(b'{"article_id"'):
            return value
        return ClassifiedArticleEvent.model_validate_json(value).classification

    assert [comparable(o.value) for o in by_process.outgoing] == [
        comparable(o.value) for o in by_thread.outgoing
    ]
    assert by_process.verdicts == by_thread.verdicts
    assert [o.topic for o in by_process.outgoing] == ["out", "out", "out", "dlq"]


async def test_a_dead_worker_process_is_replaced_and_the_batch_still_classified(
    model_dir: Path,
) -> None:
    """Killing the worker process costs a restart, not the batch."""
    classifier = ProcessClassifier(model_dir, topics=TOPICS, max_event_bytes=4096, log_level="INFO")
    try:
        await classifier.start()
        (worker_pid,) = list(classifier._pool._processes)
        os.kill(worker_pid, signal.SIGKILL)
        result = await classifier.classify(_records(5))
    finally:
        classifier.close()
    assert [o.topic for o in result.outgoing] == ["out"] * 5


async def test_an_unloadable_model_fails_start_with_the_models_own_message(tmp_path: Path) -> None:
    """A model directory the worker cannot load is reported at start, with the reason."""
    classifier = ProcessClassifier(tmp_path, topics=TOPICS, max_event_bytes=4096, log_level="INFO")
    try:
        with pytest.raises(ModelError):
            await classifier.start()
    finally:
        classifier.close()
