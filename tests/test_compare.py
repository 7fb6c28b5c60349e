"""``compare``: two models on the same articles (model.compare and the CLI command)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from model import Predictor, evaluate, load_labelled, save_artifact, train
from model.compare import compare
from schemas import ArticleEvent, LabelledArticle
from service.commands.cli import main

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "model" / "samples" / "demo.jsonl"
UNLABELLED = ROOT / "model" / "samples" / "articles.jsonl"


@pytest.fixture(scope="module")
def records() -> list[LabelledArticle]:
    """The labelled demo corpus."""
    return load_labelled([DEMO]).records


@pytest.fixture(scope="module")
def other_dir(records: list[LabelledArticle], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second model, trained on every third demo article: it disagrees with the demo model."""
    out = tmp_path_factory.mktemp("model-b") / "b"
    save_artifact(train(records[::3], name="thin"), out)
    return out


@pytest.fixture(scope="module")
def other(other_dir: Path) -> Predictor:
    """The second model, loaded."""
    return Predictor.load(other_dir)


def test_a_model_compared_with_itself_agrees_everywhere(
    predictor: Predictor, records: list[LabelledArticle]
) -> None:
    """Identical models: agreement 1, no flip, Jaccard 1, no metric difference."""
    result = compare(predictor, predictor, records)
    assert result.articles == len(records)
    assert result.section_agreement == 1.0
    assert result.section_flips == ()
    assert result.top_flips == ()
    assert result.tag_jaccard == 1.0
    assert result.tag_exact_agreement == 1.0
    assert all(c.added == c.removed == 0 for c in result.tag_changes)
    assert {name: diff for name, _, _, diff in result.metric_differences()} == {
        "section_accuracy": 0.0,
        "section_macro_f1": 0.0,
        "tag_micro_precision": 0.0,
        "tag_micro_recall": 0.0,
        "tag_micro_f1": 0.0,
        "tag_macro_f1": 0.0,
    }


def test_flips_and_tag_changes_match_the_two_models_predictions(
    predictor: Predictor, other: Predictor, records: list[LabelledArticle]
) -> None:
    """Every count equals what the two models' own predictions give, batch size aside."""
    result = compare(predictor, other, records, batch_size=37)
    a, b = predictor.predict(records), other.predict(records)
    flips = Counter(
        (x.section.label, y.section.label)
        for x, y in zip(a, b, strict=True)
        if x.section and y.section and x.section.label != y.section.label
    )
    assert flips, "the thin model should disagree somewhere"
    assert {(x, y): n for x, y, n in result.section_flips} == flips
    assert result.section_agreement == pytest.approx(1 - sum(flips.values()) / len(records))
    added: Counter[str] = Counter()
    removed: Counter[str] = Counter()
    jaccard = 0.0
    for x, y in zip(a, b, strict=True):
        tags_a, tags_b = {t.label for t in x.tags}, {t.label for t in y.tags}
        added.update(tags_b - tags_a)
        removed.update(tags_a - tags_b)
        union = tags_a | tags_b
        jaccard += len(tags_a & tags_b) / len(union) if union else 1.0
    changes = {c.tag: (c.added, c.removed) for c in result.tag_changes if c.added or c.removed}
    assert changes == {t: (added[t], removed[t]) for t in set(added) | set(removed)}
    assert result.tag_jaccard == pytest.approx(jaccard / len(records))


def test_labelled_metrics_are_each_models_evaluation_side_by_side(
    predictor: Predictor, other: Predictor, records: list[LabelledArticle]
) -> None:
    """The side-by-side metrics are model.evaluation's for each model, and B - A."""
    result = compare(predictor, other, records)
    assert result.evaluation_a is not None
    assert result.evaluation_b is not None
    assert result.evaluation_a.to_dict() == evaluate(predictor, records).to_dict()
    assert result.evaluation_b.to_dict() == evaluate(other, records).to_dict()
    rows = {name: (x, y, diff) for name, x, y, diff in result.metric_differences()}
    sections_a, sections_b = result.evaluation_a.sections, result.evaluation_b.sections
    assert sections_a is not None
    assert sections_b is not None
    x, y, diff = rows["section_accuracy"]
    assert (x, y) == (sections_a.accuracy, sections_b.accuracy)
    assert diff == pytest.approx(y - x)


def test_top_flips_are_real_flips_surest_first(
    predictor: Predictor, other: Predictor, records: list[LabelledArticle]
) -> None:
    """At most N flips, each a real A/B disagreement with both scores, surest pair first."""
    result = compare(predictor, other, records, top=5)
    assert len(result.top_flips) == min(5, result.flipped_sections)
    by_id = {r.article_id: r for r in records}
    for flip in result.top_flips:
        (x,) = predictor.predict([by_id[flip.article_id]])
        (y,) = other.predict([by_id[flip.article_id]])
        assert x.section is not None
        assert y.section is not None
        assert (flip.section_a, flip.score_a) == (x.section.label, x.section.score)
        assert (flip.section_b, flip.score_b) == (y.section.label, y.section.score)
        assert flip.section_a != flip.section_b
    surety = [min(f.score_a, f.score_b) for f in result.top_flips]
    assert surety == sorted(surety, reverse=True)
    everything = compare(predictor, other, records, top=10_000)
    assert len(everything.top_flips) == everything.flipped_sections
    assert result.top_flips == everything.top_flips[:5]


def test_unlabelled_articles_count_in_agreement_only(
    predictor: Predictor, other: Predictor
) -> None:
    """ArticleEvents without labels give agreement figures and no side-by-side metrics."""
    lines = UNLABELLED.read_text("utf-8").splitlines()
    events = [ArticleEvent.model_validate_json(line) for line in lines]
    result = compare(predictor, other, events)
    assert result.articles == len(events)
    assert result.evaluation_a is None
    assert result.metric_differences() == []
    assert result.to_dict()["labelled"] is None


def test_cli_compares_mixed_files_reports_bad_lines_and_prints_json(
    model_dir: Path,
    other_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """--json prints one object; a bad line is named on stderr and skipped; labelled lines
    alone feed the metrics."""
    mixed = tmp_path / "mixed.jsonl"
    demo_lines = DEMO.read_text("utf-8").splitlines()[:40]
    unlabelled = UNLABELLED.read_text("utf-8").splitlines()[:10]
    mixed.write_text("\n".join([*demo_lines, '{"article_id": ""}', *unlabelled, ""]) + "\n")
    models = ["--model", str(model_dir), "--model", str(other_dir)]
    status = main(["compare", *models, "--data", str(mixed), "--json", "--top", "3"])
    out, err = capsys.readouterr()
    assert status == 0
    report = json.loads(out)
    assert report["articles"] == 50
    assert report["labelled"]["a"]["records"] == 40
    assert len(report["top_section_flips"]) <= 3
    assert f"{mixed}:41: article_id" in err
    assert "articles/s" in err


def test_cli_needs_exactly_two_models(model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """One --model is a usage error (exit status 2) naming the option."""
    status = main(["compare", "--model", str(model_dir), "--data", str(DEMO)])
    assert status == 2
    assert "--model=" in capsys.readouterr().err
