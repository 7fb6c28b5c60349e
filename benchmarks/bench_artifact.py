"""Size and load time of model artifacts.

Run: ``python benchmarks/bench_artifact.py DIR [DIR ...]``. For each artifact directory it
reports the bytes on disk and, in a fresh interpreter per directory (so nothing is cached
in the process), the time ``Predictor.load`` takes (the best and the median of
``--repeat`` loads) and the resident memory the load adds. Works on any version of this
project whose ``Predictor.load(directory)`` loads the artifact (the probe imports ``model``
from this file's checkout), so a copy of it in an old checkout measures old-format
artifacts with the old code.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PROBE = """
import json, sys, time
from pathlib import Path

def rss_kib():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return -1

from model import Predictor
directory, repeat = Path(sys.argv[1]), int(sys.argv[2])
before = rss_kib()
started = time.perf_counter()
predictor = Predictor.load(directory)
first = time.perf_counter() - started
after = rss_kib()
times = [first]
for _ in range(repeat - 1):
    del predictor
    started = time.perf_counter()
    predictor = Predictor.load(directory)
    times.append(time.perf_counter() - started)
print(json.dumps({"times": times, "rss_added_mib": (after - before) / 1024}))
"""


def measure(directory: Path, repeat: int) -> dict[str, object]:
    """Size and load time of one artifact directory."""
    files = {p.name: p.stat().st_size for p in sorted(directory.iterdir()) if p.is_file()}
    probe = subprocess.run(
        [sys.executable, "-c", PROBE, str(directory), str(repeat)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    result = json.loads(probe.stdout)
    times: list[float] = result["times"]
    return {
        "artifact": str(directory),
        "files": files,
        "total_mib": sum(files.values()) / 2**20,
        "load_s_first": times[0],
        "load_s_best": min(times),
        "load_s_median": statistics.median(times),
        "rss_added_by_first_load_mib": result["rss_added_mib"],
    }


def main() -> int:
    """Measure every directory given; one JSON object per line with --json."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("directories", type=Path, nargs="+", metavar="DIR")
    parser.add_argument("--repeat", type=int, default=7, help="loads per artifact")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    for directory in args.directories:
        result = measure(directory, args.repeat)
        if args.json:
            print(json.dumps(result, sort_keys=True))
            continue
        print(f"{directory}:")
        for key, value in result.items():
            shown = f"{value:.3f}" if isinstance(value, float) else value
            print(f"  {key}: {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
