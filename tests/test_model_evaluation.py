"""Evaluation reports: per-head metrics, per-label tables, dict and text forms."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from model import EvaluationReport, Predictor, evaluate, load_labelled, train
from schemas import LabelledArticle

DEMO = Path(__file__).resolve().parent.parent / "model" / "samples" / "demo.jsonl"


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    """A demo model trained on four fifths of the demo records."""
    records = load_labelled([DEMO]).records
    return Predictor.from_trained(
        train(records[1::5] + records[2::5] + records[3::5] + records[4::5], name="demo")
    )


def test_report_scores_both_heads(predictor: Predictor) -> None:
    """Both heads get their headline metrics and a row per label."""
    report = evaluate(predictor, load_labelled([DEMO]).records[::5])
    assert isinstance(report, EvaluationReport)
    assert report.records == 60
    assert report.sections is not None
    assert report.tags is not None
    assert 0.5 < report.sections.accuracy <= 1.0
    assert 0.0 < report.tags.micro_f1 <= 1.0
    assert {row.label for row in report.sections.per_label} == set(predictor.sections)
    data = report.to_dict()
    assert json.loads(json.dumps(data)) == data
    text = report.render_text()
    assert "accuracy" in text
    assert "micro-F1" in text
    assert "politics" in text


def test_head_without_labels_is_skipped(predictor: Predictor) -> None:
    """A head whose labels no record carries has no metrics."""
    records = [r.model_copy(update={"tags": None}) for r in load_labelled([DEMO]).records[::5]]
    report = evaluate(predictor, records)
    assert report.tags is None
    assert report.to_dict()["tags"] is None
    assert "no record has a tags label" in report.render_text()


def test_exact_counts_on_known_records(predictor: Predictor) -> None:
    """Counts are exact: a wrong section and an unknown tag are scored as misses."""
    article = load_labelled([DEMO]).records[0]
    [prediction] = predictor.predict([article])
    assert prediction.section is not None
    wrong = next(s for s in predictor.sections if s != prediction.section.label)
    record = LabelledArticle(
        article_id="x", title=article.title, body=article.body, section=wrong, tags=["unheard-of"]
    )
    report = evaluate(predictor, [record])
    assert report.sections is not None
    assert report.sections.accuracy == 0.0
    assert report.tags is not None
    unheard = next(row for row in report.tags.per_label if row.label == "unheard-of")
    assert (unheard.support, unheard.predicted, unheard.recall) == (1, 0, 0.0)
    assert report.tags.micro_precision == 0.0
