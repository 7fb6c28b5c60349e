"""The shared text-feature pipeline: one TF-IDF vectoriser for both heads.

Training uses scikit-learn's ``TfidfVectorizer``; inference uses ``CompiledVectorizer``,
which reproduces the same features from the fitted vocabulary with array operations over
the whole batch (``model.tokens``) instead of scikit-learn's per-token Python loop.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray
from sklearn.feature_extraction.text import TfidfVectorizer

from model.errors import ModelError
from model.tokens import CodePoints, TermIndex, runs, word_table

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


@dataclass(frozen=True, slots=True, eq=False)
class CountedFeatures:
    """TF-IDF rows of a batch of texts, and what the vocabulary made of each text.

    ``tokens[i]`` is the number of tokens (word occurrences) of text ``i`` and
    ``unknown_tokens[i]`` how many of them are not a term of the vocabulary (unigrams only:
    an unknown n-gram made of known words is not an unknown token).
    """

    matrix: sp.csr_matrix
    tokens: NDArray[np.int64]
    unknown_tokens: NDArray[np.int64]


class CompiledVectorizer:
    """TF-IDF from plain data (vocabulary, idf, n-gram length) for fast, read-only transforms.

    ``terms[k]`` is the term of column ``k``, as in a fitted ``TfidfVectorizer``'s
    ``vocabulary_``; ``idf[k]`` its inverse document frequency. A batch is tokenised as
    arrays (``model.tokens``): each token is looked up as a word of the vocabulary's terms
    (its *component*), and an n-gram as the tuple of its components' numbers.
    """

    __slots__ = ("_components", "_grams", "_idf", "_ngram_max", "_unigram_columns")

    def __init__(self, terms: Sequence[str], idf: NDArray[np.float32], ngram_max: int) -> None:
        if len(terms) != idf.shape[0]:
            raise ModelError(f"{len(terms)} vocabulary terms but {idf.shape[0]} idf values")
        if ngram_max < 1:
            raise ModelError(f"ngram_max must be at least 1, got {ngram_max}")
        if len(set(terms)) != len(terms):
            raise ModelError("the vocabulary repeats a term")
        self._ngram_max = int(ngram_max)
        self._idf: NDArray[np.float32] = np.asarray(idf, dtype=np.float32)
        words: dict[str, int] = {}
        split = [term.split(" ") for term in terms]
        for parts in split:
            for word in parts:
                words.setdefault(word, len(words))
        self._components = TermIndex(list(words))
        self._unigram_columns = np.full(len(words), -1, dtype=np.int64)
        by_length: dict[int, tuple[list[list[int]], list[int]]] = {}
        for column, parts in enumerate(split):
            if len(parts) == 1:
                self._unigram_columns[words[parts[0]]] = column
            elif len(parts) <= self._ngram_max:
                ids, columns = by_length.setdefault(len(parts), ([], []))
                ids.append([words[word] for word in parts])
                columns.append(column)
        self._grams = {
            n: _GramIndex(np.asarray(ids, dtype=np.int64), np.asarray(columns, dtype=np.int64))
            for n, (ids, columns) in by_length.items()
        }

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
        return self.transform_counted(texts).matrix

    def transform_counted(self, texts: Iterable[str]) -> CountedFeatures:
        """``transform``, plus each text's token count and how many of its tokens the
        vocabulary does not know (counted while counting the terms, at no extra pass)."""
        batch = CodePoints.of(list(texts))
        starts, lengths = runs(word_table()[batch.codes])
        long_enough = lengths >= 2
        starts, lengths = starts[long_enough], lengths[long_enough]
        rows = batch.rows(starts)
        index = self._components
        component = index.lookup(batch, index.hasher(batch), starts, lengths)
        known = component >= 0
        columns = np.where(known, self._unigram_columns[np.maximum(component, 0)], -1)
        found_rows, found_columns = [rows], [columns]
        for n, grams in sorted(self._grams.items()):
            first = np.arange(max(rows.size - n + 1, 0))
            # An n-gram: n consecutive tokens of one text, each a known component.
            whole = rows[first] == rows[first + n - 1]
            parts = np.stack([component[first + k] for k in range(n)], axis=1)[whole]
            found_rows.append(rows[first[whole]])
            found_columns.append(grams.lookup(parts))
        tokens = np.bincount(rows, minlength=batch.n_texts).astype(np.int64)
        unigram = columns >= 0
        known_tokens = np.bincount(rows[unigram], minlength=batch.n_texts)
        return tf_idf(
            self._idf,
            np.concatenate(found_rows),
            np.concatenate(found_columns),
            CountedFeatures(
                matrix=sp.csr_matrix((batch.n_texts, self.n_features), dtype=np.float32),
                tokens=tokens,
                unknown_tokens=tokens - known_tokens,
            ),
        )


class _GramIndex:
    """The n-gram terms of one length, as tuples of component numbers, for exact lookup."""

    __slots__ = ("_columns", "_keys", "_order", "_parts")

    def __init__(self, parts: NDArray[np.int64], columns: NDArray[np.int64]) -> None:
        keys = _gram_keys(parts)
        self._order = np.argsort(keys, kind="stable")
        self._keys = keys[self._order]
        self._parts = parts
        self._columns = columns

    def lookup(self, parts: NDArray[np.int64]) -> NDArray[np.int64]:
        """The column of each row of components, or -1 (also for any unknown component)."""
        found = np.full(parts.shape[0], -1, dtype=np.int64)
        if not parts.shape[0] or not self._keys.size:
            return found
        keys = _gram_keys(parts)
        slot = np.minimum(np.searchsorted(self._keys, keys), self._keys.size - 1)
        term = self._order[slot]
        # Keys may collide; the components themselves decide. -1 is never a component.
        same = (self._keys[slot] == keys) & (self._parts[term] == parts).all(axis=1)
        found[same] = self._columns[term[same]]
        return found


def _gram_keys(parts: NDArray[np.int64]) -> NDArray[np.uint64]:
    keys = np.zeros(parts.shape[0], dtype=np.uint64)
    for k in range(parts.shape[1]):
        keys = keys * np.uint64(0x9E3779B97F4A7C15) + (parts[:, k] + 1).astype(np.uint64)
    return keys


def tf_idf(
    idf: NDArray[np.float32],
    rows: NDArray[np.int64],
    columns: NDArray[np.int64],
    empty: CountedFeatures,
    *,
    first_occurrence: bool = True,
) -> CountedFeatures:
    """``empty`` with its matrix filled: sublinear TF-IDF, L2-normalised, of the
    (row, column) occurrences (column -1: not a term). With ``first_occurrence`` each row's
    columns come in the order of their first occurrence, unigrams before longer n-grams, as
    a ``Counter`` of the tokens gives them (so the sums, and the scores, are bit for bit
    those of a ``Counter``); otherwise in column order, as scikit-learn sorts them."""
    n_rows, n_features = empty.matrix.shape
    known = columns >= 0
    keys = rows[known] * n_features + columns[known]
    if not first_occurrence:
        unique, counts = _counted(keys, n_rows * n_features)
        found_rows = unique // n_features
    else:
        unique, counts = _counted_in_first_order(keys, n_rows * n_features)
        found_rows = unique // n_features
    if found_rows.size and (found_rows[1:] < found_rows[:-1]).any():
        # ``first`` orders by position in the concatenation (unigrams, then bigrams, ...),
        # which is by row for unigrams only: a stable sort by row keeps that order per row.
        by_row = np.argsort(found_rows, kind="stable")
        found_rows, unique, counts = found_rows[by_row], unique[by_row], counts[by_row]
    column_array = (unique % n_features).astype(np.int32)
    values = np.log(counts.astype(np.float32))
    values += 1.0
    values *= idf[column_array]
    lengths = np.bincount(found_rows, minlength=n_rows)
    indptr = np.zeros(n_rows + 1, dtype=np.int32)
    np.cumsum(lengths, out=indptr[1:])
    norms = np.sqrt(np.bincount(found_rows, weights=values * values, minlength=n_rows))
    # An empty row has nothing to scale; 1 avoids dividing by zero.
    norms[norms == 0.0] = 1.0
    values /= norms.astype(np.float32)[found_rows]
    return CountedFeatures(
        matrix=sp.csr_matrix((values, column_array, indptr), shape=(n_rows, n_features)),
        tokens=empty.tokens,
        unknown_tokens=empty.unknown_tokens,
    )


def _counted(keys: NDArray[np.int64], bound: int) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """``np.unique(keys, return_counts=True)`` for keys in ``[0, bound)``, sorting 32-bit
    keys when they fit (half the memory to move: the char n-grams' sort is the bulk)."""
    ranked = np.sort(keys.astype(np.uint32) if bound <= 2**32 else keys)
    if not ranked.size:
        return keys[:0], keys[:0]
    change = np.empty(ranked.size, dtype=np.bool_)
    change[0] = True
    np.not_equal(ranked[1:], ranked[:-1], out=change[1:])
    firsts = np.flatnonzero(change)
    counts = np.diff(firsts, append=ranked.size)
    return ranked[firsts].astype(np.int64), counts


def _counted_in_first_order(
    keys: NDArray[np.int64], bound: int
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """The distinct keys in the order of their first occurrence, and how often each occurs
    (one stable sort; the order is restored by marking first occurrences, not sorting)."""
    if not keys.size:
        return keys[:0], keys[:0]
    order = np.argsort(keys.astype(np.uint32) if bound <= 2**32 else keys, kind="stable")
    ranked = keys[order]
    change = np.empty(ranked.size, dtype=np.bool_)
    change[0] = True
    np.not_equal(ranked[1:], ranked[:-1], out=change[1:])
    starts = np.flatnonzero(change)
    # A stable sort puts each key's earliest position first in its run.
    first = order[starts]
    tally = np.zeros(keys.size, dtype=np.int64)
    tally[first] = np.diff(starts, append=ranked.size)
    is_first = tally > 0
    return keys[is_first], tally[is_first]
