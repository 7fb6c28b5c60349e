"""The fitted model reduced to what inference needs: plain arrays, labels and scalars.

Nothing here is a scikit-learn object, so an artifact stores it as data (``model.artifact``)
and loading one never unpickles anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from model.features import CompiledVectorizer
from model.text import HasTitleAndBody, compose_text
from model.thresholds import sigmoid

Float32Array = NDArray[np.float32]


@dataclass(frozen=True, slots=True, eq=False)
class LinearTextModel:
    """Both heads as one linear map over the shared TF-IDF features.

    ``vocabulary[k]`` is the term of feature column ``k`` and ``idf[k]`` its inverse document
    frequency (the fitted TF-IDF settings are fixed, see ``model.features``). ``weights``
    holds the section columns first, then the tag columns, so one sparse-dense product
    scores every label of a batch. This is what an artifact stores (``model.artifact``
    lists how each field is stored: add a new field there too).
    """

    vocabulary: tuple[str, ...]
    idf: Float32Array
    ngram_max: int
    weights: Float32Array
    bias: Float32Array
    sections: tuple[str, ...]
    tags: tuple[str, ...]
    section_temperature: float
    tag_thresholds: Float32Array
    tag_slope: float
    title_repeats: int

    def texts(self, articles: Sequence[HasTitleAndBody]) -> list[str]:
        """The strings the vectoriser sees for these articles."""
        repeats = self.title_repeats
        return [compose_text(article.title, article.body, repeats) for article in articles]


@dataclass(frozen=True, slots=True, eq=False)
class ScoredBatch:
    """Scores of one batch: section probabilities, tag scores and tag decisions."""

    section_probabilities: Float32Array
    tag_scores: Float32Array
    tag_decisions: NDArray[np.bool_]


class CompiledModel:
    """A ``LinearTextModel`` with its per-call constants precomputed; read-only after init."""

    __slots__ = (
        "_bias",
        "_n_sections",
        "_slope",
        "_temperature",
        "_thresholds",
        "_vectorizer",
        "_weights",
        "model",
    )

    def __init__(self, model: LinearTextModel) -> None:
        self.model = model
        self._vectorizer = CompiledVectorizer(model.vocabulary, model.idf, model.ngram_max)
        self._weights = np.ascontiguousarray(model.weights, dtype=np.float32)
        self._bias = np.asarray(model.bias, dtype=np.float32)
        self._n_sections = len(model.sections)
        self._temperature = np.float32(model.section_temperature)
        self._thresholds = np.asarray(model.tag_thresholds, dtype=np.float32)
        self._slope = np.float32(model.tag_slope)

    def score(self, articles: Sequence[HasTitleAndBody]) -> ScoredBatch:
        """Score a batch of articles with both heads."""
        features = self._vectorizer.transform(self.model.texts(articles))
        decisions = np.asarray(features @ self._weights) + self._bias
        return self.score_decisions(decisions)

    def score_decisions(self, decisions: Float32Array) -> ScoredBatch:
        """Turn raw decision scores (sections, then tags) into probabilities and decisions."""
        sections = decisions[:, : self._n_sections] / self._temperature
        if self._n_sections:
            sections -= sections.max(axis=1, keepdims=True)
            np.exp(sections, out=sections)
            sections /= sections.sum(axis=1, keepdims=True)
        margins = decisions[:, self._n_sections :] - self._thresholds
        return ScoredBatch(
            section_probabilities=sections,
            tag_scores=sigmoid(self._slope * margins).astype(np.float32, copy=False),
            # Decided on the margin, not the rounded score, so that 0.5 ties cannot flip.
            tag_decisions=margins > 0,
        )
