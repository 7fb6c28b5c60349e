"""Per-tag decision thresholds (SCut with an fbr fallback) and the score mapping.

Thresholds are tuned on out-of-fold decision scores, so they reflect how the model ranks
articles it has not seen. A tag whose best out-of-fold F1 stays below ``fbr`` (typically a
very rare tag, whose few positives were never in the model that scored them) falls back to
the linear model's own boundary at 0 rather than to "never": the final model is trained on
every positive, so the tag can still be predicted.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import minimize_scalar

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]

#: Decision-score threshold used for tags whose tuned F1 is below ``fbr``.
FALLBACK_THRESHOLD = 0.0


def best_f1_cut(scores: FloatArray, positive: BoolArray) -> tuple[float, float]:
    """The threshold that maximises F1 of ``scores > threshold``, and that F1.

    The cut is placed half way between two adjacent distinct scores so that it does not
    sit exactly on a training score. With no positives the F1 is 0 and no cut is found.
    """
    n_positive = int(positive.sum())
    if n_positive == 0 or scores.size == 0:
        return float("inf"), 0.0
    order = np.argsort(-scores, kind="stable")
    ranked = scores[order]
    true_positives = np.cumsum(positive[order])
    f1 = 2.0 * true_positives / (np.arange(1, scores.size + 1) + n_positive)
    # Only a change of score is a place to cut: ties fall on the same side.
    distinct = np.r_[ranked[:-1] > ranked[1:], True]
    f1 = np.where(distinct, f1, -1.0)
    best = int(np.argmax(f1))
    cut = (ranked[best] + ranked[best + 1]) / 2.0 if best + 1 < scores.size else ranked[best] - 1.0
    return float(cut), float(f1[best])


def tune_thresholds(
    scores: FloatArray,
    labels: BoolArray,
    *,
    fbr: float,
    rare_count: int = 0,
    rare_threshold: float = FALLBACK_THRESHOLD,
) -> FloatArray:
    """One threshold per column of ``scores`` (SCut, falling back below ``fbr``).

    A column with fewer than ``rare_count`` positives has too few out-of-fold scores for
    SCut to place its cut well (it tends to sit too high: the positives were scored by
    models that saw even fewer of them), so its threshold is capped at ``rare_threshold``.
    """
    thresholds = np.empty(scores.shape[1], dtype=np.float64)
    for column in range(scores.shape[1]):
        cut, f1 = best_f1_cut(scores[:, column], labels[:, column])
        threshold = cut if f1 >= fbr and f1 > 0.0 else FALLBACK_THRESHOLD
        if int(labels[:, column].sum()) < rare_count:
            threshold = min(threshold, rare_threshold)
        thresholds[column] = threshold
    return thresholds


def cross_fitted_thresholds(
    scores: FloatArray,
    labels: BoolArray,
    folds: NDArray[np.intp],
    *,
    fbr: float,
    rare_count: int = 0,
    rare_threshold: float = FALLBACK_THRESHOLD,
) -> FloatArray:
    """Row ``k``: the thresholds for fold ``k``, tuned on the other folds only.

    Folds are numbered ``0 .. n_folds - 1``; ``scores > result[folds]`` are then decisions
    whose metrics are honest about threshold tuning without a nested cross-validation: the
    scores of a fold never influence the threshold applied to it. The same thresholds can be
    applied to other scores of the same rows (a shorter view of each article).
    """
    n_folds = int(folds.max()) + 1 if folds.size else 0
    result = np.zeros((n_folds, scores.shape[1]), dtype=np.float64)
    for fold in range(n_folds):
        held_out = folds == fold
        result[fold] = tune_thresholds(
            scores[~held_out],
            labels[~held_out],
            fbr=fbr,
            rare_count=rare_count,
            rare_threshold=rare_threshold,
        )
    return result


def cross_fitted_predictions(
    scores: FloatArray,
    labels: BoolArray,
    folds: NDArray[np.intp],
    *,
    fbr: float,
    rare_count: int = 0,
    rare_threshold: float = FALLBACK_THRESHOLD,
) -> BoolArray:
    """Tag decisions for each fold with thresholds tuned on the other folds only."""
    thresholds = cross_fitted_thresholds(
        scores, labels, folds, fbr=fbr, rare_count=rare_count, rare_threshold=rare_threshold
    )
    predicted: BoolArray = scores > thresholds[folds]
    return predicted


def fit_slope(margins: FloatArray, labels: BoolArray) -> float:
    """Slope ``a`` of ``sigmoid(a * margin)`` that best fits the labels (log loss).

    The margin is the decision score minus the tag's threshold, so a score of 0.5 is the
    decision boundary for every tag; one pooled slope is robust for rare tags.
    """
    if margins.size == 0:
        return 1.0
    targets = labels.astype(np.float64)

    def loss(log_slope: float) -> float:
        z = np.exp(log_slope) * margins
        # log(1 + exp(-z)) for positives and log(1 + exp(z)) for negatives, stably.
        return float(np.mean(np.logaddexp(0.0, np.where(targets > 0, -z, z))))

    result = minimize_scalar(loss, bounds=(-5.0, 5.0), method="bounded")
    return float(np.exp(result.x))


def sigmoid(values: NDArray[np.floating]) -> NDArray[np.floating]:
    """The logistic function, computed without overflow warnings."""
    out: NDArray[np.floating] = np.empty_like(values)
    positive = values >= 0
    out[positive] = 1.0 / (1.0 + np.exp(-values[positive]))
    exp = np.exp(values[~positive])
    out[~positive] = exp / (1.0 + exp)
    return out
