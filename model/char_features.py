"""Character n-grams within word boundaries, TF-IDF weighted: a training option.

Character n-grams carry what a word vocabulary loses on text unlike the training data:
inflections, compounds, names and misspellings share most of their n-grams with words
the model knows. Training uses scikit-learn's ``TfidfVectorizer(analyzer="char_wb")``;
inference uses ``CompiledCharVectorizer``, which reproduces its rows from the fitted
n-grams and idf with array operations (``model.tokens.CharGrams``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray
from sklearn.feature_extraction.text import TfidfVectorizer

from model.errors import ModelError
from model.features import CountedFeatures, tf_idf
from model.tokens import CharGrams, CodePoints, TermIndex

#: Longest character n-gram an artifact may ask for.
MAX_CHAR_NGRAM = 8


def make_char_vectorizer(
    *, ngram_min: int, ngram_max: int, min_df: int, max_df: float
) -> TfidfVectorizer:
    """An unfitted ``char_wb`` TF-IDF vectoriser that ``CompiledCharVectorizer`` reproduces."""
    return TfidfVectorizer(
        analyzer="char_wb",
        lowercase=True,
        ngram_range=(ngram_min, ngram_max),
        min_df=min_df,
        max_df=max_df,
        sublinear_tf=True,
        norm="l2",
        use_idf=True,
        smooth_idf=True,
        dtype=np.float32,
    )


#: The fitted settings ``CompiledCharVectorizer`` reproduces; anything else is refused.
SUPPORTED_CHAR_SETTINGS: dict[str, object] = {
    "analyzer": "char_wb",
    "lowercase": True,
    "sublinear_tf": True,
    "norm": "l2",
    "preprocessor": None,
    "strip_accents": None,
}


def export_char_fitted(
    fitted: TfidfVectorizer,
) -> tuple[tuple[str, ...], NDArray[np.float32], int, int]:
    """A fitted ``char_wb`` vectoriser as plain data: (n-grams in column order, idf,
    shortest and longest n). Refuses settings the compiled form cannot reproduce."""
    params = fitted.get_params()
    for key, value in SUPPORTED_CHAR_SETTINGS.items():
        if params[key] != value:
            raise ModelError(f"character vectoriser setting {key}={params[key]!r} is not supported")
    ngram_min, ngram_max = (int(n) for n in params["ngram_range"])
    terms = [""] * len(fitted.vocabulary_)
    for term, column in fitted.vocabulary_.items():
        terms[column] = term
    return tuple(terms), np.asarray(fitted.idf_, dtype=np.float32), ngram_min, ngram_max


class CompiledCharVectorizer:
    """``char_wb`` TF-IDF from plain data (n-grams, idf, n-gram range), read-only.

    ``transform_counted`` counts n-grams, not words: ``tokens[i]`` is the number of
    character n-grams of text ``i`` and ``unknown_tokens[i]`` those not in the vocabulary.
    """

    __slots__ = ("_idf", "_index", "_ngram_max", "_ngram_min")

    def __init__(
        self, terms: Sequence[str], idf: NDArray[np.float32], ngram_min: int, ngram_max: int
    ) -> None:
        if len(terms) != idf.shape[0]:
            raise ModelError(f"{len(terms)} character n-grams but {idf.shape[0]} idf values")
        if not 1 <= ngram_min <= ngram_max <= MAX_CHAR_NGRAM:
            raise ModelError(
                f"character n-grams must be 1 <= min <= max <= {MAX_CHAR_NGRAM}, "
                f"got {ngram_min} and {ngram_max}"
            )
        if len(set(terms)) != len(terms):
            raise ModelError("the character vocabulary repeats an n-gram")
        self._ngram_min, self._ngram_max = int(ngram_min), int(ngram_max)
        self._idf: NDArray[np.float32] = np.asarray(idf, dtype=np.float32)
        self._index = TermIndex(terms)

    @classmethod
    def from_fitted(cls, fitted: TfidfVectorizer) -> CompiledCharVectorizer:
        """The compiled form of a fitted ``char_wb`` vectoriser."""
        return cls(*export_char_fitted(fitted))

    @property
    def n_features(self) -> int:
        """Width of the feature space."""
        return int(self._idf.shape[0])

    def transform(self, texts: Iterable[str]) -> sp.csr_matrix:
        """TF-IDF rows (float32 CSR, L2-normalised), equal to the fitted vectoriser's."""
        return self.transform_counted(texts).matrix

    def transform_counted(self, texts: Iterable[str]) -> CountedFeatures:
        """``transform``, plus each text's n-gram count and unknown n-gram count."""
        batch = CodePoints.of(list(texts))
        grams = CharGrams.of(batch, self._ngram_min, self._ngram_max)
        padded = grams.as_batch()
        columns = self._index.lookup(
            padded, self._index.hasher(padded), grams.starts, grams.lengths
        )
        n_texts = batch.n_texts
        tokens = np.bincount(grams.rows, minlength=n_texts).astype(np.int64)
        known = np.bincount(grams.rows[columns >= 0], minlength=n_texts)
        return tf_idf(
            self._idf,
            grams.rows,
            columns,
            CountedFeatures(
                matrix=sp.csr_matrix((n_texts, self.n_features), dtype=np.float32),
                tokens=tokens,
                unknown_tokens=tokens - known,
            ),
            first_occurrence=False,
        )
