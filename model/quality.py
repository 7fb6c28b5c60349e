"""Cross-validated quality on the research corpora: ``python -m model.quality --data DIR``.

(a) sections on bbc-news: out-of-fold accuracy and macro-F1;
(b) tags on reuters21578, scored the standard ModApte-90 way (micro/macro F1 over the 90
    topic codes, on the stories carrying at least one of them) although the model trains
    on the full ``tags`` field; tag thresholds applied to a fold are tuned on other folds;
(c) sections from the headline alone on bbc-news: trained on full articles of the other
    folds, predicted from the held-out headlines only.
Only the training files are used; the held-back test splits stay untouched.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedKFold

from model.corpus import load_labelled
from model.metrics import section_metrics, tag_metrics
from model.predictor import Predictor
from model.training import ParamValue, train
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


@dataclass(frozen=True, slots=True)
class QualityReport:
    """The three headline measurements, all cross-validated on the training files."""

    folds: int
    bbc_accuracy: float
    bbc_macro_f1: float
    reuters_micro_f1: float
    reuters_macro_f1: float
    reuters_micro_precision: float
    reuters_micro_recall: float
    reuters_stories: int
    bbc_title_accuracy: float
    skipped_lines: int
    seconds: float

    def render_text(self) -> str:
        """Human-readable summary with the targets."""
        return "\n".join(
            [
                f"{self.folds}-fold cross-validation on the training files ({self.seconds:.0f} s;"
                f" {self.skipped_lines} text-less lines skipped)",
                f"(a) bbc sections: accuracy {self.bbc_accuracy:.4f} (target >= 0.99), "
                f"macro-F1 {self.bbc_macro_f1:.4f}",
                f"(b) reuters ModApte-90 tags on {self.reuters_stories} stories: micro-F1 "
                f"{self.reuters_micro_f1:.4f} (target >= 0.88; P {self.reuters_micro_precision:.4f}"
                f" R {self.reuters_micro_recall:.4f}), macro-F1 {self.reuters_macro_f1:.4f} "
                "(target >= 0.60)",
                f"(c) bbc sections from the title alone: accuracy {self.bbc_title_accuracy:.4f}",
            ]
        )


def sections_quality(
    records: Sequence[LabelledArticle], *, folds: int, params: Mapping[str, ParamValue]
) -> tuple[float, float]:
    """Out-of-fold section accuracy and macro-F1."""
    trained = train(records, name="quality-sections", cv_folds=folds, params=params)
    cv = trained.estimator.cv_
    found = section_metrics(cv.section_truth, cv.section_predicted)
    return found.accuracy, found.macro_f1


def modapte_quality(
    records: Sequence[LabelledArticle],
    *,
    folds: int,
    params: Mapping[str, ParamValue],
    n_jobs: int = 1,
) -> tuple[float, float, float, float, int]:
    """Micro-F1, macro-F1, micro precision, micro recall and story count on ModApte-90."""
    trained = train(records, name="quality-tags", cv_folds=folds, params=params, n_jobs=n_jobs)
    estimator = trained.estimator
    columns = [estimator.tags_.index(code) for code in MODAPTE_90]
    truth = estimator.cv_.tag_truth[:, columns]
    predicted = estimator.cv_.tag_predicted[:, columns]
    scored = truth.any(axis=1)
    found = tag_metrics(truth[scored], predicted[scored], MODAPTE_90)
    return (
        found.micro_f1,
        found.macro_f1,
        found.micro_precision,
        found.micro_recall,
        int(scored.sum()),
    )


def title_only_accuracy(
    records: Sequence[LabelledArticle],
    *,
    folds: int,
    params: Mapping[str, ParamValue],
    random_state: int = 0,
) -> float:
    """Accuracy of sections predicted from headlines, by models trained on full articles."""
    labels = np.array([record.section for record in records])
    splitter = StratifiedKFold(folds, shuffle=True, random_state=random_state)
    correct = 0
    for train_rows, test_rows in splitter.split(np.zeros(labels.size), labels):
        trained = train(
            [records[i] for i in train_rows], name="quality-titles", cv_folds=folds, params=params
        )
        headlines = [
            ArticleEvent.model_construct(article_id=records[i].article_id, title=records[i].title)
            for i in test_rows
        ]
        for row, result in zip(
            test_rows, Predictor.from_trained(trained).predict(headlines), strict=True
        ):
            correct += int(result.section is not None and result.section.label == labels[row])
    return correct / labels.size


def measure(
    data: Path,
    *,
    folds: int = 5,
    params: Mapping[str, ParamValue] | None = None,
    n_jobs: int = 1,
) -> QualityReport:
    """Run the three measurements on the corpora under ``data``."""
    start = time.perf_counter()
    chosen = dict(params or {})
    # A few Reuters stories have neither headline nor body: nothing to learn from.
    bbc_load = load_labelled([data / BBC], skip_invalid=True)
    reuters_load = load_labelled([data / REUTERS], skip_invalid=True)
    bbc, reuters = bbc_load.records, reuters_load.records
    accuracy, macro = sections_quality(bbc, folds=folds, params=chosen)
    micro_f1, macro_f1, precision, recall, stories = modapte_quality(
        reuters, folds=folds, params=chosen, n_jobs=n_jobs
    )
    titles = title_only_accuracy(bbc, folds=folds, params=chosen)
    return QualityReport(
        folds=folds,
        bbc_accuracy=accuracy,
        bbc_macro_f1=macro,
        reuters_micro_f1=micro_f1,
        reuters_macro_f1=macro_f1,
        reuters_micro_precision=precision,
        reuters_micro_recall=recall,
        reuters_stories=stories,
        bbc_title_accuracy=titles,
        skipped_lines=len(bbc_load.skipped) + len(reuters_load.skipped),
        seconds=time.perf_counter() - start,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="python -m model.quality", description=__doc__)
    parser.add_argument("--data", type=Path, default=Path("../shared/data"), help="corpora root")
    parser.add_argument("--folds", type=int, default=5, help="cross-validation folds")
    parser.add_argument("--jobs", type=int, default=1, help="threads for the per-tag models")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=JSON",
        help="override an ArticleClassifier hyper-parameter, e.g. --param tag_c=0.5",
    )
    args = parser.parse_args(argv)
    params: dict[str, ParamValue] = {}
    for item in args.param:
        key, _, value = item.partition("=")
        params[key] = json.loads(value)
    report = measure(args.data, folds=args.folds, params=params, n_jobs=args.jobs)
    if args.json:
        print(json.dumps(asdict(report), sort_keys=True))
    else:
        print(report.render_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
