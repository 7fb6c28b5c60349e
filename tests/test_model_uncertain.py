"""A section floor: sections scored below it are flagged uncertain, and counted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import demo_texts

from model import Predictor
from schemas import (
    ArticleEvent,
    Classification,
    ClassifiedArticleEvent,
    LabelScore,
    ModelRef,
    encode_classified,
)


def _events() -> list[ArticleEvent]:
    texts = demo_texts()
    events = [
        ArticleEvent(article_id=f"d{i}", title=title, body=body)
        for i, (title, body) in enumerate(texts)
    ]
    # Words the demo model has never seen: its section is a guess.
    return [*events, ArticleEvent(article_id="x", title="Zyxw qwer", body="plokm ijnuh")]


def test_without_a_floor_the_output_has_no_uncertain_field(model_dir: Path) -> None:
    """With no floor configured, no section carries ``uncertain`` and nothing is counted."""
    predictor = Predictor.load(model_dir)
    batch = predictor.predict_batch(_events())
    assert batch.uncertain == 0
    for event, result in zip(_events(), batch.classifications, strict=True):
        section = json.loads(encode_classified(event, result, "2026-01-01T00:00:00Z"))[
            "classification"
        ]["section"]
        assert set(section) == {"label", "score"}


def test_sections_below_the_floor_are_flagged_and_counted(model_dir: Path) -> None:
    """A section whose calibrated score is under the floor is ``uncertain: true``, one at
    or over it ``uncertain: false``, and the batch counts the flagged ones."""
    scores = [
        result.section.score
        for result in Predictor.load(model_dir).predict(_events())
        if result.section is not None
    ]
    floor = sorted(scores)[len(scores) // 2]
    predictor = Predictor.load(model_dir, section_floor=floor)
    batch = predictor.predict_batch(_events())
    flags = []
    for result in batch.classifications:
        assert result.section is not None
        assert result.section.uncertain is (result.section.score < floor)
        flags.append(result.section.uncertain)
    assert 0 < batch.uncertain == sum(flags) < len(flags)


def test_flagged_output_validates_against_the_output_schema(model_dir: Path) -> None:
    """An output carrying the flag is a valid ClassifiedArticleEvent and keeps it."""
    predictor = Predictor.load(model_dir, section_floor=1.0)
    event = _events()[-1]
    (result,) = predictor.predict([event])
    raw = encode_classified(event, result, "2026-01-01T00:00:00Z")
    parsed = ClassifiedArticleEvent.model_validate_json(raw)
    assert parsed.classification.section is not None
    assert parsed.classification.section.uncertain is True


def test_a_section_built_without_the_flag_serialises_as_before() -> None:
    """A section LabelScore built without ``uncertain`` is written without it."""
    classification = Classification(
        section=LabelScore(label="sport", score=0.9),
        tags=[],
        model=ModelRef(name="m", version="1"),
    )
    assert classification.section is not None
    assert classification.section.uncertain is None
    assert json.loads(classification.model_dump_json())["section"] == {
        "label": "sport",
        "score": 0.9,
    }


@pytest.mark.parametrize("floor", [-0.1, 1.5, float("nan")])
def test_a_floor_outside_zero_to_one_is_refused(model_dir: Path, floor: float) -> None:
    """A floor that no probability can be compared with is a ValueError at construction."""
    with pytest.raises(ValueError, match="section_floor"):
        Predictor.load(model_dir, section_floor=floor)


@pytest.mark.parametrize("floor", [None, 0.5])
def test_predictions_equal_their_validated_copies(model_dir: Path, floor: float | None) -> None:
    """Every classification the predictor builds equals the one pydantic validates from
    its own dump, field by field (the fast construction leaves nothing out)."""
    predictor = Predictor.load(model_dir, section_floor=floor)
    for result in predictor.predict(_events()):
        copy = Classification.model_validate(result.model_dump())
        assert copy == result
        assert copy.model_dump_json() == result.model_dump_json()
