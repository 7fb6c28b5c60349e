"""In-process inference speed and memory of the model (both heads together).

Run: ``python benchmarks/bench_model.py --data ../shared/data``. Trains one model on the
bbc-news sections plus the reuters21578 tags, saves it, then classifies Reuters stories
(about 800 characters each) in batches and reports articles per second; finally measures
the loaded model's memory in a fresh subprocess.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from model import Predictor, load_labelled, save_artifact, train  # noqa: E402

# Run in a fresh interpreter so that RSS reflects the model, not the benchmark's training.
MEMORY_PROBE = """
import json, sys, tracemalloc
from pathlib import Path

def rss_kib():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return -1

import model  # noqa: F401  (import cost is measured separately from the load)
from model import Predictor
before = rss_kib()
tracemalloc.start()
predictor = Predictor.load(Path(sys.argv[1]))
_, peak = tracemalloc.get_traced_memory()
tracemalloc.stop()
after = rss_kib()
print(json.dumps({"rss_after_import_mib": before / 1024, "rss_after_load_mib": after / 1024,
                  "tracemalloc_peak_load_mib": peak / 2**20}))
"""


def main() -> int:
    """Train, save, time and measure; prints a short report (or JSON)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=20.0, help="timed prediction budget")
    parser.add_argument("--folds", type=int, default=3, help="folds for training the model")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    bbc = load_labelled([args.data / "bbc-news" / "train.jsonl"], skip_invalid=True).records
    reuters = load_labelled([args.data / "reuters21578" / "train.jsonl"], skip_invalid=True).records
    started = time.perf_counter()
    trained = train(
        bbc + reuters, name="bench", version="bench", cv_folds=args.folds, n_jobs=args.jobs
    )
    train_seconds = time.perf_counter() - started

    with tempfile.TemporaryDirectory() as tmp:
        directory = save_artifact(trained, Path(tmp) / "model")
        model_bytes = sum(p.stat().st_size for p in directory.iterdir())
        predictor = Predictor.load(directory)
        articles = reuters
        batches = [articles[i : i + args.batch] for i in range(0, len(articles), args.batch)]
        predictor.predict(batches[0])  # warm-up
        done = 0
        started = time.perf_counter()
        while time.perf_counter() - started < args.seconds:
            for batch in batches:
                predictor.predict(batch)
                done += len(batch)
        elapsed = time.perf_counter() - started

        # Where the time goes, on one pass over the corpus.
        compiled = predictor._compiled
        t0 = time.perf_counter()
        for batch in batches:
            compiled._vectorizer.transform(compiled.model.texts(batch))
        t1 = time.perf_counter()
        for batch in batches:
            compiled.score(batch)
        t2 = time.perf_counter()

        probe = subprocess.run(
            [sys.executable, "-c", MEMORY_PROBE, str(directory)],
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
        )
        memory = json.loads(probe.stdout)

    result = {
        "articles_per_second": done / elapsed,
        "batch": args.batch,
        "articles_timed": done,
        "mean_chars": sum(len(a.title) + len(a.body) for a in articles) / len(articles),
        # Vectorising as a fraction of scoring (vectorise + linear map, no output objects).
        "vectorise_share_of_scoring": (t1 - t0) / (t2 - t1),
        "score_articles_per_second": len(articles) / (t2 - t1),
        "train_seconds": train_seconds,
        "n_features": int(trained.model.weights.shape[0]),
        "n_labels": int(trained.model.weights.shape[1]),
        "artifact_mib": model_bytes / 2**20,
        "openblas_env": {k: v for k, v in os.environ.items() if k.startswith("OPENBLAS")},
        **memory,
    }
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        for key, value in result.items():
            print(f"{key}: {value:.2f}" if isinstance(value, float) else f"{key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
