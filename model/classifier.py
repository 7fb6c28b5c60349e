"""The estimator: one TF-IDF pipeline feeding a section head and a tags head.

Section head: one-vs-rest linear SVMs plus NBSVM models (SVMs on log-count-ratio scaled
features, folded back into plain weights) whose summed decision scores become probabilities
through a softmax with a temperature fitted on out-of-fold scores (temperature scaling).
Tags head: one linear SVM per tag, with a per-tag threshold tuned on out-of-fold scores
(see ``model.thresholds``), reported as ``sigmoid(slope * (score - threshold))`` so that
0.5 is every tag's decision boundary.

A record without a label for a head is left out of that head only, so section-labelled and
tag-labelled corpora train one model together.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Self

import joblib
import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray
from scipy.optimize import minimize_scalar
from sklearn.base import BaseEstimator
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.svm import LinearSVC

from model.errors import TrainingError
from model.features import export_fitted, make_vectorizer
from model.inference import LinearTextModel
from model.text import HasTitleAndBody, compose_text
from model.thresholds import cross_fitted_predictions, fit_slope, tune_thresholds

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]
IndexArray = NDArray[np.intp]


@dataclass(frozen=True, slots=True, eq=False)
class CrossValidation:
    """Out-of-fold predictions made while fitting, for honest metrics.

    Section predictions are argmax of out-of-fold scores; tag decisions apply thresholds
    tuned on the other folds only. Row ``i`` of a head refers to training record
    ``*_rows[i]``.
    """

    section_rows: IndexArray
    section_truth: tuple[str, ...]
    section_predicted: tuple[str, ...]
    tag_rows: IndexArray
    tag_truth: BoolArray
    tag_predicted: BoolArray


@dataclass(frozen=True, slots=True)
class _Head:
    coef: FloatArray  # (n_features, n_labels)
    intercept: FloatArray  # (n_labels,)


class ArticleClassifier(BaseEstimator):  # type: ignore[misc]
    """Section and tags heads over a shared TF-IDF vectoriser (word n-grams, sublinear tf).

    Parameters
    ----------
    title_repeats: times the headline is repeated before the body (title weighting).
    ngram_max, min_df, max_df: vectoriser vocabulary settings.
    section_c, tag_c: SVM regularisation of each head.
    tag_positive_weight: weight of a tag's positive examples relative to its negatives.
    section_nb_alpha: smoothing of the NBSVM (log-count-ratio scaled) one-vs-rest models
        whose scores are added to the plain SVM scores of the section head; 0 disables them.
    tag_fbr: minimum out-of-fold F1 for a tuned tag threshold to be trusted.
    tag_rare_count, tag_rare_threshold: a tag with fewer than ``tag_rare_count`` positives
        gets a threshold no higher than ``tag_rare_threshold`` (SCut is unreliable there).
    cv_folds: folds of the internal cross-validation (thresholds, calibration, metrics).
    random_state: seeds the folds and the solvers; fitting is deterministic.
    n_jobs: threads for fitting the per-tag models.
    """

    def __init__(
        self,
        *,
        title_repeats: int = 2,
        ngram_max: int = 1,
        min_df: int = 2,
        max_df: float = 1.0,
        section_c: float = 1.0,
        section_nb_alpha: float = 0.01,
        tag_c: float = 1.0,
        tag_positive_weight: float = 1.0,
        tag_fbr: float = 0.1,
        tag_rare_count: int = 10,
        tag_rare_threshold: float = -0.7,
        cv_folds: int = 5,
        random_state: int = 0,
        n_jobs: int = 1,
    ) -> None:
        self.title_repeats = title_repeats
        self.ngram_max = ngram_max
        self.min_df = min_df
        self.max_df = max_df
        self.section_c = section_c
        self.section_nb_alpha = section_nb_alpha
        self.tag_c = tag_c
        self.tag_positive_weight = tag_positive_weight
        self.tag_fbr = tag_fbr
        self.tag_rare_count = tag_rare_count
        self.tag_rare_threshold = tag_rare_threshold
        self.cv_folds = cv_folds
        self.random_state = random_state
        self.n_jobs = n_jobs

    def fit(
        self,
        articles: Sequence[HasTitleAndBody],
        sections: Sequence[str | None],
        tags: Sequence[Sequence[str] | None],
    ) -> Self:
        """Fit both heads; ``None`` in ``sections``/``tags`` means "no label for that head"."""
        if not (len(articles) == len(sections) == len(tags)):
            raise TrainingError("articles, sections and tags differ in length")
        if self.cv_folds < 2:
            raise TrainingError(f"cv_folds must be at least 2, got {self.cv_folds}")
        section_rows = np.array([i for i, s in enumerate(sections) if s is not None], np.intp)
        tag_rows = np.array([i for i, t in enumerate(tags) if t is not None], np.intp)
        if section_rows.size == 0 and tag_rows.size == 0:
            raise TrainingError("no record carries a section or tags label")

        texts = [compose_text(a.title, a.body, self.title_repeats) for a in articles]
        vectorizer = make_vectorizer(
            ngram_max=self.ngram_max, min_df=self.min_df, max_df=self.max_df
        )
        # The vocabulary and IDF are fitted on all texts (no labels involved), once, and
        # shared by the cross-validation folds: this keeps training cheap.
        try:
            features = sp.csr_matrix(vectorizer.fit_transform(texts), dtype=np.float64)
        except ValueError as error:
            raise TrainingError(f"cannot build the vocabulary: {error}") from error

        section_labels = [str(sections[i]) for i in section_rows]
        self.sections_: tuple[str, ...] = tuple(sorted(set(section_labels)))
        tag_lists = [tags[i] or () for i in tag_rows]
        self.tags_: tuple[str, ...] = tuple(sorted({t for ts in tag_lists for t in ts}))
        n_features = features.shape[1]

        section_head, section_cv = self._fit_sections(features[section_rows], section_labels)
        tag_truth = _binarize(tag_lists, self.tags_)
        tag_head, tag_cv = self._fit_tags(features[tag_rows], tag_truth)

        self.vectorizer_ = vectorizer
        self.n_features_ = n_features
        self.n_section_records_ = int(section_rows.size)
        self.n_tag_records_ = int(tag_rows.size)
        self.section_coef_ = section_head.coef
        self.section_intercept_ = section_head.intercept
        self.tag_coef_ = tag_head.coef
        self.tag_intercept_ = tag_head.intercept
        self.cv_ = CrossValidation(
            section_rows=section_rows,
            section_truth=tuple(section_labels),
            section_predicted=section_cv,
            tag_rows=tag_rows,
            tag_truth=tag_truth,
            tag_predicted=tag_cv,
        )
        return self

    # -- section head -------------------------------------------------------------------

    def _fit_sections(
        self, features: sp.csr_matrix, labels: list[str]
    ) -> tuple[_Head, tuple[str, ...]]:
        classes = self.sections_
        if not labels:
            self.section_temperature_ = 1.0
            return _empty_head(features.shape[1], 0), ()
        if len(classes) < 2:
            raise TrainingError(f"the section head needs at least 2 sections, got {list(classes)}")
        y = np.array([classes.index(label) for label in labels])
        scores = np.zeros((len(labels), len(classes)))
        for train, test in self._section_folds(y):
            head = self._fit_section_model(features[train], y[train], len(classes))
            scores[test] = features[test] @ head.coef + head.intercept
        self.section_temperature_ = _fit_temperature(scores, y)
        predicted = tuple(classes[i] for i in scores.argmax(axis=1))
        return self._fit_section_model(features, y, len(classes)), predicted

    def _section_folds(self, y: NDArray[np.int_]) -> list[tuple[IndexArray, IndexArray]]:
        if y.size < self.cv_folds:
            raise TrainingError(
                f"the section head has {y.size} labelled records, fewer than "
                f"cv_folds={self.cv_folds}"
            )
        splitter: KFold | StratifiedKFold
        if np.bincount(y).min() >= self.cv_folds:
            splitter = StratifiedKFold(self.cv_folds, shuffle=True, random_state=self.random_state)
        else:
            # Stratification needs every class in every fold; rarer classes warn, so split
            # plainly and let a fold miss a class (its score column is then very low).
            splitter = KFold(self.cv_folds, shuffle=True, random_state=self.random_state)
        return list(splitter.split(np.zeros(y.size), y))

    def _fit_section_model(
        self, features: sp.csr_matrix, y: NDArray[np.int_], n_classes: int
    ) -> _Head:
        present = np.unique(y)
        coef = np.zeros((features.shape[1], n_classes))
        intercept = np.full(n_classes, -1e3)
        if present.size == 1:
            intercept[present[0]] = 0.0
            return _Head(coef, intercept)
        svm = LinearSVC(C=self.section_c, random_state=self.random_state, max_iter=5000)
        svm.fit(features, y)
        if present.size == 2:
            # A binary SVM has one score for the second class; split it symmetrically.
            fitted_coef = np.vstack([-svm.coef_[0], svm.coef_[0]]) / 2.0
            fitted_intercept = np.array([-svm.intercept_[0], svm.intercept_[0]]) / 2.0
        else:
            fitted_coef, fitted_intercept = svm.coef_, svm.intercept_
        coef[:, present] = fitted_coef.T
        intercept[present] = fitted_intercept
        if self.section_nb_alpha > 0:
            for label in present:
                weights, bias = self._fit_nbsvm(features, y == label)
                coef[:, label] += weights
                intercept[label] += bias
        return _Head(coef, intercept)

    def _fit_nbsvm(self, features: sp.csr_matrix, positive: BoolArray) -> tuple[FloatArray, float]:
        """A one-vs-rest SVM on features scaled by their log-count ratio (NBSVM).

        Scaling column ``k`` by ``r[k]`` and learning ``w`` equals the linear model ``r * w``
        on the unscaled features, so the result adds to the plain SVM's weights.
        """
        alpha = self.section_nb_alpha
        p = alpha + np.asarray(features[positive].sum(axis=0)).ravel()
        q = alpha + np.asarray(features[~positive].sum(axis=0)).ravel()
        ratio = np.log((p / p.sum()) / (q / q.sum()))
        svm = LinearSVC(C=self.section_c, random_state=self.random_state, max_iter=5000)
        svm.fit(sp.csr_matrix(features.multiply(ratio)), positive)
        return svm.coef_[0] * ratio, float(svm.intercept_[0])

    # -- tags head ----------------------------------------------------------------------

    def _fit_tags(self, features: sp.csr_matrix, truth: BoolArray) -> tuple[_Head, BoolArray]:
        n_labels = truth.shape[1]
        if n_labels == 0:
            self.tag_thresholds_ = np.zeros(0)
            self.tag_slope_ = 1.0
            return _empty_head(features.shape[1], 0), np.zeros(truth.shape, dtype=np.bool_)
        n_records = truth.shape[0]
        if n_records < self.cv_folds:
            raise TrainingError(
                f"the tags head has {n_records} labelled records, fewer than "
                f"cv_folds={self.cv_folds}"
            )
        folds = np.empty(n_records, dtype=np.intp)
        scores = np.zeros(truth.shape)
        splitter = KFold(self.cv_folds, shuffle=True, random_state=self.random_state)
        for fold, (train, test) in enumerate(splitter.split(np.zeros(n_records))):
            head = self._fit_tag_models(features[train], truth[train])
            scores[test] = features[test] @ head.coef + head.intercept
            folds[test] = fold
        rare_count, rare_threshold = int(self.tag_rare_count), float(self.tag_rare_threshold)
        self.tag_thresholds_ = tune_thresholds(
            scores, truth, fbr=self.tag_fbr, rare_count=rare_count, rare_threshold=rare_threshold
        )
        self.tag_slope_ = fit_slope(scores - self.tag_thresholds_, truth)
        predicted = cross_fitted_predictions(
            scores,
            truth,
            folds,
            fbr=self.tag_fbr,
            rare_count=rare_count,
            rare_threshold=rare_threshold,
        )
        return self._fit_tag_models(features, truth), predicted

    def _fit_tag_models(self, features: sp.csr_matrix, truth: BoolArray) -> _Head:
        fit_one: Callable[[int], tuple[FloatArray, float]] = self._tag_fitter(features, truth)
        results = joblib.Parallel(n_jobs=self.n_jobs, prefer="threads")(
            joblib.delayed(fit_one)(column) for column in range(truth.shape[1])
        )
        coef = np.column_stack([weights for weights, _ in results])
        intercept = np.array([bias for _, bias in results])
        return _Head(coef, intercept)

    def _tag_fitter(
        self, features: sp.csr_matrix, truth: BoolArray
    ) -> Callable[[int], tuple[FloatArray, float]]:
        def fit_one(column: int) -> tuple[FloatArray, float]:
            y = truth[:, column]
            if y.all() or not y.any():
                # A tag on every (or no) training record: constant decision, no features.
                return np.zeros(features.shape[1]), 1.0 if y.all() else -1.0
            svm = LinearSVC(
                C=self.tag_c,
                class_weight={False: 1.0, True: self.tag_positive_weight},
                random_state=self.random_state,
                max_iter=5000,
            )
            svm.fit(features, y)
            return svm.coef_[0].copy(), float(svm.intercept_[0])

        return fit_one

    # -- export -------------------------------------------------------------------------

    def to_inference(self) -> LinearTextModel:
        """The fitted model as one linear map, as stored in an artifact."""
        weights = np.hstack([self.section_coef_, self.tag_coef_]).astype(np.float32)
        bias = np.concatenate([self.section_intercept_, self.tag_intercept_]).astype(np.float32)
        vocabulary, idf, ngram_max = export_fitted(self.vectorizer_)
        return LinearTextModel(
            vocabulary=vocabulary,
            idf=idf,
            ngram_max=ngram_max,
            weights=np.ascontiguousarray(weights),
            bias=bias,
            sections=self.sections_,
            tags=self.tags_,
            section_temperature=float(self.section_temperature_),
            tag_thresholds=np.asarray(self.tag_thresholds_, dtype=np.float32),
            tag_slope=float(self.tag_slope_),
            title_repeats=int(self.title_repeats),
        )


def _empty_head(n_features: int, n_labels: int) -> _Head:
    return _Head(np.zeros((n_features, n_labels)), np.zeros(n_labels))


def _binarize(tag_lists: Sequence[Sequence[str]], classes: tuple[str, ...]) -> BoolArray:
    index = {tag: i for i, tag in enumerate(classes)}
    truth = np.zeros((len(tag_lists), len(classes)), dtype=np.bool_)
    for row, labels in enumerate(tag_lists):
        for tag in labels:
            truth[row, index[tag]] = True
    return truth


def _fit_temperature(scores: FloatArray, y: NDArray[np.int_]) -> float:
    """Temperature ``T`` minimising the log loss of ``softmax(scores / T)``."""

    def loss(log_temperature: float) -> float:
        scaled = scores / np.exp(log_temperature)
        scaled -= scaled.max(axis=1, keepdims=True)
        log_norm = np.log(np.exp(scaled).sum(axis=1))
        return float(np.mean(log_norm - scaled[np.arange(y.size), y]))

    result = minimize_scalar(loss, bounds=(-7.0, 3.0), method="bounded")
    return float(np.exp(result.x))
