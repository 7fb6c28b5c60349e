"""The benchmark's measures: rates from output timestamps, silences, memory, quantiles."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from bench_scaleout import longest_silence_ms, steady_rate
from contenders import Contender, Endpoints, LatencyResult, command, spread, tree_rss_bytes


def test_steady_rate_counts_the_middle_half_of_the_outputs() -> None:
    """A slow start and a slow end do not count: 100 outputs a second in the middle."""
    start = [0, 5_000, 6_000]  # start-up and a join: 6 s for 3 outputs
    middle = [6_000 + 10 * n for n in range(1, 200)]  # 100/s
    end = [9_000, 20_000]
    assert steady_rate(start + middle + end) == pytest.approx(100, rel=0.02)


def test_longest_silence_spans_the_window_edges() -> None:
    """The gap from the event to the first output after it counts, and so does the last."""
    stamps = [900, 1_000, 1_100, 3_500, 3_600]
    assert longest_silence_ms(stamps, 1_050, 3.0) == pytest.approx(2_400)
    assert longest_silence_ms(stamps, 3_550, 2.0) == pytest.approx(1_950)
    assert longest_silence_ms([], 0, 1.0) == pytest.approx(1_000)


def test_tree_rss_counts_the_children_too() -> None:
    """A child process adds its resident memory to its parent's; a gone pid counts 0."""
    own = tree_rss_bytes(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                             stdin=subprocess.PIPE)  # fmt: skip
    try:
        assert own > 0
        assert tree_rss_bytes(os.getpid()) > own * 0.5 + tree_rss_bytes(child.pid) * 0.5
        assert tree_rss_bytes(child.pid) > 0
    finally:
        child.communicate(b"")
    assert tree_rss_bytes(child.pid) == 0


def test_latency_quantiles_and_whether_the_contender_kept_up() -> None:
    """p99 of 100 samples is the 100th value; a missing answer means it fell behind."""
    samples = [n / 1000 for n in range(1, 101)]
    kept = LatencyResult(offered=100, received=100, latencies_s=samples, rss_bytes=0)
    assert kept.quantile(0.99) == pytest.approx(0.100)
    assert kept.quantile(0.5) == pytest.approx(0.051)
    assert kept.kept_up
    assert not LatencyResult(101, 100, samples, 0).kept_up
    assert spread([3.0, 1.0, 2.0]) == (1.0, 2.0, 3.0)


def test_each_contender_starts_on_the_given_broker_topics_and_group() -> None:
    """The service and a peer get the same broker, model, topics and group from Endpoints."""
    at = Endpoints("127.0.0.1:1", Path("m"), "in", "out", "g")
    service = command(Contender("s", "service", ("--classify-in", "process")), at)
    peer = command(Contender("p", "getmany"), at)
    for line in (service, peer):
        text = " ".join(line)
        for expected in ("127.0.0.1:1", "--input-topic in", "--output-topic out", "--group-id g"):
            assert expected in text
    assert service[-2:] == ["--classify-in", "process"]
    assert peer[1].endswith("peers.py")
    assert peer[2] == "getmany"
