"""Scoring a predictor on labelled records."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from model.languages import DEFAULT_LANGUAGE, RoutedPredictor
from model.metrics import LabelStats, SectionMetrics, TagMetrics, section_metrics, tag_metrics
from model.predictor import Predictor
from schemas import Classification, LabelledArticle

BATCH_SIZE = 512


class Labels(Protocol):
    """The labels of one record (``LabelledArticle`` has them); None: no label for that head."""

    @property
    def section(self) -> str | None: ...

    @property
    def tags(self) -> list[str] | None: ...


@dataclass(frozen=True, slots=True)
class EvaluationReport:
    """Metrics of each head on labelled records; a head is None when no record has its label."""

    model_name: str
    model_version: str
    records: int
    sections: SectionMetrics | None
    tags: TagMetrics | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {
            "model": {"name": self.model_name, "version": self.model_version},
            "records": self.records,
            "sections": None if self.sections is None else self.sections.to_dict(),
            "tags": None if self.tags is None else self.tags.to_dict(),
        }

    def render_text(self) -> str:
        """A human-readable report with one table per head."""
        lines = [f"model {self.model_name} {self.model_version} on {self.records} records"]
        if self.sections is None:
            lines.append("sections: no record has a section label")
        else:
            s = self.sections
            lines.append(
                f"sections ({s.records} records): accuracy {s.accuracy:.4f}, "
                f"macro-F1 {s.macro_f1:.4f}"
            )
            lines.extend(_table(s.per_label))
        if self.tags is None:
            lines.append("tags: no record has a tags label")
        else:
            t = self.tags
            lines.append(
                f"tags ({t.records} records): micro-F1 {t.micro_f1:.4f} "
                f"(precision {t.micro_precision:.4f}, recall {t.micro_recall:.4f}), "
                f"macro-F1 {t.macro_f1:.4f}"
            )
            lines.extend(_table(t.per_label))
        return "\n".join(lines)


def _table(rows: Sequence[LabelStats]) -> list[str]:
    width = max([len("label"), *(len(row.label) for row in rows)])
    header = f"  {'label':<{width}}  precision  recall     f1  support  predicted"
    body = [
        f"  {row.label:<{width}}  {row.precision:9.4f}  {row.recall:6.4f}  {row.f1:6.4f}"
        f"  {row.support:7d}  {row.predicted:9d}"
        for row in rows
    ]
    return [header, *body]


def evaluate(predictor: Predictor, records: Sequence[LabelledArticle]) -> EvaluationReport:
    """Predict ``records`` and compare with their labels, head by head.

    Tags are scored over the model's tags plus any tag the records carry (a tag the model
    does not know can only be missed); macro-F1 averages the tags that occur in the
    records or the predictions.
    """
    predictions = []
    for start in range(0, len(records), BATCH_SIZE):
        predictions.extend(predictor.predict(records[start : start + BATCH_SIZE]))
    return score_predictions(predictor, records, predictions)


def score_predictions(
    predictor: Predictor, records: Sequence[Labels], predictions: Sequence[Classification]
) -> EvaluationReport:
    """Compare predictions already made by ``predictor`` with the records' labels (as
    ``evaluate`` does, without predicting again)."""
    return _scored(predictor.name, predictor.version, predictor.tags, records, predictions)


def _scored(
    name: str,
    version: str,
    known_tags: Sequence[str],
    records: Sequence[Labels],
    predictions: Sequence[Classification],
) -> EvaluationReport:
    labelled = [(r, p) for r, p in zip(records, predictions, strict=True) if r.section is not None]
    sections = None
    if labelled:
        sections = section_metrics(
            [str(record.section) for record, _ in labelled],
            [p.section.label if p.section is not None else "" for _, p in labelled],
        )

    tagged = [(r, p) for r, p in zip(records, predictions, strict=True) if r.tags is not None]
    tags = None
    if tagged:
        known = set(known_tags)
        extra = sorted({t for record, _ in tagged for t in record.tags or () if t not in known})
        labels = [*known_tags, *extra]
        index = {label: i for i, label in enumerate(labels)}
        truth = np.zeros((len(tagged), len(labels)), dtype=np.bool_)
        predicted = np.zeros_like(truth)
        for row, (record, prediction) in enumerate(tagged):
            for tag in record.tags or ():
                truth[row, index[tag]] = True
            for score in prediction.tags:
                predicted[row, index[score.label]] = True
        tags = tag_metrics(truth, predicted, labels)

    return EvaluationReport(
        model_name=name,
        model_version=version,
        records=len(records),
        sections=sections,
        tags=tags,
    )


@dataclass(frozen=True, slots=True)
class RoutedEvaluationReport:
    """Metrics of models routed by language (``model.languages``): ``overall`` over every
    record, each predicted by the model that answered it (its tags scored over every
    model's tags), and one report per model that answered some record, keyed by its
    language or ``default``; ``fallbacks`` counts the records the default model took for
    want of a language model, by reason."""

    overall: EvaluationReport
    by_model: tuple[tuple[str, EvaluationReport], ...]
    fallbacks: tuple[tuple[str, int], ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form: the one-model report's keys for every record, plus
        ``by_model`` and ``language_fallbacks``."""
        return {
            **self.overall.to_dict(),
            "by_model": {key: report.to_dict() for key, report in self.by_model},
            "language_fallbacks": dict(self.fallbacks),
        }

    def render_text(self) -> str:
        """Every record first, then one block per model."""
        lines = [f"all models: {self.overall.render_text()}"]
        if self.fallbacks:
            counted = ", ".join(f"{reason} {count}" for reason, count in self.fallbacks)
            lines.append(f"taken by the default model for want of a language model: {counted}")
        for key, report in self.by_model:
            lines.extend(["", f"model for {key}: {report.render_text()}"])
        return "\n".join(lines)


def evaluate_routed(
    routed: RoutedPredictor, records: Sequence[LabelledArticle]
) -> RoutedEvaluationReport:
    """``evaluate`` for models routed by language: each record goes to the model that
    would answer it in the service (its ``language`` field, else the detector, else the
    default model), and is scored against that model."""
    predictions: list[Classification] = []
    keys: list[str] = []
    fallbacks: Counter[str] = Counter()
    for start in range(0, len(records), BATCH_SIZE):
        batch = routed.predict_batch(records[start : start + BATCH_SIZE])
        predictions.extend(batch.classifications)
        keys.extend(batch.languages)
        fallbacks.update(reason for reason in batch.fallbacks if reason is not None)
    models = {DEFAULT_LANGUAGE: routed.default, **dict(routed.languages)}
    by_model = []
    for key in sorted(set(keys), key=lambda k: (k != DEFAULT_LANGUAGE, k)):
        rows = [i for i, answered in enumerate(keys) if answered == key]
        model = models[key]
        by_model.append(
            (
                key,
                score_predictions(
                    model, [records[i] for i in rows], [predictions[i] for i in rows]
                ),
            )
        )
    every_tag = list(dict.fromkeys(tag for model in models.values() for tag in model.tags))
    default = routed.default
    overall = _scored(default.name, default.version, every_tag, records, predictions)
    return RoutedEvaluationReport(overall, tuple(by_model), tuple(sorted(fallbacks.items())))
