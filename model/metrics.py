"""Precision, recall and F1 for the section head (single-label) and tags head (multi-label)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True, slots=True)
class LabelStats:
    """Counts and scores of one label."""

    label: str
    precision: float
    recall: float
    f1: float
    support: int
    predicted: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {
            "label": self.label,
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "support": self.support,
            "predicted": self.predicted,
        }


@dataclass(frozen=True, slots=True)
class SectionMetrics:
    """Single-label metrics; macro-F1 averages the labels that occur in truth or prediction."""

    records: int
    accuracy: float
    macro_f1: float
    per_label: tuple[LabelStats, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {
            "records": self.records,
            "accuracy": self.accuracy,
            "macro_f1": self.macro_f1,
            "per_label": [row.to_dict() for row in self.per_label],
        }


@dataclass(frozen=True, slots=True)
class TagMetrics:
    """Multi-label metrics; macro-F1 averages the labels that occur in truth or prediction."""

    records: int
    micro_precision: float
    micro_recall: float
    micro_f1: float
    macro_f1: float
    per_label: tuple[LabelStats, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {
            "records": self.records,
            "micro_precision": self.micro_precision,
            "micro_recall": self.micro_recall,
            "micro_f1": self.micro_f1,
            "macro_f1": self.macro_f1,
            "per_label": [row.to_dict() for row in self.per_label],
        }


def _ratio(numerator: float, denominator: float) -> float:
    # An undefined ratio (nothing predicted, nothing to find) counts as 0, as in most reports.
    return float(numerator / denominator) if denominator else 0.0


def _stats(label: str, tp: int, fp: int, fn: int) -> LabelStats:
    return LabelStats(
        label=label,
        precision=_ratio(tp, tp + fp),
        recall=_ratio(tp, tp + fn),
        f1=_ratio(2 * tp, 2 * tp + fp + fn),
        support=tp + fn,
        predicted=tp + fp,
    )


def _macro(rows: Sequence[LabelStats]) -> float:
    active = [row.f1 for row in rows if row.support or row.predicted]
    return float(np.mean(active)) if active else 0.0


def section_metrics(truth: Sequence[str], predicted: Sequence[str]) -> SectionMetrics:
    """Accuracy, macro-F1 and a per-label table for single-label predictions."""
    if len(truth) != len(predicted):
        raise ValueError("truth and predictions differ in length")
    labels = sorted(set(truth) | set(predicted))
    rows = []
    for label in labels:
        tp = sum(1 for t, p in zip(truth, predicted, strict=True) if t == label and p == label)
        fp = sum(1 for t, p in zip(truth, predicted, strict=True) if t != label and p == label)
        fn = sum(1 for t, p in zip(truth, predicted, strict=True) if t == label and p != label)
        rows.append(_stats(label, tp, fp, fn))
    correct = sum(1 for t, p in zip(truth, predicted, strict=True) if t == p)
    return SectionMetrics(
        records=len(truth),
        accuracy=_ratio(correct, len(truth)),
        macro_f1=_macro(rows),
        per_label=tuple(rows),
    )


def tag_metrics(
    truth: NDArray[np.bool_], predicted: NDArray[np.bool_], labels: Sequence[str]
) -> TagMetrics:
    """Micro and macro scores and a per-label table for multi-label decision matrices."""
    if truth.shape != predicted.shape or truth.shape[1] != len(labels):
        raise ValueError("truth, predictions and labels differ in shape")
    tp = (truth & predicted).sum(axis=0)
    fp = (~truth & predicted).sum(axis=0)
    fn = (truth & ~predicted).sum(axis=0)
    rows = [_stats(label, int(tp[i]), int(fp[i]), int(fn[i])) for i, label in enumerate(labels)]
    all_tp, all_fp, all_fn = int(tp.sum()), int(fp.sum()), int(fn.sum())
    return TagMetrics(
        records=int(truth.shape[0]),
        micro_precision=_ratio(all_tp, all_tp + all_fp),
        micro_recall=_ratio(all_tp, all_tp + all_fn),
        micro_f1=_ratio(2 * all_tp, 2 * all_tp + all_fp + all_fn),
        macro_f1=_macro(rows),
        per_label=tuple(rows),
    )
