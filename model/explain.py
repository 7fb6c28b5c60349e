"""Explanations: the terms that raised a label's score the most, read off the linear model.

A label's decision score is ``sum_k x[k] * weights[k, label] + bias[label]`` over the
article's TF-IDF features ``x``, so ``x[k] * weights[k, label]`` is exactly what term ``k``
added to it. For each (article, label) pair asked about, the K largest positive
contributions are kept, largest first; equal contributions (after rounding) in column
order, which is the vocabulary's alphabetical order for a model trained here. Everything is
computed with array operations over the batch's non-zero features only: the cost grows with
the words of the articles, never with the size of the vocabulary.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from schemas import LabelExplanation, TermContribution

#: Contributions are rounded like scores, so outputs carry no float32 noise digits.
CONTRIBUTION_DECIMALS = 6

IndexArray = NDArray[np.intp]


@dataclass(frozen=True, slots=True, eq=False)
class TopTerms:
    """The kept contributions of every pair, grouped by pair in the order asked.

    Pair ``p``'s terms are ``columns[starts[p]:starts[p + 1]]`` with their
    ``contributions`` (rounded, positive, largest first).
    """

    starts: IndexArray
    columns: IndexArray
    contributions: NDArray[np.float64]


def top_terms(
    features: sp.csr_matrix,
    weights: NDArray[np.float32],
    rows: IndexArray,
    labels: IndexArray,
    k: int,
) -> TopTerms:
    """The at most ``k`` largest positive contributions of each pair (``rows[p]``, ``labels[p]``).

    ``features`` is the batch's (articles x terms) CSR matrix and ``weights`` the model's
    (terms x labels) matrix; ``labels`` index its columns.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    n_pairs = rows.size
    indptr = features.indptr
    first = indptr[rows].astype(np.intp)
    lengths = (indptr[rows + 1] - indptr[rows]).astype(np.intp)
    # One entry per (pair, non-zero feature of that pair's article).
    pair = np.repeat(np.arange(n_pairs, dtype=np.intp), lengths)
    offsets = np.cumsum(lengths) - lengths
    position = np.repeat(first - offsets, lengths) + np.arange(pair.size, dtype=np.intp)
    columns = features.indices[position].astype(np.intp)
    # A flat take: a fraction of the cost of 2-D fancy indexing.
    flat = columns * weights.shape[1] + np.repeat(labels, lengths)
    raw = features.data[position] * weights.reshape(-1)[flat]
    keep = raw > 0.0
    pair, columns = pair[keep], columns[keep]
    micro = np.rint(raw[keep].astype(np.float64) * 10**CONTRIBUTION_DECIMALS).astype(np.int64)
    keep = micro > 0  # a contribution that rounds to 0 raised nothing worth showing
    pair, columns, micro = pair[keep], columns[keep], micro[keep]
    order = _order(pair, micro, columns, n_pairs, weights.shape[0])
    pair, columns, micro = pair[order], columns[order], micro[order]
    starts = np.searchsorted(pair, np.arange(n_pairs + 1), side="left").astype(np.intp)
    rank = np.arange(pair.size) - np.repeat(starts[:-1], np.diff(starts))
    top = rank < k
    pair, columns = pair[top], columns[top]
    contributions = micro[top] / 10**CONTRIBUTION_DECIMALS
    starts = np.searchsorted(pair, np.arange(n_pairs + 1), side="left").astype(np.intp)
    return TopTerms(starts=starts, columns=columns, contributions=contributions)


def _order(
    pair: IndexArray, micro: NDArray[np.int64], columns: IndexArray, n_pairs: int, n_terms: int
) -> IndexArray:
    """The permutation sorting by pair, then largest contribution, then column.

    One argsort of a single integer key when it fits in 63 bits (always, for real models:
    contributions are at most the largest weight, as TF-IDF values are at most 1), else a
    three-key lexsort. Keys are unique (a term appears once per article), so any sort works.
    """
    if pair.size == 0:
        return np.zeros(0, dtype=np.intp)
    top = int(micro.max())
    if n_pairs * (top + 1) * n_terms < 2**62:
        key = (pair.astype(np.int64) * (top + 1) + (top - micro)) * n_terms + columns
        return np.argsort(key).astype(np.intp)
    return np.lexsort((columns, -micro, pair)).astype(np.intp)


def label_explanations(
    found: TopTerms, pair_labels: Sequence[str], vocabulary: Sequence[str]
) -> list[LabelExplanation]:
    """One ``LabelExplanation`` per pair, in order, naming the terms of the vocabulary."""
    starts = found.starts.tolist()
    columns = found.columns.tolist()
    contributions = found.contributions.tolist()
    # Valid by construction (positive, finite, at most k terms): no per-object validation.
    return [
        LabelExplanation(
            label=label,
            terms=[
                TermContribution(term=vocabulary[column], contribution=value)
                for column, value in zip(
                    columns[starts[p] : starts[p + 1]],
                    contributions[starts[p] : starts[p + 1]],
                    strict=True,
                )
            ],
        )
        for p, label in enumerate(pair_labels)
    ]
