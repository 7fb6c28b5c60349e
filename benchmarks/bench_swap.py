"""How long a hot swap takes: load + verify + smoke-test the new artifact, then switch.

Swaps a classifier to the same artifact a few times, in a worker thread and with a worker
process (where a new process starts for each swap), and prints each duration.

Usage: ``python benchmarks/bench_swap.py [--model DIR] [--swaps 3]``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

from bench_service import model_dir

from service.core.records import Topics
from service.models.loading import ModelSpec
from service.models.workers import ModelClassifier, ProcessClassifier, ThreadClassifier


async def durations(classifier: ModelClassifier, model: Path, swaps: int) -> list[float]:
    await classifier.start()
    try:
        measured = []
        for _ in range(swaps):
            started = time.perf_counter()
            await classifier.swap(ModelSpec(model))
            measured.append(time.perf_counter() - started)
        return measured
    finally:
        classifier.close()


async def main_async(args: argparse.Namespace) -> int:
    topics = Topics("out", "dlq")
    with tempfile.TemporaryDirectory() as scratch:
        model = model_dir(args.model, Path(scratch))
        kinds: list[tuple[str, ModelClassifier]] = [
            ("thread", ThreadClassifier(model, topics=topics, max_event_bytes=1 << 20)),
            (
                "process",
                ProcessClassifier(
                    model, topics=topics, max_event_bytes=1 << 20, log_level="WARNING"
                ),
            ),
        ]
        for kind, classifier in kinds:
            measured = await durations(classifier, model, args.swaps)
            shown = ", ".join(f"{value:.2f}" for value in measured)
            print(f"swap with a worker {kind}: {shown} s")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="artifact (default: demo)")
    parser.add_argument("--swaps", type=int, default=3)
    return asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
