"""In-process inference speed and memory of the model (both heads together).

Run: ``python benchmarks/bench_model.py --data ../shared/data``. Trains one model on the
bbc-news sections plus the reuters21578 tags (``--sections-only``: bbc-news alone;
``--param NAME=JSON``: a hyper-parameter, e.g. ``--param features='"word+char"'``; or
takes ``--model DIR``), saves it, reports each feature block's compiled transform against
the scikit-learn vectoriser it reproduces, then
classifies Reuters stories (about 800 characters each) in batches and reports articles per
per CPU second of ``Predictor.predict`` alone and of bytes -> decode -> predict -> encode ->
bytes (the service's per-record work without Kafka), each in a fresh interpreter; finally
measures the loaded model's memory in a fresh subprocess.

``--baseline REF`` (a git revision, e.g. ``main``) measures that revision's ``model`` and
``schemas`` code on the same artifact in the same run: each of ``--repeat`` rounds times the
baseline and this tree one after the other, each in a fresh interpreter, and the ratios
are taken within a round (the neighbours on a shared host move the rates between rounds).
Both must give the same output bytes for every story (``classified_at`` aside), or the
benchmark says so and fails.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Sequence
from io import BytesIO
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from model import (  # noqa: E402
    HasTitleAndBody,
    TrainedModel,
    load_labelled,
    save_artifact,
    train,
)
from model.inference import CompiledModel  # noqa: E402

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

# The timed work, run with the current directory at the root of the code under test, so
# that ``model`` and ``schemas`` are that tree's. Only APIs that every version has.
RATE_PROBE = """
import hashlib, json, sys, time
from pathlib import Path
from model import Predictor
from schemas import ArticleEvent, decode_article, encode_classified

directory, stories = Path(sys.argv[1]), Path(sys.argv[2])
batch, seconds = int(sys.argv[3]), float(sys.argv[4])
raw = [line.encode() for line in stories.read_text("utf-8").splitlines()]
events = [ArticleEvent.model_validate_json(value) for value in raw]
predictor = Predictor.load(directory)
STAMP = "2026-01-01T00:00:00Z"

def full(values):
    decoded = [decode_article(value) for value in values]
    return [encode_classified(e, c, STAMP) for e, c in zip(decoded, predictor.predict(decoded))]

digest = hashlib.sha256()
for start in range(0, len(raw), batch):
    for output in full(raw[start : start + batch]):
        digest.update(output)

def rate(work, items):
    # Per CPU second of this process: on a shared host the wall clock also measures the
    # neighbours. The wall-clock rate is reported beside it.
    done, cpu, wall = 0, time.process_time(), time.perf_counter()
    while time.process_time() - cpu < seconds:
        for start in range(0, len(items), batch):
            work(items[start : start + batch])
            done += len(items[start : start + batch])
    return done / (time.process_time() - cpu), done / (time.perf_counter() - wall)

predict, predict_wall = rate(predictor.predict, events)
pipeline, pipeline_wall = rate(full, raw)
print(json.dumps({"predict": predict, "decode_predict_encode": pipeline,
                  "predict_wall": predict_wall, "decode_predict_encode_wall": pipeline_wall,
                  "outputs_sha256": digest.hexdigest()}))
"""


def export_tree(ref: str, into: Path) -> Path:
    """The ``model`` and ``schemas`` packages of git revision ``ref``, written to ``into``."""
    archive = subprocess.run(
        ["git", "archive", "--format=tar", ref, "model", "schemas"],
        capture_output=True,
        check=True,
        cwd=ROOT,
    ).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def measure(
    tree: Path, directory: Path, stories: Path, batch: int, seconds: float
) -> dict[str, float]:
    """The rates of the code in ``tree`` on the artifact in ``directory``."""
    probe = subprocess.run(
        [sys.executable, "-c", RATE_PROBE, str(directory), str(stories), str(batch), str(seconds)],
        capture_output=True,
        text=True,
        check=True,
        cwd=tree,
        env={**os.environ, "PYTHONPATH": ""},
    )
    result: dict[str, float] = json.loads(probe.stdout)
    return result


def against_scikit_learn(
    trained: TrainedModel, articles: Sequence[HasTitleAndBody], batch: int
) -> dict[str, float]:
    """Articles per CPU second of each feature block's compiled transform and of the
    fitted scikit-learn vectoriser it reproduces, on the same texts in batches of
    ``batch``, the two alternated twice (the best of each kept)."""
    texts = trained.model.texts(articles)
    batches = [texts[i : i + batch] for i in range(0, len(texts), batch)]
    found: dict[str, float] = {}
    compiled = CompiledModel(trained.model).vectorizer
    fitted = trained.estimator.vectorizer_
    blocks = {"word": (fitted.word, compiled.words), "char": (fitted.char, compiled.chars)}
    for name, (reference, ours) in blocks.items():
        if reference is None or ours is None:
            continue
        best: dict[str, float] = {}
        for _ in range(2):
            for label, transform in (
                ("scikit_learn", reference.transform),
                ("compiled", ours.transform),
            ):
                cpu = time.process_time()
                for texts_batch in batches:
                    transform(texts_batch)
                rate = len(texts) / (time.process_time() - cpu)
                best[label] = max(best.get(label, 0.0), rate)
        found[f"{name}_features_compiled_per_cpu_s"] = best["compiled"]
        found[f"{name}_features_scikit_learn_per_cpu_s"] = best["scikit_learn"]
        found[f"{name}_features_speedup_vs_scikit_learn"] = best["compiled"] / best["scikit_learn"]
    return found


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--model", type=Path, help="an artifact to measure instead of training")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=10.0, help="timed budget per rate")
    parser.add_argument("--folds", type=int, default=3, help="folds for training the model")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--param", action="append", default=[], metavar="NAME=JSON")
    parser.add_argument(
        "--sections-only",
        action="store_true",
        help="train on bbc-news alone (a section model; quicker with character n-grams)",
    )
    parser.add_argument("--baseline", metavar="REF", help="git revision to compare with")
    parser.add_argument("--repeat", type=int, default=3, help="rounds (with --baseline)")
    parser.add_argument("--json", action="store_true")
    return parser


def _rates_against(
    trees: dict[str, Path], baseline: str | None, rounds: list[dict[str, dict[str, Any]]]
) -> dict[str, object]:
    """The median ratio and range of each rate against the baseline, and whether both trees
    wrote the same bytes."""
    if not baseline:
        return {}
    found: dict[str, object] = {}
    for key in ("predict", "decode_predict_encode"):
        ratios = [r["this tree"][key] / r[baseline][key] for r in rounds]
        found[f"{key}_ratio_median"] = statistics.median(ratios)
        found[f"{key}_ratio_range"] = [min(ratios), max(ratios)]
    digests = {r[name]["outputs_sha256"] for r in rounds for name in trees}
    found["identical_outputs"] = len(digests) == 1
    return found


def _report(result: dict[str, object], as_json: bool) -> None:
    if as_json:
        print(json.dumps(result, sort_keys=True))
        return
    for key, value in result.items():
        if key != "rounds":
            print(f"{key}: {value:.3f}" if isinstance(value, float) else f"{key}: {value}")
            continue
        rounds: list[dict[str, dict[str, Any]]] = value  # type: ignore[assignment]
        for index, found in enumerate(rounds):
            for name, rates in found.items():
                print(
                    f"round {index + 1} {name}: predict {rates['predict']:,.0f}/s, "
                    f"decode+predict+encode {rates['decode_predict_encode']:,.0f}/s "
                    f"per CPU second (wall clock: {rates['predict_wall']:,.0f}/s, "
                    f"{rates['decode_predict_encode_wall']:,.0f}/s)"
                )


def main() -> int:
    """Train (or load), save, time and measure; prints a short report (or JSON)."""
    args = _parser().parse_args()
    reuters = load_labelled([args.data / "reuters21578" / "train.jsonl"], skip_invalid=True).records
    result: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        if args.model is None:
            bbc = load_labelled([args.data / "bbc-news" / "train.jsonl"], skip_invalid=True)
            params = {k: json.loads(v) for k, _, v in (p.partition("=") for p in args.param)}
            started = time.perf_counter()
            trained = train(
                bbc.records + ([] if args.sections_only else reuters),
                name="bench",
                version="bench",
                cv_folds=args.folds,
                n_jobs=args.jobs,
                params=params,
            )
            result["train_seconds"] = time.perf_counter() - started
            directory = save_artifact(trained, scratch / "model")
            result.update(against_scikit_learn(trained, reuters, args.batch))
        else:
            directory = args.model
        result["artifact_mib"] = sum(p.stat().st_size for p in directory.iterdir()) / 2**20
        stories = scratch / "stories.jsonl"
        stories.write_text(
            "".join(
                json.dumps({"article_id": r.article_id, "title": r.title, "body": r.body}) + "\n"
                for r in reuters
            ),
            "utf-8",
        )
        result["articles"] = len(reuters)
        result["mean_chars"] = sum(len(r.title) + len(r.body) for r in reuters) / len(reuters)
        result["batch"] = args.batch
        trees = {"this tree": ROOT}
        if args.baseline:
            trees[args.baseline] = export_tree(args.baseline, scratch / "baseline")
        rounds = []
        for _ in range(args.repeat if args.baseline else 1):
            rounds.append(
                {
                    name: measure(tree, directory, stories, args.batch, args.seconds)
                    for name, tree in reversed(trees.items())
                }
            )
        result["rounds"] = rounds
        result.update(_rates_against(trees, args.baseline, rounds))
        probe = subprocess.run(
            [sys.executable, "-c", MEMORY_PROBE, str(directory)],
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
        )
        result.update(json.loads(probe.stdout))
    result["openblas_env"] = {k: v for k, v in os.environ.items() if k.startswith("OPENBLAS")}
    _report(result, args.json)
    return 0 if result.get("identical_outputs", True) else 1


if __name__ == "__main__":
    sys.exit(main())
