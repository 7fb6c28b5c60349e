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
# (bbc 0.982, titles 0.781, ModApte-90 micro 0.892 / macro 0.571)
# so that only a clear regression fails.
MIN_BBC_ACCURACY = 0.96
MIN_BBC_TITLE_ACCURACY = 0.74
MIN_REUTERS_MICRO_F1 = 0.87
MIN_REUTERS_MACRO_F1 = 0.54


@pytest.mark.slow
def test_quality_does_not_regress() -> None:
    """Cross-validated section and ModApte-90 tag scores stay near their tuned values."""
    if not (DATA / "bbc-news" / "train.jsonl").is_file():
        if REQUIRED:
            pytest.fail(f"research corpora not found under {DATA}")
        pytest.skip(f"research corpora not found under {DATA}")
    report = measure(DATA, folds=3, n_jobs=2)
    assert report.bbc_accuracy >= MIN_BBC_ACCURACY, report.render_text()
    assert report.bbc_title_accuracy >= MIN_BBC_TITLE_ACCURACY, report.render_text()
    assert report.reuters_micro_f1 >= MIN_REUTERS_MICRO_F1, report.render_text()
    assert report.reuters_macro_f1 >= MIN_REUTERS_MACRO_F1, report.render_text()
