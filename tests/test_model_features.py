"""The inference-time vectoriser reproduces the training vectoriser exactly."""

from __future__ import annotations

import numpy as np

from model.features import CompiledVectorizer, make_vectorizer

TEXTS = [
    "Shares of Acme Corp rose 5 pct on Monday after strong results.",
    "Acme shares fell; results were weak. Acme! Acme?",
    "The central bank raised interest rates by half a point.",
    "Interest rates and shares: the bank and Acme.",
]


def test_compiled_transform_equals_sklearn_transform() -> None:
    """CompiledVectorizer gives the same TF-IDF rows as the fitted TfidfVectorizer."""
    vectorizer = make_vectorizer(ngram_max=2, min_df=1, max_df=1.0).fit(TEXTS)
    compiled = CompiledVectorizer.from_fitted(vectorizer)
    unseen = ["Acme raised rates", "", "??", "zzz unknown words only", TEXTS[1]]
    expected = vectorizer.transform(TEXTS + unseen).toarray()
    actual = compiled.transform(TEXTS + unseen).toarray()
    assert actual.dtype == np.float32
    np.testing.assert_allclose(actual, expected, atol=1e-6)
