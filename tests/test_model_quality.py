"""Quality regression on the research corpora (slow: trains on ../shared/data)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from model.quality import measure, split_by_time
from schemas import LabelledArticle

# Not ARTICLE_CLASSIFIER_DATA: that variable feeds `train --data`.
DATA = Path(
    os.environ.get(
        "RESEARCH_DATA",
        str(Path(__file__).resolve().parent.parent.parent / "shared" / "data"),
    )
)
# CI has the corpora and sets this, so a missing corpus fails there instead of skipping.
REQUIRED = os.environ.get("REQUIRE_RESEARCH_DATA") == "1"

# Guards sit a few points below the 3-fold figures (fold seed 0) measured when the model was
# tuned: bbc full 0.980, lead 0.944, headline 0.868; ModApte-90 micro 0.890 / macro 0.570;
# bbc-trained sections on Reuters business stories 0.897 full, 0.716 headline (these two do not
# depend on the folds); the shift in time micro 0.866 / macro 0.576. Only a clear regression
# fails. The headline and shift guards sit above what the model scored before it learned from
# body sentences (3-fold headline 0.84x, shift 0.876 / 0.692), and the headline guard far above
# the 0.78 of models trained on full texts alone.
MIN_BBC_ACCURACY = 0.96
MIN_BBC_LEAD_ACCURACY = 0.92
MIN_BBC_TITLE_ACCURACY = 0.85
MIN_REUTERS_MICRO_F1 = 0.87
MIN_REUTERS_MACRO_F1 = 0.54
MIN_REUTERS_HEADLINE_MICRO_F1 = 0.78
MIN_SHIFT_ACCURACY = 0.88
MIN_SHIFT_HEADLINE_ACCURACY = 0.70
MIN_TIME_MICRO_F1 = 0.84
MIN_TIME_MACRO_F1 = 0.54
MAX_SECTION_ECE = 0.05


@pytest.mark.slow
def test_quality_does_not_regress() -> None:
    """Scores on every view, calibration and both shift checks stay near their tuned values."""
    if not (DATA / "bbc-news" / "train.jsonl").is_file():
        if REQUIRED:
            pytest.fail(f"research corpora not found under {DATA}")
        pytest.skip(f"research corpora not found under {DATA}")
    report = measure(DATA, folds=3, n_jobs=2)
    text = report.render_text()
    assert report.bbc_accuracy >= MIN_BBC_ACCURACY, text
    assert report.bbc_lead_accuracy >= MIN_BBC_LEAD_ACCURACY, text
    assert report.bbc_title_accuracy >= MIN_BBC_TITLE_ACCURACY, text
    assert report.reuters_micro_f1 >= MIN_REUTERS_MICRO_F1, text
    assert report.reuters_macro_f1 >= MIN_REUTERS_MACRO_F1, text
    headline_tags = next(view for view in report.tags if view.view == "headline")
    assert headline_tags.micro_f1 >= MIN_REUTERS_HEADLINE_MICRO_F1, text
    assert report.shift_accuracy >= MIN_SHIFT_ACCURACY, text
    headline_shift = next(view for view in report.shift if view.view == "headline")
    assert headline_shift.accuracy >= MIN_SHIFT_HEADLINE_ACCURACY, text
    assert report.time_micro_f1 >= MIN_TIME_MICRO_F1, text
    assert report.time_macro_f1 >= MIN_TIME_MACRO_F1, text
    assert report.time_shift.train_stories > 4 * report.time_shift.stories, text
    for view in report.sections:
        assert view.ece <= MAX_SECTION_ECE, text
    # Confidence is honest about short texts: fewer confident headlines than full texts.
    shares = {view.view: view.low_confidence_share for view in report.sections}
    assert shares["headline"] > shares["full"], text


def _dated(article_id: str, published_at: str | None) -> LabelledArticle:
    return LabelledArticle(
        article_id=article_id, title="t", body="b", published_at=published_at, tags=[]
    )


def test_time_split_holds_out_the_latest_whole_days_in_utc() -> None:
    """The latest share of the dated stories is held out in whole UTC days; undated ones
    are on neither side."""
    records = [
        _dated("late-offset", "1987-03-03T01:30:00+05:00"),  # 1987-03-02 20:30 UTC
        _dated("d1", "1987-03-01T10:00:00Z"),
        _dated("undated", None),
        _dated("d2a", "1987-03-02T08:00:00Z"),
        _dated("d3a", "1987-03-03T09:00:00Z"),
        _dated("d3b", "1987-03-03T23:59:59Z"),
        _dated("d2b", "1987-03-02T23:00:00Z"),
    ]
    earlier, later, cutoff = split_by_time(records, 0.5)
    # Six dated stories: the fourth in time order (2 March) starts the held-out days.
    assert cutoff.isoformat() == "1987-03-02"
    assert {r.article_id for r in earlier} == {"d1"}
    assert {r.article_id for r in later} == {"late-offset", "d2a", "d2b", "d3a", "d3b"}
    _, later_small, cutoff_small = split_by_time(records, 0.2)
    assert cutoff_small.isoformat() == "1987-03-03"
    assert {r.article_id for r in later_small} == {"d3a", "d3b"}


@pytest.mark.parametrize("share", [0.0, 1.0, -0.1, float("nan")])
def test_time_split_refuses_a_share_outside_zero_and_one(share: float) -> None:
    """A held-out share that is not strictly between 0 and 1 is refused."""
    with pytest.raises(ValueError, match="share"):
        split_by_time([_dated("a", "1987-03-01T00:00:00Z")], share)


def test_time_split_refuses_corpora_it_cannot_split() -> None:
    """No dated story, or all of them on one day, is a clear error rather than an empty side."""
    with pytest.raises(ValueError, match="published_at"):
        split_by_time([_dated("a", None)], 0.2)
    same_day = [_dated(str(i), f"1987-03-01T{i:02d}:00:00Z") for i in range(5)]
    with pytest.raises(ValueError, match="1987-03-01"):
        split_by_time(same_day, 0.2)
