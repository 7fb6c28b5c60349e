"""The profile summary: py-spy raw stacks -> per-thread shares by category."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from profile_breakdown import (
    OTHER,
    aggregate,
    categorise,
    merge_idle_threads,
    parse_line,
    render,
)

LOOP = 'process 10:"python -m service serve --model m";thread (10): MainThread'
WORKER = (
    "thread (11): classify_0;_bootstrap (threading.py:1002);run (threading.py:982);"
    "_worker (concurrent/futures/thread.py:81)"
)
RUN_ONCE = "run_forever (asyncio/base_events.py:608);_run_once (asyncio/base_events.py:1936)"

SYNTHETIC = [
    # The event loop: waiting in epoll, fetching, producing, and the loop itself.
    f"{LOOP};{RUN_ONCE};select (selectors.py:468);epoll_wait (libc.so.6) 50\n",
    f"{LOOP};{RUN_ONCE};_run (asyncio/events.py:80);"
    "getmany (aiokafka/consumer/consumer.py:1200);_proc (aiokafka/consumer/fetcher.py:80) 20\n",
    f"{LOOP};{RUN_ONCE};_run (asyncio/events.py:80);_send_stage (service/kafka/pipeline.py:320);"
    "publish (service/kafka/publish.py:200);append (aiokafka/record/default_records.py:1) 15\n",
    f"{LOOP};{RUN_ONCE};_run (asyncio/events.py:80) 10\n",
    # ... and waiting for the GIL while the classification thread holds it.
    f"{LOOP};{RUN_ONCE};select (selectors.py:468);0x7f01 (libc.so.6);"
    "pthread_cond_timedwait (libc.so.6) 5\n",
    # The classification thread: tokenising, waiting for the GIL in it, idle, encoding.
    f'process 10:"python -m service serve --model m";{WORKER};'
    "classify_batch (service/core/classify.py:300);predict_batch (model/predictor.py:120);"
    "transform_counted (model/features.py:150) 30\n",
    f'process 10:"python -m service serve --model m";{WORKER};'
    "classify_batch (service/core/classify.py:300);transform_counted (model/features.py:150);"
    "take_gil (libpython3.11.so.1.0);pthread_cond_timedwait (libc.so.6) 10\n",
    f'process 10:"python -m service serve --model m";{WORKER};'
    "_queue_SimpleQueue_get (_queuemodule.c.h:177);sem_clockwait (libc.so.6) 40\n",
    f'process 10:"python -m service serve --model m";{WORKER};'
    "classify_batch (service/core/classify.py:300);encode_classified (schemas/encode.py:37) 20\n",
    # A thread that only sleeps.
    'process 10:"python -m service serve --model m";thread (12): http;'
    "serve_forever (socketserver.py:233);select (selectors.py:415) 100\n",
]


def test_a_raw_line_gives_its_process_thread_frames_and_count() -> None:
    """The process and thread frames are split off; the count is the last field."""
    sample = parse_line(SYNTHETIC[0])
    assert sample is not None
    assert (sample.process, sample.thread, sample.count) == ("10", "MainThread", 50)
    assert sample.command == "python -m service serve --model m"
    assert sample.frames[-1] == "epoll_wait (libc.so.6)"
    assert parse_line("  \n") is None


def test_a_line_without_a_count_is_refused() -> None:
    """A file that is not py-spy's raw format is an error, not an empty profile."""
    with pytest.raises(ValueError, match="not a py-spy raw line"):
        parse_line("<html><body>flamegraph</body></html>")


def test_a_stack_goes_to_the_first_rule_it_matches() -> None:
    """Waiting for the GIL wins over the stage it waits in; stages beat the loop."""
    gil = ["transform_counted (model/features.py:150)", "pthread_cond_timedwait (libc.so.6)"]
    assert categorise(gil) == "waiting for the GIL (contention)"
    assert categorise(gil[:1]) == "tokenise + TF-IDF rows"
    # The condition wait is a GIL wait only as the innermost frame.
    assert categorise(["pthread_cond_timedwait (libc.so.6)", "foo (bar.py:1)"]) == OTHER
    assert categorise(["_run (asyncio/events.py:80)"]) == "event-loop overhead (asyncio)"
    assert categorise(["main (elsewhere.py:1)"]) == OTHER
    # Idle is where the innermost Python frame waits, not every stack that passes by it.
    worker = "_worker (concurrent/futures/thread.py:81)"
    assert categorise([worker, "sem_clockwait (libc.so.6)"]) == (
        "idle: waiting for a batch / a result"
    )
    assert categorise(
        [worker, "_check (service/core/classify.py:362)", "gc_collect_main (x.so)"]
    ) == ("garbage collection")


def test_samples_are_summed_per_thread_and_category() -> None:
    """Each thread's samples add up by category; the least idle thread comes first."""
    profiles = aggregate(SYNTHETIC)
    by_thread = {p.thread: p for p in profiles}
    loop = by_thread["MainThread"]
    assert loop.total == 100
    assert loop.samples == {
        "idle: event loop waiting for I/O": 50,
        "fetch + record objects (aiokafka consumer)": 20,
        "produce (publisher + aiokafka producer)": 15,
        "event-loop overhead (asyncio)": 10,
        "waiting for the GIL (contention)": 5,
    }
    worker = by_thread["classify_0"]
    assert worker.samples == {
        "tokenise + TF-IDF rows": 30,
        "waiting for the GIL (contention)": 10,
        "idle: waiting for a batch / a result": 40,
        "encode output JSON": 20,
    }
    assert [p.thread for p in profiles] == ["classify_0", "MainThread", "http"]


def test_a_command_line_spanning_lines_stays_one_record() -> None:
    """py-spy writes a process's command as it is, newlines included."""
    lines = ['process 7:"python -c \n', "import x\n", '";thread (7): MainThread;f (a.py:1) 3\n']
    (profile,) = aggregate(lines)
    assert (profile.process, profile.thread, profile.total) == ("7", "MainThread", 3)


def test_a_worker_process_is_told_apart_from_its_parent() -> None:
    """With --subprocesses a child's stack starts with both process frames, and a command
    line may hold ';': the innermost process and its thread are the ones sampled."""
    line = (
        'process 10:"python -m service serve";'
        'process 12:"python -c from multiprocessing.spawn import spawn_main; spawn_main(3)";'
        "thread (12): MainThread;_process_worker (concurrent/futures/process.py:244);"
        "_recv (multiprocessing/connection.py:399);read (libc.so.6) 9\n"
    )
    sample = parse_line(line)
    assert sample is not None
    assert (sample.process, sample.thread) == ("12", "MainThread")
    assert categorise(sample.frames) == "idle: waiting for a batch / a result"
    (profile,) = aggregate([line])
    assert profile.role == "worker process"


def test_idle_threads_are_summed_and_the_table_gives_shares() -> None:
    """A thread that only waits is folded into 'other threads'; shares are per thread."""
    merged = merge_idle_threads(aggregate(SYNTHETIC), min_busy=0.05)
    assert [p.thread for p in merged] == ["classify_0", "MainThread", "other threads"]
    table = render(merged)
    assert "service process (10), thread classify_0: 100 samples" in table
    assert "| tokenise + TF-IDF rows | 30 | 30.0% |" in table
