"""Cost of explanations, and the drift signals' levels on held-out and made-up text.

Run: ``python benchmarks/bench_explain.py --data ../shared/data``. Trains one model on 80%
of the bbc-news sections plus 80% of the reuters21578 tags (the rest held out), then:

1. throughput (articles per CPU second) of ``Predictor.predict`` and of the service's
   per-record path (``classify_values``: decode, predict, encode) on Reuters stories, in
   batches of 256,
   with explanations off and with ``--explain K``, the runs interleaved in one process;
2. the four drift signals (``service.observe.drift``) over a window of the held-out BBC articles,
   the held-out Reuters stories, and articles of made-up words, for calibrating alerts.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from model import Predictor, load_labelled, save_artifact, train  # noqa: E402
from schemas import ArticleEvent, LabelledArticle  # noqa: E402
from service.core.classify import classify_values  # noqa: E402
from service.core.records import ArticleNotes, Classified, Verdict  # noqa: E402
from service.observe.drift import DriftWindow  # noqa: E402


def _split(records: list[LabelledArticle], share: float) -> tuple[list[LabelledArticle], ...]:
    shuffled = records[:]
    random.Random(0).shuffle(shuffled)  # noqa: S311 - a fixed split, not a secret
    cut = int(len(shuffled) * share)
    return shuffled[:cut], shuffled[cut:]


def _rate(run: Callable[[], int], seconds: float) -> float:
    """Articles per CPU second of this process: on a host shared with other work, wall-clock
    rates measure the neighbours as much as the code."""
    done, started = 0, time.process_time()
    while time.process_time() - started < seconds:
        done += run()
    return done / (time.process_time() - started)


def _made_up(count: int) -> list[ArticleEvent]:
    rng = random.Random(1)  # noqa: S311 - reproducible text, not a secret
    events = []
    for index in range(count):
        words = [
            "".join(rng.choice("bcdfghjklmnpqrstvwxz") + rng.choice("aeiouy") for _ in range(3))
            for _ in range(120)
        ]
        events.append(
            ArticleEvent(article_id=f"x{index}", title=" ".join(words[:8]), body=" ".join(words))
        )
    return events


def _signals(predictor: Predictor, articles: Sequence[ArticleEvent], size: int) -> dict[str, float]:
    baseline = predictor.baseline
    window = DriftWindow(size, baseline.sections, baseline.section_prior)
    for start in range(0, len(articles), 256):
        batch = predictor.predict_batch(articles[start : start + 256])
        window.add(
            Verdict.of(c, ArticleNotes(tokens, unknown))
            for c, tokens, unknown in zip(
                batch.classifications, batch.tokens, batch.unknown_tokens, strict=True
            )
        )
    found = window.snapshot()
    return {
        "articles": found.articles,
        "section_divergence": found.section_divergence or 0.0,
        "unknown_token_share": found.unknown_token_share or 0.0,
        "mean_section_score": found.mean_section_score or 0.0,
        "mean_tags": found.mean_tags or 0.0,
    }


def main() -> int:
    """Train, time with and without explanations, measure the drift levels; print JSON."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--explain", type=int, default=5, help="terms per label (K)")
    parser.add_argument("--seconds", type=float, default=8.0, help="per timed run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument(
        "--model",
        type=Path,
        default=ROOT / "artifacts" / "explain-bench-model",
        help="artifact of this split: loaded if there, else trained and saved there",
    )
    parser.add_argument("--window", type=int, default=1000, help="drift window (articles)")
    args = parser.parse_args()

    bbc = load_labelled([args.data / "bbc-news" / "train.jsonl"], skip_invalid=True).records
    reuters = load_labelled([args.data / "reuters21578" / "train.jsonl"], skip_invalid=True).records
    bbc_train, bbc_held = _split(bbc, 0.8)
    reuters_train, reuters_held = _split(reuters, 0.8)
    started = time.perf_counter()
    if not (args.model / "model.json").is_file():
        trained = train(
            bbc_train + reuters_train, name="bench", version="bench", cv_folds=3, n_jobs=2
        )
        save_artifact(trained, args.model)
    train_s = time.perf_counter() - started
    predictor = Predictor.load(args.model)

    articles: list[ArticleEvent] = list(reuters)
    batches = [articles[i : i + 256] for i in range(0, len(articles), 256)]
    values = [
        [json.dumps({"article_id": a.article_id, "title": a.title, "body": a.body}).encode()
         for a in batch]
        for batch in batches
    ]  # fmt: skip

    def predict(explain: int) -> Callable[[], int]:
        def run() -> int:
            return sum(len(predictor.predict(batch, explain=explain)) for batch in batches)

        return run

    def service_path(explain: int) -> Callable[[], int]:
        def run() -> int:
            done = 0
            for batch in values:
                outcomes = classify_values(
                    batch, predictor, max_event_bytes=1 << 20, explain=explain
                )
                done += sum(isinstance(outcome, Classified) for outcome in outcomes)
            return done

        return run

    k = args.explain
    rates: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        for name, run in (
            ("predict", predict(0)),
            (f"predict_explain_{k}", predict(k)),
            ("decode_predict_encode", service_path(0)),
            (f"decode_predict_encode_explain_{k}", service_path(k)),
        ):
            rates.setdefault(name, []).append(_rate(run, args.seconds))
    best = {name: max(values) for name, values in rates.items()}
    sample = predictor.predict(articles[:256], explain=k)
    explained_bytes = sum(len(c.model_dump_json()) for c in sample) / len(sample)
    plain_bytes = sum(len(c.model_dump_json()) for c in predictor.predict(articles[:256])) / 256

    drift = {
        "bbc_held_out": _signals(predictor, bbc_held, args.window),
        "reuters_held_out": _signals(predictor, reuters_held, args.window),
        "made_up_words": _signals(predictor, _made_up(args.window), args.window),
    }
    result = {
        "train_or_skip_seconds": round(train_s, 1),
        "articles": len(articles),
        "mean_chars": round(sum(len(a.title) + len(a.body) for a in articles) / len(articles)),
        "articles_per_cpu_second": {name: round(rate) for name, rate in best.items()},
        "all_rounds": {name: [round(r) for r in values] for name, values in rates.items()},
        "explain_cost_predict": round(1 - best[f"predict_explain_{k}"] / best["predict"], 3),
        "explain_cost_service_path": round(
            1 - best[f"decode_predict_encode_explain_{k}"] / best["decode_predict_encode"], 3
        ),
        "classification_json_bytes": {"plain": plain_bytes, f"explain_{k}": explained_bytes},
        "training_tags_per_article": predictor.baseline.tags_per_article,
        "drift": drift,
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
