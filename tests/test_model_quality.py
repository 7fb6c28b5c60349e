"""Quality regression on the research corpora (slow: trains on ../shared/data)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from model.quality import measure

# Not ARTICLE_CLASSIFIER_DATA: that variable feeds `train --data`.
DATA = Path(
    os.environ.get(
        "ARTICLE_CLASSIFIER_RESEARCH_DATA",
        str(Path(__file__).resolve().parent.parent.parent / "shared" / "data"),
    )
)
# CI has the corpora and sets this, so a missing corpus fails there instead of skipping.
REQUIRED = os.environ.get("ARTICLE_CLASSIFIER_REQUIRE_RESEARCH_DATA") == "1"

# Guards sit a few points below the 3-fold figures measured when the model was tuned
# (bbc full 0.98x, lead 0.93x, headline 0.84x; ModApte-90 micro 0.89x / macro 0.5xx;
# bbc-trained sections on Reuters business stories 0.8xx) so that only a clear regression
# fails. The headline guard sits above the 0.78 that models trained on full texts alone reach.
MIN_BBC_ACCURACY = 0.96
MIN_BBC_LEAD_ACCURACY = 0.90
MIN_BBC_TITLE_ACCURACY = 0.81
MIN_REUTERS_MICRO_F1 = 0.87
MIN_REUTERS_MACRO_F1 = 0.54
MIN_REUTERS_HEADLINE_MICRO_F1 = 0.78
MIN_SHIFT_ACCURACY = 0.80
MAX_SECTION_ECE = 0.05


@pytest.mark.slow
def test_quality_does_not_regress() -> None:
    """Scores on every view, calibration and the shift check stay near their tuned values."""
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
    for view in report.sections:
        assert view.ece <= MAX_SECTION_ECE, text
    # Confidence is honest about short texts: fewer confident headlines than full texts.
    shares = {view.view: view.low_confidence_share for view in report.sections}
    assert shares["headline"] > shares["full"], text
