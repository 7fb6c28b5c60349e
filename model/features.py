"""The shared text-feature pipeline: one TF-IDF vectoriser for both heads.

Training uses scikit-learn's ``TfidfVectorizer``; inference uses ``CompiledVectorizer``,
which reproduces the same features from the fitted vocabulary but counts tokens with
C-level ``Counter`` instead of scikit-learn's per-token Python loop (about twice as fast).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from itertools import islice

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray
from sklearn.feature_extraction.text import TfidfVectorizer

from model.errors import ModelError

# scikit-learn's default token pattern: words of two or more word characters.
TOKEN_PATTERN = r"(?u)\b\w\w+\b"  # noqa: S105 - a regex, not a secret


def make_vectorizer(*, ngram_max: int, min_df: int, max_df: float) -> TfidfVectorizer:
    """An unfitted TF-IDF vectoriser with the settings ``CompiledVectorizer`` can reproduce."""
    return TfidfVectorizer(
        lowercase=True,
        token_pattern=TOKEN_PATTERN,
        ngram_range=(1, ngram_max),
        min_df=min_df,
        max_df=max_df,
        sublinear_tf=True,
        norm="l2",
        use_idf=True,
        smooth_idf=True,
        dtype=np.float32,
    )


#: The fitted settings ``CompiledVectorizer`` reproduces; anything else is refused.
SUPPORTED_SETTINGS: dict[str, object] = {
    "lowercase": True,
    "token_pattern": TOKEN_PATTERN,
    "sublinear_tf": True,
    "norm": "l2",
    "analyzer": "word",
    "preprocessor": None,
    "tokenizer": None,
    "stop_words": None,
    "strip_accents": None,
}


def export_fitted(fitted: TfidfVectorizer) -> tuple[tuple[str, ...], NDArray[np.float32], int]:
    """A fitted vectoriser as plain data: (terms in column order, idf, ngram_max).

    Refuses settings that ``CompiledVectorizer`` cannot reproduce, so what is exported
    always transforms exactly like ``fitted``.
    """
    params = fitted.get_params()
    for key, value in SUPPORTED_SETTINGS.items():
        if params[key] != value:
            raise ModelError(f"vectoriser setting {key}={params[key]!r} is not supported")
    if params["ngram_range"][0] != 1:
        raise ModelError("vectoriser n-grams must start at 1")
    terms = [""] * len(fitted.vocabulary_)
    for term, column in fitted.vocabulary_.items():
        terms[column] = term
    idf = np.asarray(fitted.idf_, dtype=np.float32)
    return tuple(terms), idf, int(params["ngram_range"][1])


class CompiledVectorizer:
    """TF-IDF from plain data (vocabulary, idf, n-gram length) for fast, read-only transforms.

    ``terms[k]`` is the term of column ``k``, as in a fitted ``TfidfVectorizer``'s
    ``vocabulary_``; ``idf[k]`` its inverse document frequency.
    """

    __slots__ = ("_idf", "_ngram_max", "_token", "_vocabulary")

    def __init__(self, terms: Sequence[str], idf: NDArray[np.float32], ngram_max: int) -> None:
        if len(terms) != idf.shape[0]:
            raise ModelError(f"{len(terms)} vocabulary terms but {idf.shape[0]} idf values")
        if ngram_max < 1:
            raise ModelError(f"ngram_max must be at least 1, got {ngram_max}")
        self._ngram_max = int(ngram_max)
        self._token = re.compile(TOKEN_PATTERN)
        self._vocabulary: dict[str, int] = {term: column for column, term in enumerate(terms)}
        if len(self._vocabulary) != len(terms):
            raise ModelError("the vocabulary repeats a term")
        self._idf: NDArray[np.float32] = np.asarray(idf, dtype=np.float32)

    @classmethod
    def from_fitted(cls, fitted: TfidfVectorizer) -> CompiledVectorizer:
        """The compiled form of a fitted scikit-learn vectoriser."""
        return cls(*export_fitted(fitted))

    @property
    def n_features(self) -> int:
        """Width of the feature space."""
        return int(self._idf.shape[0])

    def transform(self, texts: Iterable[str]) -> sp.csr_matrix:
        """TF-IDF rows (float32 CSR, L2-normalised), equal to the fitted vectoriser's."""
        vocabulary = self._vocabulary
        indices: list[int] = []
        counts: list[int] = []
        lengths: list[int] = []
        for text in texts:
            tokens = self._token.findall(text.lower())
            grams: Counter[str] = Counter(tokens)
            for n in range(2, self._ngram_max + 1):
                grams.update(
                    map(" ".join, zip(*(islice(tokens, k, None) for k in range(n)), strict=False))
                )
            before = len(indices)
            for gram, count in grams.items():
                column = vocabulary.get(gram)
                if column is not None:
                    indices.append(column)
                    counts.append(count)
            lengths.append(len(indices) - before)
        return self._weigh(indices, counts, lengths)

    def _weigh(self, indices: list[int], counts: list[int], lengths: list[int]) -> sp.csr_matrix:
        columns = np.asarray(indices, dtype=np.int32)
        values = np.log(np.asarray(counts, dtype=np.float32))
        values += 1.0
        values *= self._idf[columns]
        indptr = np.zeros(len(lengths) + 1, dtype=np.int32)
        np.cumsum(lengths, out=indptr[1:])
        rows = np.repeat(np.arange(len(lengths)), lengths)
        norms = np.sqrt(np.bincount(rows, weights=values * values, minlength=len(lengths)))
        # An empty row has nothing to scale; 1 avoids dividing by zero.
        norms[norms == 0.0] = 1.0
        values /= norms.astype(np.float32)[rows]
        shape = (len(lengths), self.n_features)
        return sp.csr_matrix((values, columns, indptr), shape=shape)
