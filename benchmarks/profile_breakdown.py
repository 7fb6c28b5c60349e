"""Where the service's time goes: py-spy raw (collapsed) stacks -> shares per thread.

py-spy ``record --format raw --threads [--subprocesses] [--idle] [--native]`` writes one
line per distinct stack: ``frame;frame;...;frame COUNT``, outermost first, the first
frames naming the process (with ``--subprocesses``) and the thread (with ``--threads``).
Each stack is put in the first category of ``RULES`` that one of its frames matches, and
the samples are summed per (process, thread) and category. Pure functions, no py-spy
needed: ``profile_service.py`` records, this module reads.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

#: ``process 123:"python -m service serve ..."``, then the next frame: with
#: ``--subprocesses`` a child's stack starts with its parent's process frame and its own,
#: and a command may hold ``;`` (``-c "from multiprocessing.spawn import spawn_main; ..."``),
#: so a process frame ends only where the next process or thread frame starts.
_PROCESS = re.compile(r'process (\d+):"(.*?)";(?=process \d+:"|thread \()', re.DOTALL)
#: ``thread (0x7f..)`` or ``thread (123): MainThread``.
_THREAD = re.compile(r"^thread \((\w+)\)(?:: (.*))?$")

#: A Python frame: ``name (path.py:line)``; anything else is native (``--native``).
_PYTHON_FRAME = re.compile(r"\.py:\d+\)$|\(<[^>]+>:\d+\)$")

#: Native frames of a thread waiting on the GIL: CPython 3.11 takes it by waiting on a
#: condition variable with a timeout (``take_gil``) and, handing it over, waits on another
#: (``drop_gil``). Locks and queues wait on semaphores (``sem_clockwait``, ``sem_wait``) and
#: sockets in ``epoll_wait``, so neither is mistaken for it.
GIL_WAIT_FRAMES = ("take_gil", "drop_gil", "pthread_cond_timedwait", "pthread_cond_wait")


@dataclass(frozen=True, slots=True)
class Stack:
    """One sampled stack: its frames, outermost first, split at the innermost Python frame."""

    frames: list[str]

    @property
    def python_leaf(self) -> str:
        """The innermost Python frame ("" if there is none)."""
        for frame in reversed(self.frames):
            if _PYTHON_FRAME.search(frame):
                return frame
        return ""

    @property
    def native_tail(self) -> list[str]:
        """The native frames called from the innermost Python frame (what it is doing)."""
        for index in range(len(self.frames) - 1, -1, -1):
            if _PYTHON_FRAME.search(self.frames[index]):
                return self.frames[index + 1 :]
        return self.frames


@dataclass(frozen=True, slots=True)
class Rule:
    """A category and the frame fragments (function or file) that put a stack in it."""

    category: str
    fragments: tuple[str, ...]
    #: Which frames are compared: "any" frame, the Python "leaf", or the native "tail".
    where: str = "any"

    def matches(self, stack: Stack) -> bool:
        if self.where == "leaf":
            candidates = [stack.python_leaf]
        elif self.where == "tail":
            candidates = stack.native_tail
        else:
            candidates = stack.frames
        return any(fragment in frame for frame in candidates for fragment in self.fragments)


#: In priority order: the first rule a stack matches names its category. Waiting comes
#: first (a thread waiting for the GIL inside the tokeniser is waiting, not tokenising),
#: then the model's stages from the innermost outwards, then the I/O around them.
RULES: tuple[Rule, ...] = (
    Rule("waiting for the GIL (contention)", GIL_WAIT_FRAMES, where="tail"),
    Rule("garbage collection", ("gc_collect_main", "gc_collect_with_callback"), where="tail"),
    Rule("idle: sleeping (timers, watchdogs)", ("clock_nanosleep",), where="tail"),
    Rule("idle: event loop waiting for I/O", ("select (selectors.py",), where="leaf"),
    Rule(
        "idle: waiting for a batch / a result",
        (
            "_worker (concurrent/futures/thread.py",
            "get (queue.py",
            "wait (threading.py",
            # a worker process reading the next batch from its pipe; the resource tracker
            "_recv (multiprocessing/connection.py",
            "main (multiprocessing/resource_tracker.py",
        ),
        where="leaf",
    ),
    Rule("decode + validate (pydantic)", ("(schemas/decode.py",)),
    Rule("tokenise + TF-IDF rows", ("(model/features.py", "(model/text.py")),
    Rule(
        "sparse products + scores",
        ("score_features (model/inference.py", "score_decisions (model/inference.py"),
    ),
    Rule("encode output JSON", ("(schemas/encode.py",)),
    Rule("predictor: labels and result objects", ("(model/predictor.py",)),
    Rule("classify: rest of the batch (checks, verdicts)", ("(service/core/classify.py",)),
    Rule(
        "worker process transfer (pickle, pipes)",
        ("(concurrent/futures/process.py", "(multiprocessing/", "pickle"),
    ),
    Rule(
        "fetch + record objects (aiokafka consumer)",
        ("(aiokafka/consumer/fetcher.py", "getmany (aiokafka/consumer/consumer.py"),
    ),
    Rule(
        "produce (publisher + aiokafka producer)",
        ("(service/kafka/publish.py", "(aiokafka/producer/", "(service/kafka/transactions.py"),
    ),
    Rule(
        "commit + group coordination",
        ("(aiokafka/consumer/group_coordinator.py", "(service/kafka/offsets.py", "_commit ("),
    ),
    Rule(
        "metrics + health (prometheus, HTTP)",
        (
            "(prometheus_client/",
            "(service/observe/metrics.py",
            "(service/observe/drift.py",
            "(service/http/server.py",
        ),
    ),
    Rule(
        "kafka connections (socket read/write, protocol)",
        ("(aiokafka/conn.py", "(aiokafka/client.py", "(aiokafka/protocol/"),
    ),
    Rule("pipeline stages (queues, bookkeeping)", ("(service/kafka/pipeline.py",)),
    Rule("event-loop overhead (asyncio)", ("(asyncio/",)),
)
OTHER = "other"


@dataclass
class ThreadProfile:
    """The samples of one thread of one process, by category."""

    process: str
    thread: str
    samples: Counter[str] = field(default_factory=Counter)
    #: The process's command line, as py-spy names it ("" without ``--subprocesses``).
    command: str = ""

    @property
    def role(self) -> str:
        """What the process is, from its command line."""
        if " serve" in self.command:
            return "service process"
        if "spawn_main" in self.command:
            return "worker process"
        if "resource_tracker" in self.command:
            return "multiprocessing resource tracker"
        return f"process {self.process}"

    @property
    def total(self) -> int:
        return sum(self.samples.values())

    @property
    def busy(self) -> int:
        """The samples not spent idle (waiting for the GIL counts as busy: it wants to run)."""
        return sum(n for category, n in self.samples.items() if not category.startswith("idle"))


def categorise(frames: list[str]) -> str:
    """The category of one stack (process and thread frames already removed)."""
    stack = Stack(frames)
    for rule in RULES:
        if rule.matches(stack):
            return rule.category
    return OTHER


@dataclass(frozen=True, slots=True)
class Sample:
    """One raw line: where it was taken, its frames (outermost first) and its count."""

    process: str
    command: str
    thread: str
    frames: list[str]
    count: int


def parse_line(line: str) -> Sample | None:
    """One raw line parsed; None for a blank line.

    Raises ValueError for a line that is not ``stack COUNT``.
    """
    line = line.rstrip("\n")
    if not line.strip():
        return None
    stack, _, count = line.rpartition(" ")
    if not stack or not count.isdigit():
        raise ValueError(f"not a py-spy raw line (expected 'frames COUNT'): {line[:120]!r}")
    process, command = "-", ""
    while match := _PROCESS.match(stack):  # the innermost process is the one sampled
        process, command = match.group(1), match.group(2)
        stack = stack[match.end() :]
    frames = stack.split(";")
    thread = "-"
    if frames and (match := _THREAD.match(frames[0])):
        thread = match.group(2) or match.group(1)
        frames = frames[1:]
    return Sample(process, command, thread, frames, int(count))


def _joined(lines: Iterable[str]) -> Iterable[str]:
    """Whole records: a process frame's command line may span several physical lines."""
    pending = ""
    for line in lines:
        pending += line
        stack, _, count = pending.rstrip("\n").rpartition(" ")
        if pending.strip() and not (stack and count.isdigit()):
            continue  # a command line with a newline in it: the record goes on
        yield pending
        pending = ""
    if pending.strip():
        yield pending


def aggregate(lines: Iterable[str]) -> list[ThreadProfile]:
    """Samples per (process, thread) and category, busiest (fewest idle samples) first."""
    profiles: dict[tuple[str, str], ThreadProfile] = {}
    for record in _joined(lines):
        sample = parse_line(record)
        if sample is None:
            continue
        key = (sample.process, sample.thread)
        profile = profiles.setdefault(key, ThreadProfile(*key, command=sample.command))
        profile.samples[categorise(sample.frames)] += sample.count
    return sorted(profiles.values(), key=lambda p: (-p.busy, p.process, p.thread))


def merge_idle_threads(profiles: list[ThreadProfile], *, min_busy: float) -> list[ThreadProfile]:
    """The threads busy (not idle) at least ``min_busy`` of their samples, the rest summed
    into one row per process ("other threads")."""
    kept: list[ThreadProfile] = []
    rest: dict[str, ThreadProfile] = {}
    for profile in profiles:
        if profile.total and profile.busy / profile.total >= min_busy:
            kept.append(profile)
            continue
        merged = rest.setdefault(
            profile.process,
            ThreadProfile(profile.process, "other threads", command=profile.command),
        )
        merged.samples.update(profile.samples)
    return kept + list(rest.values())


def render(profiles: list[ThreadProfile]) -> str:
    """A Markdown table per thread: category, samples, share of the thread's samples."""
    out: list[str] = []
    for profile in profiles:
        out.append(
            f"\n{profile.role} ({profile.process}), thread {profile.thread}:"
            f" {profile.total} samples\n"
        )
        out.append("| where | samples | share |")
        out.append("|---|---:|---:|")
        for category, count in profile.samples.most_common():
            out.append(f"| {category} | {count} | {count / profile.total:.1%} |")
    return "\n".join(out) + "\n"
