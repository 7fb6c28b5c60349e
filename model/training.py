"""Training entry point: fit the estimator and describe the result in a model card."""

from __future__ import annotations

import hashlib
import platform
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import joblib
import numpy as np
import scipy
import sklearn

from model.classifier import ArticleClassifier
from model.errors import TrainingError
from model.feature_sets import FEATURE_SETS, FeatureSet
from model.inference import LinearTextModel
from model.manifest import (
    CrossValidatedMetrics,
    LabelRow,
    LibraryVersions,
    ModelCard,
    RecordCounts,
    SectionReport,
    TagReport,
)
from model.metrics import LabelStats, section_metrics, tag_metrics
from schemas import LabelledArticle

ParamValue = int | float | str | bool | None

#: ``train(features=AUTO)``: choose the feature set by cross-validation.
AUTO = "auto"
#: How far below the best cross-validated score a cheaper feature set may be and still be
#: chosen (``FEATURE_SETS`` is in order of cost: words, character n-grams, both).
AUTO_TOLERANCE = 0.002

#: ``features_chosen_by`` in the manifest's params: how the feature set was chosen.
CHOSEN_BY_CALLER = "given"
CHOSEN_BY_CV = "cross-validation"
CHOSEN_BY_SECTIONS_ONLY = "data: section labels only"
CHOSEN_BY_TAGS = "data: tag labels, or no section labels"


@dataclass(frozen=True, slots=True, eq=False)
class TrainedModel:
    """A fitted estimator, its inference form and its model card (not yet on disk)."""

    estimator: ArticleClassifier
    model: LinearTextModel
    manifest: ModelCard

    def render_summary(self) -> str:
        """A short human-readable summary of the cross-validated metrics."""
        card = self.manifest
        metrics = card.metrics
        lines = [
            f"model {card.name} {card.version}: {card.records.total} records, "
            f"{metrics.folds}-fold cross-validation"
        ]
        if metrics.section is not None:
            section = metrics.section
            lines.append(
                f"  sections ({len(card.sections)}, {section.records} records): "
                f"accuracy {section.accuracy:.4f}, macro-F1 {section.macro_f1:.4f}"
            )
        else:
            lines.append("  sections: no section head")
        if metrics.tags is not None:
            tags = metrics.tags
            lines.append(
                f"  tags ({len(card.tags)}, {tags.records} records): micro-F1 "
                f"{tags.micro_f1:.4f} (P {tags.micro_precision:.4f}, R {tags.micro_recall:.4f}),"
                f" macro-F1 {tags.macro_f1:.4f}"
            )
        else:
            lines.append("  tags: no tags head")
        return "\n".join(lines)


def train(
    records: Sequence[LabelledArticle],
    *,
    name: str,
    version: str | None = None,
    cv_folds: int = 5,
    random_state: int = 0,
    params: Mapping[str, ParamValue] | None = None,
    n_jobs: int = 1,
    features: str | None = None,
) -> TrainedModel:
    """Fit both heads on ``records`` and compute cross-validated metrics for the manifest.

    ``params`` overrides ``ArticleClassifier`` hyper-parameters. Metrics are out-of-fold:
    section scores come from models that never saw the scored fold, and tag thresholds
    applied to a fold are tuned on the other folds' out-of-fold scores only.

    ``features`` chooses the feature set (``word``, ``char``, ``word+char``; the
    ``features`` hyper-parameter) or, with ``auto``, fits each of them and keeps the
    cheapest whose cross-validated score (``feature_set_score``) is within
    ``AUTO_TOLERANCE`` of the best; the manifest's params then record every candidate's
    score. None leaves the choice to ``params``, and without one there to the data
    (``default_features``). The manifest's params say how it was chosen
    (``features_chosen_by``).
    """
    reserved = {"cv_folds", "random_state", "n_jobs"}.intersection(params or {})
    if reserved:
        raise TrainingError(f"set {', '.join(sorted(reserved))} with train()'s own arguments")
    if features is not None and "features" in (params or {}):
        raise TrainingError("set the feature set with train()'s features argument or params")
    chosen = dict(params or {})
    if features is not None:
        chosen["features"] = features
    settings = {"cv_folds": cv_folds, "random_state": random_state, "n_jobs": n_jobs}
    labels = ([record.section for record in records], [record.tags for record in records])
    selection: dict[str, ParamValue] = {"features_chosen_by": CHOSEN_BY_CALLER}
    if "features" not in chosen:
        chosen["features"], selection["features_chosen_by"] = default_features(records)
    if chosen["features"] == AUTO:
        fitted, scores = {}, {}
        for candidate in FEATURE_SETS:
            estimator = ArticleClassifier().set_params(
                **chosen | {"features": candidate}, **settings
            )
            fitted[candidate] = estimator.fit(records, *labels)
            scores[candidate] = round(feature_set_score(estimator), 6)
            selection[f"cv_score_{candidate}"] = scores[candidate]
        # The cheapest within AUTO_TOLERANCE of the best: character n-grams make a model
        # several times larger and slower, which a gain inside the folds' noise does not pay.
        top = max(scores.values())
        best = next(name for name in FEATURE_SETS if scores[name] >= top - AUTO_TOLERANCE)
        estimator = fitted[best]
        selection["features_chosen_by"] = CHOSEN_BY_CV
    else:
        estimator = ArticleClassifier().set_params(**chosen, **settings).fit(records, *labels)
    fingerprint = fingerprint_records(records)
    created = datetime.now(UTC)
    card = ModelCard(
        name=name,
        version=version or f"{created:%Y%m%d.%H%M%S}-{fingerprint[:8]}",
        created_at=created.isoformat(timespec="seconds").replace("+00:00", "Z"),
        libraries=library_versions(),
        sections=list(estimator.sections_),
        tags=list(estimator.tags_),
        training_data_sha256=fingerprint,
        records=RecordCounts(
            total=len(records),
            section=estimator.n_section_records_,
            tags=estimator.n_tag_records_,
        ),
        params={
            **{key: value for key, value in estimator.get_params().items() if key != "n_jobs"},
            **selection,
        },
        metrics=_cross_validated_metrics(estimator),
    )
    return TrainedModel(estimator=estimator, model=estimator.to_inference(), manifest=card)


def default_features(records: Sequence[LabelledArticle]) -> tuple[FeatureSet, str]:
    """The feature set a model trains on when none is given, and why.

    ``word+char`` (words and character n-grams) when the records carry section labels and
    no tag labels: on bbc-news it is the best cross-validated section model (headlines and
    text from another source gain most, docs/model-quality.md). ``word`` as soon as one
    record carries tags: the tags head shares the feature matrix, n-grams gave it nothing
    and would multiply its weights (features x tags) about nine times.
    """
    sections = any(record.section is not None for record in records)
    if sections and all(record.tags is None for record in records):
        return "word+char", CHOSEN_BY_SECTIONS_ONLY
    return "word", CHOSEN_BY_TAGS


def feature_set_score(estimator: ArticleClassifier) -> float:
    """What ``features="auto"`` maximises: the mean, over the heads the model has, of the
    section head's out-of-fold accuracy averaged over the three views (full text, headline
    + first sentence, headline) and the tags head's out-of-fold micro-F1 and macro-F1 on
    full texts averaged."""
    cv = estimator.cv_
    scores = []
    if cv.section_truth:
        scores.append(
            float(
                np.mean(
                    [
                        section_metrics(cv.section_truth, predicted).accuracy
                        for predicted in cv.section_predicted_by_view.values()
                    ]
                )
            )
        )
    if estimator.tags_:
        found = tag_metrics(cv.tag_truth, cv.tag_predicted, estimator.tags_)
        scores.append((found.micro_f1 + found.macro_f1) / 2.0)
    return float(np.mean(scores))


def fingerprint_records(records: Sequence[LabelledArticle]) -> str:
    """sha256 over the records' canonical JSON, in order: identifies the training data."""
    digest = hashlib.sha256()
    for record in records:
        digest.update(record.model_dump_json().encode())
        digest.update(b"\n")
    return digest.hexdigest()


def library_versions() -> LibraryVersions:
    """Versions of the running interpreter and numeric libraries."""
    return LibraryVersions(
        python=platform.python_version(),
        scikit_learn=sklearn.__version__,
        numpy=np.__version__,
        scipy=scipy.__version__,
        joblib=joblib.__version__,
    )


def _row(stats: LabelStats, threshold: float | None = None) -> LabelRow:
    return LabelRow(
        label=stats.label,
        precision=stats.precision,
        recall=stats.recall,
        f1=stats.f1,
        support=stats.support,
        predicted=stats.predicted,
        threshold=threshold,
    )


def _cross_validated_metrics(estimator: ArticleClassifier) -> CrossValidatedMetrics:
    cv = estimator.cv_
    section = None
    if cv.section_truth:
        found = section_metrics(cv.section_truth, cv.section_predicted)
        section = SectionReport(
            records=found.records,
            accuracy=found.accuracy,
            macro_f1=found.macro_f1,
            per_label=[_row(stats) for stats in found.per_label],
        )
    tags = None
    if estimator.tags_:
        scored = tag_metrics(cv.tag_truth, cv.tag_predicted, estimator.tags_)
        thresholds = [float(t) for t in estimator.tag_thresholds_]
        tags = TagReport(
            records=scored.records,
            micro_precision=scored.micro_precision,
            micro_recall=scored.micro_recall,
            micro_f1=scored.micro_f1,
            macro_f1=scored.macro_f1,
            per_label=[_row(s, t) for s, t in zip(scored.per_label, thresholds, strict=True)],
        )
    return CrossValidatedMetrics(folds=estimator.cv_folds, section=section, tags=tags)
