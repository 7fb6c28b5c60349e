"""The estimator: one TF-IDF pipeline feeding a section head and a tags head.

Section head: one-vs-rest linear SVMs plus NBSVM models (SVMs on log-count-ratio scaled
features, folded back into plain weights) whose summed decision scores become probabilities
through a softmax with a temperature fitted on out-of-fold scores (temperature scaling).
Tags head: one linear SVM per tag, with a per-tag threshold tuned on out-of-fold scores
(see ``model.thresholds``), reported as ``sigmoid(slope * (score - threshold))`` so that
0.5 is every tag's decision boundary.

Both heads train on three views of every article (``model.text.VIEWS``: full text, headline +
first sentence, headline alone), the shorter views with a sample weight of their own, so the
model holds up on what arrives early. Cross-validation splits articles, never views: all views
of one article are in the same fold. The section temperature is fitted on out-of-fold scores
of all views together (``model.calibration``), so section scores are honest on short texts.

A record without a label for a head is left out of that head only, so section-labelled and
tag-labelled corpora train one model together.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Self

import joblib
import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray
from sklearn.base import BaseEstimator
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.svm import LinearSVC

from model.calibration import fit_temperature, softmax_probabilities
from model.errors import ModelError, TrainingError
from model.feature_sets import TextFeatures, check_feature_set, uses_chars
from model.inference import LinearTextModel
from model.text import VIEWS, HasTitleAndBody, View, compose_text, later_sentences, view_text
from model.thresholds import cross_fitted_thresholds, fit_slope, tune_thresholds

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]
IndexArray = NDArray[np.intp]
ViewFeatures = Mapping[View, sp.csr_matrix]

# The hyper-parameters that weigh the short views; each must be >= 0.
_VIEW_WEIGHTS = (
    "section_lead_weight",
    "section_headline_weight",
    "tag_lead_weight",
    "tag_headline_weight",
    "section_sentence_weight",
)


#: The section head's SVM regularisation when ``section_c`` is None, by whether the feature
#: set has character n-grams.
SECTION_C = {False: 0.5, True: 2.0}
#: The section head's headline-view sample weight when ``section_headline_weight`` is None,
#: by whether the feature set has character n-grams.
SECTION_HEADLINE_WEIGHT = {False: 0.1, True: 0.2}


@dataclass(frozen=True, slots=True, eq=False)
class CrossValidation:
    """Out-of-fold predictions made while fitting, for honest metrics.

    Section predictions are argmax of out-of-fold scores; tag decisions apply thresholds
    tuned on the other folds only. Row ``i`` of a head refers to training record
    ``*_rows[i]``. ``section_predicted`` and ``tag_predicted`` are the full-text view; the
    ``*_by_view`` mappings hold every view, and ``section_probabilities_by_view`` the
    calibrated section probabilities with a temperature fitted on the other folds only.
    """

    section_rows: IndexArray
    section_truth: tuple[str, ...]
    section_predicted: tuple[str, ...]
    tag_rows: IndexArray
    tag_truth: BoolArray
    tag_predicted: BoolArray
    section_predicted_by_view: Mapping[View, tuple[str, ...]] = field(default_factory=dict)
    section_probabilities_by_view: Mapping[View, FloatArray] = field(default_factory=dict)
    tag_predicted_by_view: Mapping[View, BoolArray] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Head:
    coef: FloatArray  # (n_features, n_labels)
    intercept: FloatArray  # (n_labels,)


class ArticleClassifier(BaseEstimator):  # type: ignore[misc]
    """Section and tags heads over a shared TF-IDF vectoriser (word n-grams, sublinear tf).

    Parameters
    ----------
    title_repeats: times the headline is repeated before the body (title weighting).
    section_lead_weight, section_headline_weight, tag_lead_weight, tag_headline_weight:
        sample weight of each article's headline + first sentence view and headline-only
        view in each head's training (the full text weighs 1); 0 leaves the view out.
        ``section_headline_weight`` None (the default) is 0.1 for words alone and 0.2 with
        character n-grams (``SECTION_HEADLINE_WEIGHT``, with ``SECTION_C`` below).
    section_sentences, section_sentence_weight: the section head also learns from up to
        ``section_sentences`` sentences of each body after the first (spread over the
        article), each on its own, without the headline, with this sample weight: words
        then carry their section on their own, as in a headline, which helps short texts
        and text from other sources; 0 of either leaves them out. Training only.
    features: the feature set (``model.feature_sets``): ``word`` (word TF-IDF), ``char``
        (TF-IDF of character n-grams within word boundaries) or ``word+char`` (both).
    ngram_max, min_df, max_df: vectoriser vocabulary settings (``max_df`` for both blocks).
    char_ngram_min, char_ngram_max, char_min_df: the character n-grams' lengths and their
        minimum document frequency.
    section_c, tag_c: SVM regularisation of each head; ``section_c`` None (the default)
        is 0.5 for words alone and 2.0 with character n-grams (``SECTION_C``: with n-grams
        and the headline view weighing 0.2, the 5-fold headline accuracy on bbc-news rose
        from 0.892 / 0.888 at C 1 and weight 0.1 to 0.901 / 0.894 on fold seeds 0 / 1, full
        texts 0.981 either way, the shift check 0.916 to 0.914; docs/model-quality.md).
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
        section_lead_weight: float = 0.1,
        section_headline_weight: float | None = None,
        tag_lead_weight: float = 0.1,
        tag_headline_weight: float = 0.1,
        section_sentences: int = 12,
        section_sentence_weight: float = 0.05,
        features: str = "word",
        ngram_max: int = 1,
        min_df: int = 2,
        max_df: float = 1.0,
        char_ngram_min: int = 2,
        char_ngram_max: int = 5,
        char_min_df: int = 2,
        section_c: float | None = None,
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
        self.section_lead_weight = section_lead_weight
        self.section_headline_weight = section_headline_weight
        self.tag_lead_weight = tag_lead_weight
        self.tag_headline_weight = tag_headline_weight
        self.section_sentences = section_sentences
        self.section_sentence_weight = section_sentence_weight
        self.features = features
        self.ngram_max = ngram_max
        self.min_df = min_df
        self.max_df = max_df
        self.char_ngram_min = char_ngram_min
        self.char_ngram_max = char_ngram_max
        self.char_min_df = char_min_df
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
        try:
            feature_set = check_feature_set(self.features)
        except ModelError as error:
            raise TrainingError(str(error)) from None
        for name in _VIEW_WEIGHTS:
            if not self._view_weight(name) >= 0.0:
                raise TrainingError(f"{name} must be a number >= 0, got {getattr(self, name)}")
        if int(self.section_sentences) < 0:
            raise TrainingError(f"section_sentences must be >= 0, got {self.section_sentences}")
        section_rows = np.array([i for i, s in enumerate(sections) if s is not None], np.intp)
        tag_rows = np.array([i for i, t in enumerate(tags) if t is not None], np.intp)
        if section_rows.size == 0 and tag_rows.size == 0:
            raise TrainingError("no record carries a section or tags label")

        repeats = self.title_repeats
        texts = {
            view: [view_text(a.title, a.body, view, repeats) for a in articles] for view in VIEWS
        }
        vectorizer = TextFeatures(
            feature_set,
            ngram_max=self.ngram_max,
            min_df=self.min_df,
            max_df=self.max_df,
            char_ngram_min=self.char_ngram_min,
            char_ngram_max=self.char_ngram_max,
            char_min_df=self.char_min_df,
        )
        # The vocabulary and IDF are fitted on all full texts (no labels involved), once, and
        # shared by the cross-validation folds: this keeps training cheap. The shorter views
        # hold no word their full text lacks, so they are only transformed.
        try:
            full = vectorizer.fit_transform(texts["full"])
        except ValueError as error:
            raise TrainingError(f"cannot build the vocabulary: {error}") from error
        features: dict[View, sp.csr_matrix] = {"full": full}
        for view in VIEWS[1:]:
            features[view] = vectorizer.transform(texts[view])

        section_labels = [str(sections[i]) for i in section_rows]
        self.sections_: tuple[str, ...] = tuple(sorted(set(section_labels)))
        tag_lists = [tags[i] or () for i in tag_rows]
        self.tags_: tuple[str, ...] = tuple(sorted({t for ts in tag_lists for t in ts}))
        n_features = full.shape[1]

        section_head, section_cv = self._fit_sections(
            {view: matrix[section_rows] for view, matrix in features.items()},
            section_labels,
            self._sentence_features(vectorizer, [articles[i] for i in section_rows]),
        )
        tag_truth = _binarize(tag_lists, self.tags_)
        tag_head, tag_cv = self._fit_tags(
            {view: matrix[tag_rows] for view, matrix in features.items()}, tag_truth
        )

        self.vectorizer_ = vectorizer
        self.n_features_ = n_features
        self.n_section_records_ = int(section_rows.size)
        self.n_tag_records_ = int(tag_rows.size)
        self.section_coef_ = section_head.coef
        self.section_intercept_ = section_head.intercept
        self.tag_coef_ = tag_head.coef
        self.tag_intercept_ = tag_head.intercept
        section_predicted, section_probabilities = section_cv
        self.cv_ = CrossValidation(
            section_rows=section_rows,
            section_truth=tuple(section_labels),
            section_predicted=section_predicted.get("full", ()),
            tag_rows=tag_rows,
            tag_truth=tag_truth,
            tag_predicted=tag_cv["full"],
            section_predicted_by_view=section_predicted,
            section_probabilities_by_view=section_probabilities,
            tag_predicted_by_view=tag_cv,
        )
        return self

    def _weights(self, head: str) -> dict[View, float]:
        """Sample weight of each view in ``head``'s training (views weighing 0 are left out)."""
        weights: dict[View, float] = {
            "full": 1.0,
            "lead": self._view_weight(f"{head}_lead_weight"),
            "headline": self._view_weight(f"{head}_headline_weight"),
        }
        return {view: weight for view, weight in weights.items() if weight > 0.0}

    def _view_weight(self, name: str) -> float:
        """The hyper-parameter ``name`` of ``_VIEW_WEIGHTS``, its default resolved."""
        value = getattr(self, name)
        if value is None and name == "section_headline_weight":
            return SECTION_HEADLINE_WEIGHT[uses_chars(check_feature_set(self.features))]
        return float(value)

    # -- section head -------------------------------------------------------------------

    def _sentence_features(
        self, vectorizer: TextFeatures, articles: Sequence[HasTitleAndBody]
    ) -> _Sentences | None:
        """Features of the body sentences the section head learns from, and whose they are."""
        limit, weight = int(self.section_sentences), float(self.section_sentence_weight)
        if limit == 0 or weight == 0.0 or not articles:
            return None
        texts: list[str] = []
        owners: list[int] = []
        for row, article in enumerate(articles):
            for sentence in later_sentences(article.body, limit):
                texts.append(compose_text("", sentence, 0))
                owners.append(row)
        if not texts:
            return None
        return _Sentences(vectorizer.transform(texts), np.asarray(owners, dtype=np.intp), weight)

    def _fit_sections(
        self, features: ViewFeatures, labels: list[str], sentences: _Sentences | None = None
    ) -> tuple[_Head, tuple[dict[View, tuple[str, ...]], dict[View, FloatArray]]]:
        """The section head, and its out-of-fold predictions and probabilities per view."""
        classes = self.sections_
        n_features = features["full"].shape[1]
        if not labels:
            self.section_temperature_ = 1.0
            return _empty_head(n_features, 0), ({}, {})
        if len(classes) < 2:
            raise TrainingError(f"the section head needs at least 2 sections, got {list(classes)}")
        y = np.array([classes.index(label) for label in labels])
        weights = self._weights("section")
        scores = {view: np.zeros((len(labels), len(classes))) for view in VIEWS}
        folds = np.empty(y.size, dtype=np.intp)
        for fold, (train, test) in enumerate(self._section_folds(y)):
            matrix, targets, sample_weight = _stack(features, train, y, weights, sentences)
            head = self._fit_section_model(matrix, targets, sample_weight, len(classes))
            for view in VIEWS:
                scores[view][test] = features[view][test] @ head.coef + head.intercept
            folds[test] = fold
        # Calibrated on every view at once: the service sees all of them.
        mixed_scores = np.vstack([scores[view] for view in VIEWS])
        mixed_y = np.tile(y, len(VIEWS))
        mixed_folds = np.tile(folds, len(VIEWS))
        self.section_temperature_ = fit_temperature(mixed_scores, mixed_y)
        probabilities = {view: np.zeros_like(scores[view]) for view in VIEWS}
        for fold in np.unique(folds):
            # Probabilities of a fold use a temperature fitted on the other folds only.
            others = mixed_folds != fold
            temperature = fit_temperature(mixed_scores[others], mixed_y[others])
            held_out = folds == fold
            for view in VIEWS:
                probabilities[view][held_out] = softmax_probabilities(
                    scores[view][held_out], temperature
                )
        predicted = {view: tuple(classes[i] for i in scores[view].argmax(axis=1)) for view in VIEWS}
        matrix, targets, sample_weight = _stack(features, np.arange(y.size), y, weights, sentences)
        head = self._fit_section_model(matrix, targets, sample_weight, len(classes))
        return head, (predicted, probabilities)

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
        self,
        features: sp.csr_matrix,
        y: NDArray[np.int_],
        sample_weight: FloatArray,
        n_classes: int,
    ) -> _Head:
        present = np.unique(y)
        coef = np.zeros((features.shape[1], n_classes))
        intercept = np.full(n_classes, -1e3)
        if present.size == 1:
            intercept[present[0]] = 0.0
            return _Head(coef, intercept)
        svm = LinearSVC(C=self._section_c(), random_state=self.random_state, max_iter=5000)
        svm.fit(features, y, sample_weight=sample_weight)
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
                weights, bias = self._fit_nbsvm(features, y == label, sample_weight)
                coef[:, label] += weights
                intercept[label] += bias
        return _Head(coef, intercept)

    def _section_c(self) -> float:
        if self.section_c is not None:
            return float(self.section_c)
        return SECTION_C[uses_chars(check_feature_set(self.features))]

    def _fit_nbsvm(
        self, features: sp.csr_matrix, positive: BoolArray, sample_weight: FloatArray
    ) -> tuple[FloatArray, float]:
        """A one-vs-rest SVM on features scaled by their log-count ratio (NBSVM).

        Scaling column ``k`` by ``r[k]`` and learning ``w`` equals the linear model ``r * w``
        on the unscaled features, so the result adds to the plain SVM's weights.
        """
        alpha = self.section_nb_alpha
        p = alpha + np.asarray(features[positive].T @ sample_weight[positive]).ravel()
        q = alpha + np.asarray(features[~positive].T @ sample_weight[~positive]).ravel()
        ratio = np.log((p / p.sum()) / (q / q.sum()))
        svm = LinearSVC(C=self._section_c(), random_state=self.random_state, max_iter=5000)
        svm.fit(sp.csr_matrix(features.multiply(ratio)), positive, sample_weight=sample_weight)
        return svm.coef_[0] * ratio, float(svm.intercept_[0])

    # -- tags head ----------------------------------------------------------------------

    def _fit_tags(
        self, features: ViewFeatures, truth: BoolArray
    ) -> tuple[_Head, dict[View, BoolArray]]:
        """The tags head, and its out-of-fold decisions per view."""
        n_labels = truth.shape[1]
        n_features = features["full"].shape[1]
        if n_labels == 0:
            self.tag_thresholds_ = np.zeros(0)
            self.tag_slope_ = 1.0
            empty = np.zeros(truth.shape, dtype=np.bool_)
            return _empty_head(n_features, 0), dict.fromkeys(VIEWS, empty)
        n_records = truth.shape[0]
        if n_records < self.cv_folds:
            raise TrainingError(
                f"the tags head has {n_records} labelled records, fewer than "
                f"cv_folds={self.cv_folds}"
            )
        weights = self._weights("tag")
        folds = np.empty(n_records, dtype=np.intp)
        scores = {view: np.zeros(truth.shape) for view in VIEWS}
        splitter = KFold(self.cv_folds, shuffle=True, random_state=self.random_state)
        for fold, (train, test) in enumerate(splitter.split(np.zeros(n_records))):
            matrix, targets, sample_weight = _stack(features, train, truth, weights)
            head = self._fit_tag_models(matrix, targets, sample_weight)
            for view in VIEWS:
                scores[view][test] = features[view][test] @ head.coef + head.intercept
            folds[test] = fold
        fbr, rare_count = float(self.tag_fbr), int(self.tag_rare_count)
        rare_threshold = float(self.tag_rare_threshold)
        # Thresholds are tuned on full texts: that is where precision and recall are
        # measured; short texts then score lower and produce fewer tags, not wrong ones.
        self.tag_thresholds_ = tune_thresholds(
            scores["full"], truth, fbr=fbr, rare_count=rare_count, rare_threshold=rare_threshold
        )
        margins = np.vstack([scores[view] - self.tag_thresholds_ for view in VIEWS])
        self.tag_slope_ = fit_slope(margins, np.tile(truth, (len(VIEWS), 1)))
        per_fold = cross_fitted_thresholds(
            scores["full"],
            truth,
            folds,
            fbr=fbr,
            rare_count=rare_count,
            rare_threshold=rare_threshold,
        )
        predicted = {view: scores[view] > per_fold[folds] for view in VIEWS}
        matrix, targets, sample_weight = _stack(features, np.arange(n_records), truth, weights)
        return self._fit_tag_models(matrix, targets, sample_weight), predicted

    def _fit_tag_models(
        self, features: sp.csr_matrix, truth: BoolArray, sample_weight: FloatArray
    ) -> _Head:
        fit_one: Callable[[int], tuple[FloatArray, float]] = self._tag_fitter(
            features, truth, sample_weight
        )
        results = joblib.Parallel(n_jobs=self.n_jobs, prefer="threads")(
            joblib.delayed(fit_one)(column) for column in range(truth.shape[1])
        )
        coef = np.column_stack([weights for weights, _ in results])
        intercept = np.array([bias for _, bias in results])
        return _Head(coef, intercept)

    def _tag_fitter(
        self, features: sp.csr_matrix, truth: BoolArray, sample_weight: FloatArray
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
            svm.fit(features, y, sample_weight=sample_weight)
            return svm.coef_[0].copy(), float(svm.intercept_[0])

        return fit_one

    # -- export -------------------------------------------------------------------------

    def to_inference(self) -> LinearTextModel:
        """The fitted model as one linear map, as stored in an artifact."""
        weights = np.hstack([self.section_coef_, self.tag_coef_]).astype(np.float32)
        bias = np.concatenate([self.section_intercept_, self.tag_intercept_]).astype(np.float32)
        vocabulary, idf, ngram_max, grams, char_min, char_max = self.vectorizer_.export()
        return LinearTextModel(
            vocabulary=vocabulary,
            idf=idf,
            ngram_max=ngram_max,
            features=self.vectorizer_.features,
            char_vocabulary=grams,
            char_ngram_min=char_min,
            char_ngram_max=char_max,
            weights=np.ascontiguousarray(weights),
            bias=bias,
            sections=self.sections_,
            tags=self.tags_,
            section_temperature=float(self.section_temperature_),
            tag_thresholds=np.asarray(self.tag_thresholds_, dtype=np.float32),
            tag_slope=float(self.tag_slope_),
            title_repeats=int(self.title_repeats),
        )


@dataclass(frozen=True, slots=True)
class _Sentences:
    """Extra training rows: ``matrix`` row ``i`` is a sentence of head record ``owners[i]``."""

    matrix: sp.csr_matrix
    owners: IndexArray
    weight: float


def _empty_head(n_features: int, n_labels: int) -> _Head:
    return _Head(np.zeros((n_features, n_labels)), np.zeros(n_labels))


def _binarize(tag_lists: Sequence[Sequence[str]], classes: tuple[str, ...]) -> BoolArray:
    index = {tag: i for i, tag in enumerate(classes)}
    truth = np.zeros((len(tag_lists), len(classes)), dtype=np.bool_)
    for row, labels in enumerate(tag_lists):
        for tag in labels:
            truth[row, index[tag]] = True
    return truth


def _stack(
    features: ViewFeatures,
    rows: IndexArray,
    targets: NDArray[Any],
    weights: Mapping[View, float],
    sentences: _Sentences | None = None,
) -> tuple[sp.csr_matrix, NDArray[Any], FloatArray]:
    """Training matrix of ``rows`` in every weighted view (then the sentences of those rows),
    their targets and sample weights."""
    views = list(weights)
    blocks = [features[view][rows] for view in views]
    stacked = [targets[rows]] * len(views)
    sample_weight = [np.repeat([weights[view] for view in views], rows.size).astype(np.float64)]
    if sentences is not None:
        chosen = np.isin(sentences.owners, rows)
        blocks.append(sentences.matrix[chosen])
        stacked.append(targets[sentences.owners[chosen]])
        sample_weight.append(np.full(int(chosen.sum()), sentences.weight))
    matrix = sp.csr_matrix(sp.vstack(blocks, format="csr"))
    return matrix, np.concatenate(stacked), np.concatenate(sample_weight)
