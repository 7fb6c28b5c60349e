"""The heap is frozen once the models load, and a frozen model still goes when swapped out."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest

from model import Predictor
from service.core.records import Topics
from service.models.workers import ThreadClassifier

TOPICS = Topics(output="out", dead_letter="dlq")


@pytest.fixture
def unfrozen() -> Iterator[None]:
    """Each test starts and ends with nothing frozen (the test process is shared)."""
    gc.unfreeze()
    yield
    gc.unfreeze()


@pytest.mark.usefixtures("unfrozen")
async def test_loading_the_models_freezes_the_heap(model_dir: Path) -> None:
    """After start, what the classifier loaded is in the collector's permanent generation."""
    classifier = ThreadClassifier(model_dir, topics=TOPICS, max_event_bytes=1_000_000)
    try:
        assert gc.get_freeze_count() == 0
        await classifier.start()
        assert gc.get_freeze_count() > 0
    finally:
        classifier.close()


@pytest.mark.usefixtures("unfrozen")
def test_a_model_is_freed_by_reference_counting_alone(model_dir: Path) -> None:
    """A loaded model holds no reference cycle, so a frozen one swapped out is still freed
    (the collector never scans frozen objects, reference counting still frees them)."""
    predictor = Predictor.load(model_dir)
    gc.freeze()
    manifest, weights = weakref.ref(predictor.manifest), weakref.ref(predictor._compiled.weights)
    assert manifest() is not None
    assert weights() is not None
    del predictor
    assert manifest() is None
    assert weights() is None
