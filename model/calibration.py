"""Section-score calibration: one softmax temperature fitted on full texts and short views.

The section head's decision scores become probabilities through ``softmax(scores / T)``.
``T`` is fitted (log loss) on out-of-fold scores of every view of the training articles at
once (full text, headline + first sentence, headline alone), because the service sees all
of them: fitted on full texts only, it left headline scores underconfident.

A temperature that also grows with ``1 / sqrt(known terms)`` was tried on the research
corpora: its fitted coefficient was 0 (the log loss preferred none), so inference stays one
division per row.

Also the measures of how honest probabilities are: expected calibration error and a
reliability table.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import minimize_scalar

FloatArray = NDArray[np.float64]


def softmax_probabilities(scores: FloatArray, temperature: float) -> FloatArray:
    """Row-wise ``softmax(scores / temperature)``."""
    scaled = scores / temperature
    scaled = scaled - scaled.max(axis=1, keepdims=True)
    np.exp(scaled, out=scaled)
    result: FloatArray = scaled / scaled.sum(axis=1, keepdims=True)
    return result


def fit_temperature(scores: FloatArray, y: NDArray[np.int_]) -> float:
    """Temperature ``T`` minimising the log loss of ``softmax(scores / T)`` on classes ``y``."""
    rows = np.arange(y.size)

    def loss(log_temperature: float) -> float:
        scaled = scores / np.exp(log_temperature)
        scaled -= scaled.max(axis=1, keepdims=True)
        log_norm = np.log(np.exp(scaled).sum(axis=1))
        return float(np.mean(log_norm - scaled[rows, y]))

    result = minimize_scalar(loss, bounds=(-7.0, 3.0), method="bounded")
    return float(np.exp(result.x))


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
