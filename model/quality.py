"""Cross-validated quality on the research corpora: ``python -m model.quality --data DIR``.

Every measurement is made on three views of each held-out article (``model.text.VIEWS``):
the full text, the headline + first sentence, and the headline alone.

(a) sections on bbc-news: out-of-fold accuracy and macro-F1, and how honest the section
    scores are: expected calibration error, a reliability table, and the share of
    articles whose score is under the service's low-confidence threshold;
(b) tags on reuters21578, scored the standard ModApte-90 way (micro/macro F1 over the 90
    topic codes, on the stories carrying at least one of them) although the model trains
    on the full ``tags`` field; tag thresholds applied to a fold are tuned on other folds;
(c) shift across corpora: the section model trained on all of bbc-news (1987 wire copy
    is not 2004 web news) classifies the Reuters stories whose topics are business news
    (``BUSINESS_TOPICS``); the share classified ``business``, its calibration and the
    low-confidence share show what in-domain cross-validation cannot;
(d) shift in time: the tags model trained on the earlier Reuters stories scores the latest
    days (``TIME_HOLDOUT_SHARE`` of the stories, whole days), as next month's news would
    be; random folds mix every day into training, so cross-validation cannot see this.
Only the training files are used; the held-back test splits stay untouched. ``--seeds``
repeats everything with other fold seeds and reports the mean and the range.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np

from model.calibration import ReliabilityBin, expected_calibration_error, reliability_table
from model.corpus import load_labelled
from model.metrics import section_metrics, tag_metrics
from model.predictor import Predictor
from model.text import VIEWS, View, first_sentence
from model.training import ParamValue, TrainedModel, train
from schemas import ArticleEvent, LabelledArticle

BBC = Path("bbc-news") / "train.jsonl"
REUTERS = Path("reuters21578") / "train.jsonl"

# The "ModApte-90" categories: the Reuters-21578 topic codes with at least one training and
# one test story in the ModApte split (Yang & Liu, SIGIR 1999; the 90 categories of NLTK's
# reuters corpus). A public list of names, hard-coded so scoring needs no test data.
MODAPTE_90 = (
    "acq",
    "alum",
    "barley",
    "bop",
    "carcass",
    "castor-oil",
    "cocoa",
    "coconut",
    "coconut-oil",
    "coffee",
    "copper",
    "copra-cake",
    "corn",
    "cotton",
    "cotton-oil",
    "cpi",
    "cpu",
    "crude",
    "dfl",
    "dlr",
    "dmk",
    "earn",
    "fuel",
    "gas",
    "gnp",
    "gold",
    "grain",
    "groundnut",
    "groundnut-oil",
    "heat",
    "hog",
    "housing",
    "income",
    "instal-debt",
    "interest",
    "ipi",
    "iron-steel",
    "jet",
    "jobs",
    "l-cattle",
    "lead",
    "lei",
    "lin-oil",
    "livestock",
    "lumber",
    "meal-feed",
    "money-fx",
    "money-supply",
    "naphtha",
    "nat-gas",
    "nickel",
    "nkr",
    "nzdlr",
    "oat",
    "oilseed",
    "orange",
    "palladium",
    "palm-oil",
    "palmkernel",
    "pet-chem",
    "platinum",
    "potato",
    "propane",
    "rand",
    "rape-oil",
    "rapeseed",
    "reserves",
    "retail",
    "rice",
    "rubber",
    "rye",
    "ship",
    "silver",
    "sorghum",
    "soy-meal",
    "soy-oil",
    "soybean",
    "strategic-metal",
    "sugar",
    "sun-meal",
    "sun-oil",
    "sunseed",
    "tea",
    "tin",
    "trade",
    "veg-oil",
    "wheat",
    "wpi",
    "yen",
    "zinc",
)

#: Reuters topics about companies, markets and the economy: a story carrying one of them is
#: BBC ``business`` news (commodity and shipping stories are left out: some are politics).
BUSINESS_TOPICS = frozenset(
    {
        "earn",
        "acq",
        "money-fx",
        "interest",
        "money-supply",
        "dlr",
        "yen",
        "gnp",
        "cpi",
        "wpi",
        "ipi",
        "bop",
        "reserves",
        "jobs",
        "retail",
        "housing",
        "income",
    }
)
BUSINESS = "business"

#: Share of the dated Reuters stories, the latest, that the time-range check holds out.
TIME_HOLDOUT_SHARE = 0.2

#: The service's default ``--low-confidence-threshold``.
LOW_CONFIDENCE = 0.5


@dataclass(frozen=True, slots=True)
class SectionView:
    """The bbc-news section head on one view of the held-out articles."""

    view: View
    accuracy: float
    macro_f1: float
    mean_confidence: float
    ece: float
    low_confidence_share: float
    reliability: tuple[ReliabilityBin, ...]


@dataclass(frozen=True, slots=True)
class TagView:
    """The Reuters ModApte-90 scores on one view of the held-out stories."""

    view: View
    micro_f1: float
    macro_f1: float
    micro_precision: float
    micro_recall: float
    tags_per_story: float


@dataclass(frozen=True, slots=True)
class ShiftView:
    """The bbc-trained section model on one view of the Reuters business stories."""

    view: View
    stories: int
    accuracy: float
    mean_confidence: float
    ece: float
    low_confidence_share: float


@dataclass(frozen=True, slots=True)
class TimeShift:
    """ModApte-90 scores, per view, of a model trained on the stories before ``cutoff``
    (a UTC day, ISO format) on the stories of that day and later."""

    cutoff: str
    train_stories: int
    stories: int
    tags: tuple[TagView, ...]


@dataclass(frozen=True, slots=True)
class QualityReport:
    """All measurements of one fold seed, cross-validated on the training files."""

    folds: int
    seed: int
    bbc_accuracy: float
    bbc_macro_f1: float
    reuters_micro_f1: float
    reuters_macro_f1: float
    reuters_micro_precision: float
    reuters_micro_recall: float
    reuters_stories: int
    bbc_title_accuracy: float
    bbc_lead_accuracy: float
    shift_accuracy: float
    sections: tuple[SectionView, ...]
    tags: tuple[TagView, ...]
    shift: tuple[ShiftView, ...]
    skipped_lines: int
    seconds: float
    time_micro_f1: float
    time_macro_f1: float
    time_shift: TimeShift

    def render_text(self) -> str:
        """Human-readable summary with the targets, then one table per measurement."""
        lines = [
            f"{self.folds}-fold cross-validation on the training files, fold seed {self.seed}"
            f" ({self.seconds:.0f} s; {self.skipped_lines} text-less lines skipped)",
            f"(a) bbc sections: accuracy {self.bbc_accuracy:.4f} (target >= 0.99), "
            f"macro-F1 {self.bbc_macro_f1:.4f}",
            f"(b) reuters ModApte-90 tags on {self.reuters_stories} stories: micro-F1 "
            f"{self.reuters_micro_f1:.4f} (target >= 0.88; P {self.reuters_micro_precision:.4f}"
            f" R {self.reuters_micro_recall:.4f}), macro-F1 {self.reuters_macro_f1:.4f} "
            "(target >= 0.60)",
            f"(c) bbc sections from the title alone: accuracy {self.bbc_title_accuracy:.4f}"
            f"; from title + first sentence: {self.bbc_lead_accuracy:.4f}",
            f"(d) shift: bbc-trained sections on reuters business stories, accuracy "
            f"{self.shift_accuracy:.4f}",
            f"(e) shift in time: reuters tags trained before {self.time_shift.cutoff}, "
            f"ModApte-90 on the {self.time_shift.stories} later stories: micro-F1 "
            f"{self.time_micro_f1:.4f}, macro-F1 {self.time_macro_f1:.4f}",
            "",
            f"bbc sections by view (calibration: ECE over 10 bins; low = score < {LOW_CONFIDENCE})",
            "  view       accuracy  macro-F1  mean-conf     ECE    low",
        ]
        lines += [
            f"  {s.view:<9} {s.accuracy:9.4f} {s.macro_f1:9.4f} {s.mean_confidence:10.4f}"
            f" {s.ece:7.4f} {s.low_confidence_share:6.3f}"
            for s in self.sections
        ]
        lines += [
            "",
            "reuters ModApte-90 by view (tags: ModApte-90 codes predicted per story)",
            "  view       micro-F1  macro-F1       P       R  tags",
        ]
        lines += [
            f"  {t.view:<9} {t.micro_f1:9.4f} {t.macro_f1:9.4f} {t.micro_precision:7.4f}"
            f" {t.micro_recall:7.4f} {t.tags_per_story:5.2f}"
            for t in self.tags
        ]
        lines += [
            "",
            "shift: bbc-trained sections on reuters business stories, by view",
            "  view      stories  accuracy  mean-conf     ECE    low",
        ]
        lines += [
            f"  {v.view:<9} {v.stories:7d} {v.accuracy:9.4f} {v.mean_confidence:10.4f}"
            f" {v.ece:7.4f} {v.low_confidence_share:6.3f}"
            for v in self.shift
        ]
        lines += [
            "",
            f"shift in time: trained on {self.time_shift.train_stories} reuters stories before "
            f"{self.time_shift.cutoff}, ModApte-90 on the later ones, by view",
            "  view       micro-F1  macro-F1       P       R  tags",
        ]
        lines += [
            f"  {t.view:<9} {t.micro_f1:9.4f} {t.macro_f1:9.4f} {t.micro_precision:7.4f}"
            f" {t.micro_recall:7.4f} {t.tags_per_story:5.2f}"
            for t in self.time_shift.tags
        ]
        lines += ["", "reliability of bbc section scores (out-of-fold): bin, n, confidence, hits"]
        for s in self.sections:
            lines.append(f"  {s.view}")
            lines += [
                f"    [{b.low:.1f}, {b.high:.1f})  {b.count:5d}  {b.mean_confidence:.3f}"
                f"  {b.accuracy:.3f}"
                for b in s.reliability
            ]
        return "\n".join(lines)


def _calibration(
    confidence: np.ndarray[tuple[int], np.dtype[np.float64]],
    correct: np.ndarray[tuple[int], np.dtype[np.bool_]],
) -> tuple[float, float, float]:
    """Mean confidence, ECE and low-confidence share."""
    return (
        float(confidence.mean()) if confidence.size else 0.0,
        expected_calibration_error(confidence, correct),
        float((confidence < LOW_CONFIDENCE).mean()) if confidence.size else 0.0,
    )


def sections_quality(
    records: Sequence[LabelledArticle],
    *,
    folds: int,
    params: Mapping[str, ParamValue],
    seed: int = 0,
) -> tuple[TrainedModel, tuple[SectionView, ...]]:
    """The trained section model and its out-of-fold quality on each view."""
    trained = train(
        records, name="quality-sections", cv_folds=folds, params=params, random_state=seed
    )
    cv = trained.estimator.cv_
    truth = np.array(cv.section_truth)
    views = []
    for view in VIEWS:
        predicted = cv.section_predicted_by_view[view]
        found = section_metrics(cv.section_truth, predicted)
        confidence = cv.section_probabilities_by_view[view].max(axis=1)
        correct = truth == np.array(predicted)
        mean, ece, low = _calibration(confidence, correct)
        views.append(
            SectionView(
                view=view,
                accuracy=found.accuracy,
                macro_f1=found.macro_f1,
                mean_confidence=mean,
                ece=ece,
                low_confidence_share=low,
                reliability=reliability_table(confidence, correct),
            )
        )
    return trained, tuple(views)


def modapte_quality(
    records: Sequence[LabelledArticle],
    *,
    folds: int,
    params: Mapping[str, ParamValue],
    n_jobs: int = 1,
    seed: int = 0,
) -> tuple[tuple[TagView, ...], int]:
    """ModApte-90 scores of each view, and the number of stories scored."""
    trained = train(
        records,
        name="quality-tags",
        cv_folds=folds,
        params=params,
        n_jobs=n_jobs,
        random_state=seed,
    )
    estimator = trained.estimator
    columns = [estimator.tags_.index(code) for code in MODAPTE_90]
    truth = estimator.cv_.tag_truth[:, columns]
    scored = truth.any(axis=1)
    views = []
    for view in VIEWS:
        predicted = estimator.cv_.tag_predicted_by_view[view][:, columns]
        views.append(_tag_view(view, truth[scored], predicted[scored]))
    return tuple(views), int(scored.sum())


def _tag_view(
    view: View,
    truth: np.ndarray[tuple[int, int], np.dtype[np.bool_]],
    predicted: np.ndarray[tuple[int, int], np.dtype[np.bool_]],
) -> TagView:
    """ModApte-90 scores of ``predicted`` (columns in ``MODAPTE_90`` order)."""
    found = tag_metrics(truth, predicted, MODAPTE_90)
    return TagView(
        view=view,
        micro_f1=found.micro_f1,
        macro_f1=found.macro_f1,
        micro_precision=found.micro_precision,
        micro_recall=found.micro_recall,
        tags_per_story=float(predicted.sum(axis=1).mean()) if predicted.size else 0.0,
    )


def utc_day(timestamp: str) -> date:
    """The UTC calendar day of an RFC 3339 timestamp."""
    return datetime.fromisoformat(timestamp).astimezone(UTC).date()


def split_by_time(
    records: Sequence[LabelledArticle], share: float
) -> tuple[list[LabelledArticle], list[LabelledArticle], date]:
    """The dated records before the cutoff day, those of the cutoff day and later, and the
    cutoff: the day of the story at ``1 - share`` in time order, so about ``share`` of the
    stories are held out, in whole days (one day's follow-ups stay on one side).

    Records without ``published_at`` are left out of both sides. Raises ``ValueError``
    when ``share`` is not in (0, 1) or one side would be empty.
    """
    if not 0.0 < share < 1.0:
        raise ValueError(f"the held-out share must be between 0 and 1, got {share}")
    dated = sorted(
        ((utc_day(r.published_at), r) for r in records if r.published_at),
        key=lambda pair: pair[0],
    )
    if not dated:
        raise ValueError("no record carries published_at: cannot split by time")
    cutoff = dated[min(len(dated) - 1, math.floor((1.0 - share) * len(dated)))][0]
    earlier = [r for day, r in dated if day < cutoff]
    later = [r for day, r in dated if day >= cutoff]
    if not earlier:
        raise ValueError(f"every dated record is from {cutoff} or later: cannot split by time")
    return earlier, later, cutoff


def time_shift_quality(
    records: Sequence[LabelledArticle],
    *,
    folds: int,
    params: Mapping[str, ParamValue],
    n_jobs: int = 1,
    seed: int = 0,
    share: float = TIME_HOLDOUT_SHARE,
) -> TimeShift:
    """ModApte-90 scores of a tags model trained on the earlier stories, on the later ones.

    The model is trained on the ModApte-90 codes only: each tag has its own SVM and its own
    threshold, so the other tags would not change these scores, only cost time.
    """
    earlier, later, cutoff = split_by_time(records, share)
    modapte = frozenset(MODAPTE_90)
    training = [
        r.model_copy(update={"tags": [t for t in r.tags if t in modapte]})
        for r in earlier
        if r.tags is not None
    ]
    trained = train(
        training,
        name="quality-time",
        cv_folds=folds,
        params=params,
        n_jobs=n_jobs,
        random_state=seed,
    )
    predictor = Predictor.from_trained(trained)
    stories = [r for r in later if modapte.intersection(r.tags or ())]
    truth = np.array([[code in (r.tags or ()) for code in MODAPTE_90] for r in stories])
    truth = truth.reshape(len(stories), len(MODAPTE_90))
    # A code that no earlier story carries has no model: it is never predicted.
    known = [
        (i, predictor.tags.index(code))
        for i, code in enumerate(MODAPTE_90)
        if code in predictor.tags
    ]
    views = []
    for view in VIEWS:
        decisions = predictor.score([view_of(story, view) for story in stories]).tag_decisions
        predicted = np.zeros_like(truth)
        for target, column in known:
            predicted[:, target] = decisions[:, column]
        views.append(_tag_view(view, truth, predicted))
    return TimeShift(
        cutoff=cutoff.isoformat(),
        train_stories=len(training),
        stories=len(stories),
        tags=tuple(views),
    )


def view_of(record: LabelledArticle, view: View) -> ArticleEvent:
    """What the service would receive for ``view`` of ``record``."""
    body = {"full": record.body, "lead": first_sentence(record.body), "headline": ""}[view]
    return ArticleEvent.model_construct(article_id=record.article_id, title=record.title, body=body)


def shift_quality(
    trained: TrainedModel, stories: Sequence[LabelledArticle]
) -> tuple[ShiftView, ...]:
    """The share of ``stories`` (all business news) that ``trained`` calls business, per view."""
    predictor = Predictor.from_trained(trained)
    business = predictor.sections.index(BUSINESS)
    views = []
    for view in VIEWS:
        batch = predictor.score([view_of(story, view) for story in stories])
        probabilities = batch.section_probabilities.astype(np.float64)
        correct = probabilities.argmax(axis=1) == business
        mean, ece, low = _calibration(probabilities.max(axis=1), correct)
        views.append(
            ShiftView(
                view=view,
                stories=len(stories),
                accuracy=float(correct.mean()) if correct.size else 0.0,
                mean_confidence=mean,
                ece=ece,
                low_confidence_share=low,
            )
        )
    return tuple(views)


def business_stories(records: Sequence[LabelledArticle]) -> list[LabelledArticle]:
    """The stories carrying a ``BUSINESS_TOPICS`` code and some text to classify."""
    return [r for r in records if BUSINESS_TOPICS.intersection(r.tags or ())]


def measure(
    data: Path,
    *,
    folds: int = 5,
    params: Mapping[str, ParamValue] | None = None,
    n_jobs: int = 1,
    seed: int = 0,
    section_params: Mapping[str, ParamValue] | None = None,
    tag_params: Mapping[str, ParamValue] | None = None,
) -> QualityReport:
    """Run every measurement on the corpora under ``data`` with fold seed ``seed``.

    ``params`` apply to every model; ``section_params`` on top of them to the bbc-news
    section model (sections, calibration and the shift across corpora) and ``tag_params``
    to the reuters21578 tags models (ModApte-90 and the shift in time), as when each corpus
    trains a model of its own.
    """
    start = time.perf_counter()
    chosen = dict(params or {})
    for_sections = chosen | dict(section_params or {})
    for_tags = chosen | dict(tag_params or {})
    # A few Reuters stories have neither headline nor body: nothing to learn from.
    bbc_load = load_labelled([data / BBC], skip_invalid=True)
    reuters_load = load_labelled([data / REUTERS], skip_invalid=True)
    bbc, reuters = bbc_load.records, reuters_load.records
    trained, sections = sections_quality(bbc, folds=folds, params=for_sections, seed=seed)
    tags, stories = modapte_quality(reuters, folds=folds, params=for_tags, n_jobs=n_jobs, seed=seed)
    shift = shift_quality(trained, business_stories(reuters))
    in_time = time_shift_quality(reuters, folds=folds, params=for_tags, n_jobs=n_jobs, seed=seed)
    by_view = {s.view: s for s in sections}
    full_tags = tags[0]
    return QualityReport(
        folds=folds,
        seed=seed,
        bbc_accuracy=by_view["full"].accuracy,
        bbc_macro_f1=by_view["full"].macro_f1,
        reuters_micro_f1=full_tags.micro_f1,
        reuters_macro_f1=full_tags.macro_f1,
        reuters_micro_precision=full_tags.micro_precision,
        reuters_micro_recall=full_tags.micro_recall,
        reuters_stories=stories,
        bbc_title_accuracy=by_view["headline"].accuracy,
        bbc_lead_accuracy=by_view["lead"].accuracy,
        shift_accuracy=shift[0].accuracy,
        sections=sections,
        tags=tags,
        shift=shift,
        skipped_lines=len(bbc_load.skipped) + len(reuters_load.skipped),
        seconds=time.perf_counter() - start,
        time_micro_f1=in_time.tags[0].micro_f1,
        time_macro_f1=in_time.tags[0].macro_f1,
        time_shift=in_time,
    )


#: The figures ``--seeds`` summarises across seeds.
SUMMARY_FIELDS = (
    "bbc_accuracy",
    "bbc_lead_accuracy",
    "bbc_title_accuracy",
    "reuters_micro_f1",
    "reuters_macro_f1",
    "shift_accuracy",
    "time_micro_f1",
    "time_macro_f1",
)


def render_summary(reports: Sequence[QualityReport]) -> str:
    """Mean, minimum and maximum of the main figures across fold seeds."""
    lines = [f"across {len(reports)} fold seeds: mean (min - max)"]
    for name in SUMMARY_FIELDS:
        values = np.array([getattr(report, name) for report in reports])
        lines.append(f"  {name:<20} {values.mean():.4f} ({values.min():.4f} - {values.max():.4f})")
    return "\n".join(lines)


def _parse_params(parser: argparse.ArgumentParser, items: list[str]) -> dict[str, ParamValue]:
    params: dict[str, ParamValue] = {}
    for item in items:
        key, _, value = item.partition("=")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            parser.error(f"{item}: the value must be JSON, e.g. {key}=0.5")
    return params


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="python -m model.quality", description=__doc__)
    parser.add_argument("--data", type=Path, default=Path("../shared/data"), help="corpora root")
    parser.add_argument("--folds", type=int, default=5, help="cross-validation folds")
    parser.add_argument("--seeds", type=int, default=1, help="fold seeds 0 .. N-1 to run")
    parser.add_argument("--jobs", type=int, default=1, help="threads for the per-tag models")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    for option, whose in (
        ("--param", "every model's"),
        ("--section-param", "the bbc section model's"),
        ("--tag-param", "the reuters tags models'"),
    ):
        parser.add_argument(
            option,
            action="append",
            default=[],
            metavar="NAME=JSON",
            help=f"override {whose} ArticleClassifier hyper-parameter, e.g. {option} tag_c=0.5",
        )
    args = parser.parse_args(argv)
    if args.folds < 2 or args.seeds < 1:
        parser.error("--folds must be at least 2 and --seeds at least 1")
    params, section_params, tag_params = (
        _parse_params(parser, items) for items in (args.param, args.section_param, args.tag_param)
    )
    reports = [
        measure(
            args.data,
            folds=args.folds,
            params=params,
            n_jobs=args.jobs,
            seed=seed,
            section_params=section_params,
            tag_params=tag_params,
        )
        for seed in range(args.seeds)
    ]
    if args.json:
        print(json.dumps([asdict(report) for report in reports], sort_keys=True))
        return 0
    print("\n\n".join(report.render_text() for report in reports))
    if len(reports) > 1:
        print("\n" + render_summary(reports))
    return 0


if __name__ == "__main__":
    sys.exit(main())
