"""Training: heads, partial labels, short views, determinism and how scores relate to decisions."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from model import Predictor, TrainedModel, TrainingError, load_labelled, train
from schemas import ArticleEvent, LabelledArticle

DEMO = Path(__file__).resolve().parent.parent / "model" / "samples" / "demo.jsonl"

WORDS = {
    "sport": "match goal striker league coach stadium referee penalty",
    "business": "shares profit market investors earnings bank merger revenue",
    "science": "telescope planet cells genome laboratory physics orbit research",
}
TAG_WORDS = {"europe": "paris berlin madrid brussels", "asia": "tokyo beijing delhi seoul"}


def tiny_corpus(n: int = 60, seed: int = 0) -> list[LabelledArticle]:
    """A synthetic corpus whose sections and tags are given away by their words."""
    rng = random.Random(seed)
    records = []
    for i in range(n):
        section = list(WORDS)[i % len(WORDS)]
        tags = [tag for tag in TAG_WORDS if rng.random() < 0.4]
        words = WORDS[section].split() * 2 + [w for t in tags for w in TAG_WORDS[t].split()]
        rng.shuffle(words)
        records.append(
            LabelledArticle(
                article_id=f"t{i}",
                title=" ".join(words[:4]),
                body=" ".join([*words[4:], "the", "news", "today"]),
                section=section,
                tags=tags,
            )
        )
    return records


def _strip(
    record: LabelledArticle, *, section: bool = False, tags: bool = False
) -> LabelledArticle:
    update: dict[str, None] = {}
    if section:
        update["section"] = None
    if tags:
        update["tags"] = None
    return record.model_copy(update=update)


def test_tiny_corpus_trains_both_heads_and_predicts_them() -> None:
    """A small corpus trains a model whose predictions follow the obvious words."""
    trained = train(tiny_corpus(), name="tiny", version="1", cv_folds=3)
    assert isinstance(trained, TrainedModel)
    assert trained.manifest.sections == ["business", "science", "sport"]
    assert trained.manifest.tags == ["asia", "europe"]
    predictor = Predictor.from_trained(trained)
    [result] = predictor.predict(
        [ArticleEvent(article_id="q", title="striker scores goal", body="tokyo match league")]
    )
    assert result.section is not None
    assert result.section.label == "sport"
    assert [tag.label for tag in result.tags] == ["asia"]
    assert result.model.name == "tiny"
    assert result.model.version == "1"


def test_manifest_carries_counts_metrics_and_thresholds() -> None:
    """The model card has record counts, cross-validated metrics and a threshold per tag."""
    card = train(tiny_corpus(), name="tiny", cv_folds=3).manifest
    assert card.records.total == card.records.section == card.records.tags == 60
    assert card.metrics.folds == 3
    assert card.metrics.section is not None
    assert card.metrics.section.accuracy > 0.9
    assert card.metrics.tags is not None
    assert [row.label for row in card.metrics.tags.per_label] == ["asia", "europe"]
    assert all(row.threshold is not None for row in card.metrics.tags.per_label)
    assert card.version.endswith(card.training_data_sha256[:8])


def test_partial_labels_train_one_model_and_each_head_uses_its_own_records() -> None:
    """Section-only and tags-only records train one model; each head counts only its records."""
    records = tiny_corpus(90)
    mixed = [
        _strip(r, tags=True) if i % 3 == 0 else _strip(r, section=True) if i % 3 == 1 else r
        for i, r in enumerate(records)
    ]
    trained = train(mixed, name="mixed", cv_folds=3)
    assert trained.manifest.records.section == 60
    assert trained.manifest.records.tags == 60
    cv = trained.estimator.cv_
    assert [int(i) for i in cv.section_rows] == [i for i in range(90) if i % 3 != 1]
    assert [int(i) for i in cv.tag_rows] == [i for i in range(90) if i % 3 != 0]
    [result] = Predictor.from_trained(trained).predict([records[0]])
    assert result.section is not None


def test_records_without_tags_are_not_negatives_for_the_tags_head() -> None:
    """Section-only records full of a tag's words do not teach the tags head against it."""
    tagged = [_strip(r, section=True) for r in tiny_corpus(60)]
    asia_text = " ".join(TAG_WORDS["asia"].split() * 3)
    lookalikes = [
        LabelledArticle(
            article_id=f"s{i}", title=asia_text, body="words", section=("a", "b")[i % 2]
        )
        for i in range(60)
    ]
    query = [ArticleEvent(article_id="q", title="tokyo beijing", body="delhi seoul")]

    unlabelled = train(tagged + lookalikes, name="a", cv_folds=3)
    assert unlabelled.manifest.records.tags == 60
    [result] = Predictor.from_trained(unlabelled).predict(query)
    assert [tag.label for tag in result.tags] == ["asia"]

    # The same records labelled `tags: []` are negatives: the contrast shows the test bites.
    negatives = [r.model_copy(update={"tags": []}) for r in lookalikes]
    labelled = train(tagged + negatives, name="b", cv_folds=3)
    [contrast] = Predictor.from_trained(labelled).predict(query)
    assert "asia" not in [tag.label for tag in contrast.tags]


@pytest.mark.parametrize("drop", ["section", "tags"])
def test_single_head_models(drop: str) -> None:
    """A model trained with one head's labels only reports nothing for the other head."""
    records = [_strip(r, **{drop: True}) for r in tiny_corpus()]
    trained = train(records, name="one", cv_folds=3)
    predictor = Predictor.from_trained(trained)
    results = predictor.predict(records[:5])
    if drop == "section":
        assert predictor.sections == ()
        assert trained.manifest.metrics.section is None
        assert all(r.section is None for r in results)
        assert any(r.tags for r in results)
    else:
        assert predictor.tags == ()
        assert trained.manifest.metrics.tags is None
        assert all(r.tags == [] for r in results)
        assert all(r.section is not None for r in results)


def test_training_is_deterministic() -> None:
    """Two trainings on the same records give the same weights, thresholds and metrics."""
    records = load_labelled([DEMO]).records
    first = train(records, name="d", version="1")
    second = train(records, name="d", version="1")
    np.testing.assert_array_equal(first.model.weights, second.model.weights)
    np.testing.assert_array_equal(first.model.tag_thresholds, second.model.tag_thresholds)
    assert first.manifest.metrics == second.manifest.metrics
    articles = records[:50]
    assert Predictor.from_trained(first).predict(articles) == Predictor.from_trained(
        second
    ).predict(articles)


def test_scores_are_consistent_with_decisions() -> None:
    """Section scores are probabilities; a tag is reported iff its score is at least 0.5."""
    records = load_labelled([DEMO]).records
    predictor = Predictor.from_trained(train(records, name="d"))
    batch = predictor.score(records)
    np.testing.assert_allclose(batch.section_probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert np.all((batch.tag_scores >= 0) & (batch.tag_scores <= 1))
    assert np.all(batch.tag_scores[batch.tag_decisions] >= 0.5)
    assert np.all(batch.tag_scores[~batch.tag_decisions] <= 0.5)
    for result in predictor.predict(records):
        scores = [tag.score for tag in result.tags]
        assert scores == sorted(scores, reverse=True)
        assert result.section is not None
        assert 0.0 <= result.section.score <= 1.0


def test_predict_on_empty_batch_and_text_free_of_known_words() -> None:
    """An empty batch gives no results; unknown words still give a valid classification."""
    predictor = Predictor.from_trained(train(tiny_corpus(), name="tiny", cv_folds=3))
    assert predictor.predict([]) == []
    [result] = predictor.predict([ArticleEvent(article_id="u", title="zzz qqq")])
    assert result.section is not None


def test_unusable_corpora_raise_training_error() -> None:
    """No labels at all, a single section, or too few records for the folds are refused."""
    unlabelled = [_strip(r, section=True, tags=True) for r in tiny_corpus(10)]
    with pytest.raises(TrainingError, match="no record"):
        train(unlabelled, name="x")
    one_section = [r.model_copy(update={"section": "sport"}) for r in tiny_corpus(10)]
    with pytest.raises(TrainingError, match="at least 2 sections"):
        train(one_section, name="x", cv_folds=3)
    with pytest.raises(TrainingError, match="fewer than cv_folds"):
        train(tiny_corpus(4), name="x", cv_folds=5)


def test_concurrent_predictions_match_sequential_ones() -> None:
    """One predictor shared by several threads gives the same results as sequential calls."""
    records = load_labelled([DEMO]).records
    predictor = Predictor.from_trained(train(records, name="d"))
    batches = [records[i : i + 37] for i in range(0, len(records), 37)]
    expected = [predictor.predict(batch) for batch in batches]
    with ThreadPoolExecutor(max_workers=4) as pool:
        actual = list(pool.map(predictor.predict, batches * 3))
    assert actual == expected * 3


def test_cross_validation_keeps_all_views_of_an_article_in_one_fold() -> None:
    """Out-of-fold scores never come from a model that saw another view of the same article.

    Labels are random; each article carries a word of its own in headline and body. If a
    view of a held-out article were in the training folds, that word would give its label
    away and the held-out headlines would be classified far above chance.
    """
    rng = random.Random(7)
    filler = ["the", "news", "today", "report", "said", "officials", "on", "monday"]
    records = []
    for i in range(120):
        own = f"token{i:04d}x"
        records.append(
            LabelledArticle(
                article_id=f"r{i}",
                title=f"{own} {rng.choice(filler)}",
                body=" ".join([own, *rng.sample(filler, 5), "."]),
                section=rng.choice(["a", "b"]),
            )
        )
    params = {"min_df": 1, "section_lead_weight": 1.0, "section_headline_weight": 1.0}
    cv = train(records, name="leak", cv_folds=4, params=params).estimator.cv_
    for view in ("full", "lead", "headline"):
        predicted = cv.section_predicted_by_view[view]
        hits = sum(t == p for t, p in zip(cv.section_truth, predicted, strict=True))
        assert hits / len(records) < 0.7, view


def test_short_views_are_scored_out_of_fold_for_both_heads() -> None:
    """Cross-validation reports every view of both heads, on every labelled record."""
    cv = train(tiny_corpus(), name="tiny", cv_folds=3).estimator.cv_
    for view in ("full", "lead", "headline"):
        assert len(cv.section_predicted_by_view[view]) == 60
        probabilities = cv.section_probabilities_by_view[view]
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0)
        assert cv.tag_predicted_by_view[view].shape == cv.tag_truth.shape
    assert cv.section_predicted == cv.section_predicted_by_view["full"]
    np.testing.assert_array_equal(cv.tag_predicted, cv.tag_predicted_by_view["full"])


def test_training_on_headlines_helps_headline_only_articles() -> None:
    """With the headline view in training, bare headlines are classified better than without.

    Each section's bodies are told apart by common words, and also mention the other
    section's headline words more often than its own headlines do: from full texts alone a
    model learns those headline words the wrong way round; headline views correct it.
    """
    rng = random.Random(3)
    common = {"a": "alpha apple amber", "b": "beta berry bronze"}
    heads = {"a": "anchor arrow atlas axe", "b": "banner bishop bottle brick"}
    records = []
    for i in range(90):
        section, other = ("a", "b") if i % 2 == 0 else ("b", "a")
        title = " ".join(rng.sample(heads[section].split(), 2))
        body = " ".join(common[section].split() * 4 + heads[other].split() * 3)
        records.append(LabelledArticle(article_id=f"h{i}", title=title, body=body, section=section))
    queries = [
        ArticleEvent(article_id=f"q{i}", title=" ".join(rng.sample(heads["ab"[i % 2]].split(), 2)))
        for i in range(40)
    ]

    def headline_accuracy(weight: float) -> float:
        params = {"section_lead_weight": weight, "section_headline_weight": weight}
        predictor = Predictor.from_trained(train(records, name="h", cv_folds=3, params=params))
        results = predictor.predict(queries)
        labels = [r.section.label if r.section else "" for r in results]
        return sum(label == "ab"[i % 2] for i, label in enumerate(labels)) / len(queries)

    without, with_views = headline_accuracy(0.0), headline_accuracy(0.5)
    assert without < 0.5
    assert with_views > 0.9


def test_body_sentences_of_held_out_articles_stay_out_of_training() -> None:
    """The section head's sentence examples follow their article into its fold.

    Labels are random; each article carries a word of its own in its headline and in every
    later sentence of its body. Were a held-out article's sentences in the training folds,
    that word would give its label away and held-out headlines would beat chance by far.
    """
    rng = random.Random(11)
    filler = ["the", "news", "today", "report", "said", "officials", "on", "monday"]
    records = []
    for i in range(120):
        own = f"token{i:04d}x"
        later = [f"Then {own} {' '.join(rng.sample(filler, 4))}." for _ in range(3)]
        records.append(
            LabelledArticle(
                article_id=f"s{i}",
                title=f"{own} {rng.choice(filler)}",
                body=" ".join(["The first sentence says nothing at all.", *later]),
                section=rng.choice(["a", "b"]),
            )
        )
    params = {"min_df": 1, "section_sentence_weight": 1.0}
    cv = train(records, name="leak", cv_folds=4, params=params).estimator.cv_
    for view in ("full", "lead", "headline"):
        predicted = cv.section_predicted_by_view[view]
        hits = sum(t == p for t, p in zip(cv.section_truth, predicted, strict=True))
        assert hits / len(records) < 0.7, view


def test_training_on_body_sentences_helps_headline_only_articles() -> None:
    """With body sentences as examples of their own, a headline's words count for what they
    say alone, not for the words they shared a full text with.

    Each body's strong words are its section's, in a sentence that also names the other
    section's headline words three times; its own headline words stand in a sentence of
    their own, once. From full texts alone the headline words look like the other section.
    """
    rng = random.Random(5)
    common = {"a": "Alpha apple amber", "b": "Beta berry bronze"}
    heads = {"a": "anchor arrow atlas axe", "b": "banner bishop bottle brick"}
    records = []
    for i in range(90):
        section, other = ("a", "b") if i % 2 == 0 else ("b", "a")
        body = " ".join(
            [
                "Nothing in this first sentence tells.",
                " ".join([common[section], *heads[other].split() * 3]) + ".",
                heads[section].capitalize() + ".",
            ]
        )
        title = " ".join(rng.sample(heads[section].split(), 2))
        records.append(LabelledArticle(article_id=f"p{i}", title=title, body=body, section=section))
    queries = [
        ArticleEvent(article_id=f"q{i}", title=" ".join(rng.sample(heads["ab"[i % 2]].split(), 2)))
        for i in range(40)
    ]

    def headline_accuracy(weight: float) -> float:
        params = {
            "section_lead_weight": 0.0,
            "section_headline_weight": 0.0,
            "section_sentence_weight": weight,
        }
        predictor = Predictor.from_trained(train(records, name="p", cv_folds=3, params=params))
        labels = [r.section.label if r.section else "" for r in predictor.predict(queries)]
        return sum(label == "ab"[i % 2] for i, label in enumerate(labels)) / len(queries)

    without, with_sentences = headline_accuracy(0.0), headline_accuracy(0.5)
    assert without < 0.5
    assert with_sentences > 0.9


def test_a_negative_sentence_count_is_refused() -> None:
    """A negative number of body sentences is a training error naming the parameter."""
    with pytest.raises(TrainingError, match="section_sentences"):
        train(tiny_corpus(), name="x", cv_folds=3, params={"section_sentences": -1})


@pytest.mark.parametrize(
    "name", ["section_lead_weight", "tag_headline_weight", "section_sentence_weight"]
)
def test_a_negative_view_weight_is_refused(name: str) -> None:
    """A view weight below 0 is a training error naming the parameter."""
    with pytest.raises(TrainingError, match=name):
        train(tiny_corpus(), name="x", cv_folds=3, params={name: -0.5})
