"""The fitted model reduced to what inference needs: plain arrays, labels and scalars.

Nothing here is a scikit-learn object, so an artifact stores it as data (``model.artifact``)
and loading one never unpickles anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from model.feature_sets import CompiledFeatures, FeatureSet
from model.features import CountedFeatures
from model.text import HasTitleAndBody, compose_text
from model.thresholds import sigmoid

Float32Array = NDArray[np.float32]


@dataclass(frozen=True, slots=True, eq=False)
class LinearTextModel:
    """Both heads as one linear map over the shared TF-IDF features.

    ``vocabulary[k]`` is the term of feature column ``k`` and ``idf[k]`` its inverse document
    frequency (the fitted TF-IDF settings are fixed, see ``model.features``). A model with
    character n-grams (``features``, see ``model.feature_sets``) has their columns after the
    words': ``char_vocabulary[j]`` is column ``len(vocabulary) + j`` (and ``idf`` covers
    both). ``weights``
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
    features: FeatureSet = "word"
    char_vocabulary: tuple[str, ...] = ()
    char_ngram_min: int = 0
    char_ngram_max: int = 0

    @property
    def feature_names(self) -> tuple[str, ...]:
        """The term of every feature column: the words, then the character n-grams."""
        return self.vocabulary + self.char_vocabulary

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
        self._vectorizer = CompiledFeatures(
            model.features,
            vocabulary=model.vocabulary,
            idf=model.idf,
            ngram_max=model.ngram_max,
            char_vocabulary=model.char_vocabulary,
            char_ngram_min=model.char_ngram_min,
            char_ngram_max=model.char_ngram_max,
        )
        self._weights = np.ascontiguousarray(model.weights, dtype=np.float32)
        self._bias = np.asarray(model.bias, dtype=np.float32)
        self._n_sections = len(model.sections)
        self._temperature = np.float32(model.section_temperature)
        self._thresholds = np.asarray(model.tag_thresholds, dtype=np.float32)
        self._slope = np.float32(model.tag_slope)

    def score(self, articles: Sequence[HasTitleAndBody]) -> ScoredBatch:
        """Score a batch of articles with both heads."""
        return self.score_features(self.features(articles))

    def features(self, articles: Sequence[HasTitleAndBody]) -> CountedFeatures:
        """The batch's TF-IDF rows and token counts."""
        return self._vectorizer.transform_counted(self.model.texts(articles))

    def score_features(self, features: CountedFeatures) -> ScoredBatch:
        """Score a batch from its features (``features``)."""
        decisions = np.asarray(features.matrix @ self._weights) + self._bias
        return self.score_decisions(decisions)

    @property
    def vectorizer(self) -> CompiledFeatures:
        """The feature extraction the scores start from."""
        return self._vectorizer

    @property
    def weights(self) -> Float32Array:
        """The (features x labels) weights, sections first, as the scores use them."""
        return self._weights

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
