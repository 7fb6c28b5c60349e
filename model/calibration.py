"""Section-score calibration: a softmax temperature that grows when evidence is thin.

A linear model's decision scores on an L2-normalised TF-IDF row are as large for a five-word
headline as for a full article, so one softmax temperature makes headlines (and articles
from an unfamiliar source, whose words the vocabulary mostly lacks) as confident as full
texts. Here the temperature of a row is ``t0 + t1 / sqrt(n)``, ``n`` being the number of
distinct known terms in the row: both constants are fitted (log loss) on out-of-fold scores
of full texts and of their short views together, so a short or unfamiliar text gets a less
confident score, by as much as the training data shows it should.

Also the measures of how honest probabilities are: expected calibration error and a
reliability table.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray
from scipy.optimize import minimize

FloatArray = NDArray[np.float64]

#: Bounds of the fitted constants: ``t0`` in [e^-7, e^3], ``t1`` in [0, 20].
_LOG_T0_BOUNDS = (-7.0, 3.0)
_T1_BOUNDS = (0.0, 20.0)


def known_terms(features: sp.csr_matrix) -> FloatArray:
    """Distinct in-vocabulary terms of each TF-IDF row (its stored entries), as floats."""
    terms: FloatArray = np.diff(features.indptr).astype(np.float64)
    return terms


def row_temperatures(
    terms: NDArray[np.floating], temperature: float, length_temperature: float
) -> NDArray[np.floating]:
    """``t0 + t1 / sqrt(max(n, 1))`` per row."""
    result: NDArray[np.floating] = temperature + length_temperature / np.sqrt(
        np.maximum(terms, 1.0)
    )
    return result


def softmax_probabilities(
    scores: FloatArray, terms: FloatArray, temperature: float, length_temperature: float
) -> FloatArray:
    """Row-wise softmax of ``scores`` at each row's temperature."""
    scaled = scores / row_temperatures(terms, temperature, length_temperature)[:, None]
    scaled = scaled - scaled.max(axis=1, keepdims=True)
    np.exp(scaled, out=scaled)
    result: FloatArray = scaled / scaled.sum(axis=1, keepdims=True)
    return result


def fit_temperature(
    scores: FloatArray, y: NDArray[np.int_], terms: FloatArray, *, length: bool = True
) -> tuple[float, float]:
    """``(t0, t1)`` minimising the log loss of the true classes (``t1 = 0`` unless ``length``)."""
    rows = np.arange(y.size)

    def loss(params: NDArray[np.float64]) -> float:
        t1 = float(params[1]) if length else 0.0
        scaled = scores / row_temperatures(terms, float(np.exp(params[0])), t1)[:, None]
        scaled = scaled - scaled.max(axis=1, keepdims=True)
        log_norm = np.log(np.exp(scaled).sum(axis=1))
        return float(np.mean(log_norm - scaled[rows, y]))

    result = minimize(
        loss,
        x0=np.array([0.0, 0.0]),
        method="L-BFGS-B",
        bounds=[_LOG_T0_BOUNDS, _T1_BOUNDS if length else (0.0, 0.0)],
    )
    return float(np.exp(result.x[0])), float(result.x[1]) if length else 0.0


@dataclass(frozen=True, slots=True)
class ReliabilityBin:
    """Predictions whose confidence fell in ``[low, high)``: how many, how sure, how right."""

    low: float
    high: float
    count: int
    mean_confidence: float
    accuracy: float


def reliability_table(
    confidence: FloatArray, correct: NDArray[np.bool_], *, bins: int = 10
) -> tuple[ReliabilityBin, ...]:
    """Equal-width confidence bins over [0, 1] (the last one closed); empty bins are left out."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    table = []
    for b in range(bins):
        members = index == b
        count = int(members.sum())
        if count:
            table.append(
                ReliabilityBin(
                    low=float(edges[b]),
                    high=float(edges[b + 1]),
                    count=count,
                    mean_confidence=float(confidence[members].mean()),
                    accuracy=float(correct[members].mean()),
                )
            )
    return tuple(table)


def expected_calibration_error(
    confidence: FloatArray, correct: NDArray[np.bool_], *, bins: int = 10
) -> float:
    """Mean |accuracy - confidence| over the reliability bins, weighted by their size."""
    if confidence.size == 0:
        return 0.0
    table = reliability_table(confidence, correct, bins=bins)
    gap = sum(row.count * abs(row.accuracy - row.mean_confidence) for row in table)
    return float(gap / confidence.size)
