"""What routing by language costs per article: the detector, the routing, the whole batch.

Run: ``python benchmarks/bench_language.py [--data FILE.jsonl ...] [--languages de,en]``
(default: the English and German demo corpora). For articles without a ``language`` field it
times, per article, over batches of ``--batch`` articles (best of ``--repeat`` passes):

- ``build_s``: building the detector once (``LanguageDetector``, models preloaded);
- ``detect_us``: the detector alone on what it reads of an article (``detection_text``);
- ``route_us``: ``RoutedPredictor.route`` (field look-up, then the detector for the rest);
- ``field_route_us``: ``route`` when every article has a ``language`` field (no detection);
- ``predict_us``: one model's ``predict_batch`` on the same articles, for scale.

Prints one JSON object. The figure in docs/languages.md came from this script.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from model import Predictor, load_labelled, train  # noqa: E402
from model.languages import LanguageDetector, RoutedPredictor, detection_text  # noqa: E402
from schemas import ArticleEvent  # noqa: E402

DEMO = [ROOT / "model" / "samples" / "demo.jsonl", ROOT / "model" / "samples" / "demo-de.jsonl"]


def _best_per_article(run: Callable[[], object], articles: int, repeat: int) -> float:
    """The fastest of ``repeat`` passes, in microseconds per article."""
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return round(best / articles * 1e6, 2)


def _batches(items: Sequence[ArticleEvent], size: int) -> list[Sequence[ArticleEvent]]:
    return [items[start : start + size] for start in range(0, len(items), size)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, action="append", help="JSONL articles (repeatable)")
    parser.add_argument("--languages", default="de,en", help="configured languages")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--limit", type=int, default=2000, help="most articles read")
    args = parser.parse_args()
    records = load_labelled(args.data or DEMO, skip_invalid=True).records[: args.limit]
    articles = [
        ArticleEvent(article_id=f"a{i}", title=r.title, body=r.body) for i, r in enumerate(records)
    ]
    languages = [code.strip() for code in args.languages.split(",") if code.strip()]
    started = time.perf_counter()
    detector = LanguageDetector(languages)
    build_s = time.perf_counter() - started
    predictor = Predictor.from_trained(train(records, name="bench"))
    routed = RoutedPredictor(predictor, dict.fromkeys(languages, predictor), detector)
    batches = _batches(articles, args.batch)
    texts = [[detection_text(a) for a in batch] for batch in batches]
    declared = _batches(
        [a.model_copy(update={"language": languages[0]}) for a in articles], args.batch
    )
    n = len(articles)
    figures = {
        "articles": n,
        "languages": languages,
        "mean_chars_read": round(sum(len(t) for b in texts for t in b) / n, 1),
        "build_s": round(build_s, 3),
        "detect_us": _best_per_article(lambda: [detector.detect(t) for t in texts], n, args.repeat),
        "route_us": _best_per_article(lambda: [routed.route(b) for b in batches], n, args.repeat),
        "field_route_us": _best_per_article(
            lambda: [routed.route(b) for b in declared], n, args.repeat
        ),
        "predict_us": _best_per_article(
            lambda: [predictor.predict_batch(b) for b in batches], n, args.repeat
        ),
    }
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
