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
    raw = features.data[position] * weights[columns, np.repeat(labels, lengths)]
    contributions = np.round(raw.astype(np.float64), CONTRIBUTION_DECIMALS)
    keep = contributions > 0.0
    pair, columns, contributions = pair[keep], columns[keep], contributions[keep]
    # By pair, then largest contribution, then column: one total, deterministic order.
    order = np.lexsort((columns, -contributions, pair))
    pair, columns, contributions = pair[order], columns[order], contributions[order]
    group_start = np.searchsorted(pair, pair, side="left")
    top = (np.arange(pair.size) - group_start) < k
    pair, columns, contributions = pair[top], columns[top], contributions[top]
    starts = np.searchsorted(pair, np.arange(n_pairs + 1), side="left").astype(np.intp)
    return TopTerms(starts=starts, columns=columns, contributions=contributions)


def label_explanations(
    found: TopTerms, pair_labels: Sequence[str], vocabulary: Sequence[str]
) -> list[LabelExplanation]:
    """One ``LabelExplanation`` per pair, in order, naming the terms of the vocabulary."""
    starts = found.starts.tolist()
    columns = found.columns.tolist()
    contributions = found.contributions.tolist()
    # Valid by construction (positive, finite, at most k terms): no per-object validation.
    term = TermContribution.model_construct
    return [
        LabelExplanation.model_construct(
            label=label,
            terms=[
                term(term=vocabulary[column], contribution=value)
                for column, value in zip(
                    columns[starts[p] : starts[p + 1]],
                    contributions[starts[p] : starts[p + 1]],
                    strict=True,
                )
            ],
        )
        for p, label in enumerate(pair_labels)
    ]
