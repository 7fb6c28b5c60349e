"""Section-score calibration: the temperature fitted on all views, and measures of honesty."""

from __future__ import annotations

import numpy as np

from model import Predictor, train
from model.calibration import (
    expected_calibration_error,
    fit_temperature,
    reliability_table,
    softmax_probabilities,
)
from model.features import CompiledVectorizer
from schemas import ArticleEvent, LabelledArticle


def test_fit_temperature_recovers_the_temperature_that_generated_the_labels() -> None:
    """Labels drawn from softmax(scores / T) give back roughly T."""
    rng = np.random.default_rng(0)
    n = 20_000
    scores = rng.normal(0.0, 3.0, size=(n, 4))
    probabilities = softmax_probabilities(scores, 1.7)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0)
    y = (probabilities.cumsum(axis=1) > rng.random((n, 1))).argmax(axis=1)
    assert abs(fit_temperature(scores, y) - 1.7) < 0.1


def test_reliability_table_and_ece_on_known_numbers() -> None:
    """Bins hold their members' mean confidence and accuracy; ECE weighs gaps by size."""
    confidence = np.array([0.95, 0.95, 0.95, 0.95, 0.55, 0.55, 1.0])
    correct = np.array([True, True, True, False, True, False, True])
    table = reliability_table(confidence, correct)
    assert [(b.low, b.count) for b in table] == [(0.5, 2), (0.9, 5)]
    assert table[1].accuracy == 0.8
    expected = (2 * abs(0.5 - 0.55) + 5 * abs(0.8 - 0.96)) / 7
    assert abs(expected_calibration_error(confidence, correct) - expected) < 1e-9
    assert expected_calibration_error(np.zeros(0), np.zeros(0, dtype=np.bool_)) == 0.0


def _corpus() -> list[LabelledArticle]:
    words = {
        "sport": "match goal striker league coach stadium referee penalty",
        "business": "shares profit market investors earnings bank merger revenue",
    }
    records = []
    for i in range(80):
        section = list(words)[i % 2]
        vocabulary = words[section].split()
        title = " ".join(vocabulary[i % 4 : i % 4 + 3])
        body = " ".join(vocabulary * 2 + ["the", "news", "today", f"filler{i % 7}"])
        records.append(LabelledArticle(article_id=f"c{i}", title=title, body=body, section=section))
    return records


def test_the_temperature_is_fitted_on_every_view_and_applied_at_inference() -> None:
    """Predictor section scores are softmax(scores / T), T fitted on the mix of views."""
    # Words, so the rows can be rebuilt with the word vectoriser alone (sections alone
    # would default to words and character n-grams).
    trained = train(_corpus(), name="c", cv_folds=4, features="word")
    estimator = trained.estimator
    articles = [
        ArticleEvent(article_id="a", title="striker goal", body="match league coach stadium"),
        ArticleEvent(article_id="b", title="profit", body=""),
        ArticleEvent(article_id="c", title="zzz unknown", body="words only"),
    ]
    model = trained.model
    features = CompiledVectorizer(model.vocabulary, model.idf, model.ngram_max).transform(
        model.texts(articles)
    )
    scores = np.asarray(features @ estimator.section_coef_ + estimator.section_intercept_)
    expected = softmax_probabilities(scores, estimator.section_temperature_)
    actual = Predictor.from_trained(trained).score(articles).section_probabilities
    np.testing.assert_allclose(actual, expected, atol=1e-5)
    # The cross-validated probabilities of every view are calibrated the same way.
    for view in ("full", "lead", "headline"):
        probabilities = estimator.cv_.section_probabilities_by_view[view]
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0)
