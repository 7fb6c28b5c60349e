"""Where a batch is classified, off the event loop: a worker thread or a worker process.

Classification is CPU-bound Python (tokenising, scoring, JSON). In a thread it shares the
interpreter lock with the event loop, so every fetch, send and acknowledgement slows it
down. In a worker process (``--classify-in process``) it has a core of its own, at the cost of
moving every batch between processes; the event loop process only moves bytes. Which is
faster depends on the host: see the README's benchmark figures. Either way a batch goes
in as raw records and comes back as the records to publish, in order.

A worker process that dies (out of memory, a crash in native code) is replaced and the
batch is retried; if the same batch kills the new worker too, its records are classified
one at a time and a record that kills a worker alone becomes a ``classification_error``
dead letter, so one poison record cannot stop its partition. When ``max_deaths`` records
in a row each kill a worker alone, the cause is not the input (out of memory at model load,
a broken install): ``WorkerUnstableError`` is raised instead of dead-lettering the stream,
and the pipeline's circuit breaker opens.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool, ProcessPoolExecutor
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, TypeVar

from schemas import DEFAULT_LIMITS, RecordLimits
from service.classify import (
    ArticlePredictor,
    BatchResult,
    InputRecord,
    Topics,
    classify_batch,
    dead_letter_for_crash,
)
from service.errors import WorkerUnstableError
from service.logs import configure_logging

if TYPE_CHECKING:
    from model.trust import ArtifactTrust

logger = logging.getLogger(__name__)
_T = TypeVar("_T")
_PARENT_CHECK_INTERVAL_S = 1.0


class WorkerKind(StrEnum):
    """``--classify-in``: a thread of the service process (default) or a worker process."""

    PROCESS = "process"
    THREAD = "thread"


class ModelIdentity(NamedTuple):
    name: str
    version: str
    #: sha256 of the artifact's model.json (None for a model given in memory).
    sha256: str | None = None


class BatchClassifier(Protocol):
    """Classifies batches off the event loop."""

    async def start(self) -> ModelIdentity:
        """Load the model (in the worker) and say which one it is."""
        ...

    async def classify(self, records: Sequence[InputRecord]) -> BatchResult: ...

    def close(self) -> None: ...


class WireRecord(NamedTuple):
    """The parts of a consumer record a worker process needs (cheap to pickle)."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None


class ThreadClassifier:
    """One worker thread; the predictor is loaded in this process (or given)."""

    def __init__(
        self,
        model_dir: Path,
        *,
        topics: Topics,
        max_event_bytes: int,
        predictor: ArticlePredictor | None = None,
        limits: RecordLimits = DEFAULT_LIMITS,
        trust: ArtifactTrust | None = None,
    ) -> None:
        self._model_dir = model_dir
        self._trust = trust
        self._predictor = predictor
        self._classify = functools.partial(
            _classify_with, topics=topics, max_event_bytes=max_event_bytes, limits=limits
        )
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="classify")

    async def start(self) -> ModelIdentity:
        if self._predictor is None:
            self._predictor = await _run(
                self._executor, _load_predictor, self._model_dir, self._trust
            )
        return _identity(self._predictor)

    async def classify(self, records: Sequence[InputRecord]) -> BatchResult:
        if self._predictor is None:
            raise RuntimeError("ThreadClassifier.start() was not awaited")
        return await _run(self._executor, self._classify, self._predictor, records)

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


class ProcessClassifier:
    """One worker process holding the model; replaced if it dies."""

    def __init__(
        self,
        model_dir: Path,
        *,
        topics: Topics,
        max_event_bytes: int,
        log_level: str,
        max_deaths: int = 3,
        limits: RecordLimits = DEFAULT_LIMITS,
        trust: ArtifactTrust | None = None,
    ) -> None:
        self._max_deaths = max_deaths
        #: Records in a row that each killed a worker alone.
        self.consecutive_deaths = 0
        self._model_dir = model_dir.resolve()
        self._trust = trust
        self._topics = topics
        self._max_event_bytes = max_event_bytes
        self._limits = limits
        self._log_level = log_level
        self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        # spawn, not fork: the service process has threads (the HTTP server, asyncio's).
        return ProcessPoolExecutor(
            max_workers=1,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=(self._log_level,),
        )

    async def start(self) -> ModelIdentity:
        identity = await _run(self._pool, _load_in_worker, self._model_dir, self._trust)
        if identity.sha256 is not None:
            # A replacement worker loads the model again: it must be this very artifact,
            # not whatever the directory holds by then.
            self._trust = _pinned(self._trust, identity.sha256)
        return identity

    async def classify(self, records: Sequence[InputRecord]) -> BatchResult:
        wire = [
            WireRecord(r.topic, r.partition, r.offset, r.timestamp, r.key, r.value) for r in records
        ]
        for attempt in (1, 2):
            try:
                result = await self._in_worker(wire)
            except BrokenProcessPool:
                logger.error(  # noqa: TRY400 - the worker's traceback died with it
                    "classification worker died; starting a new one",
                    extra={"attempt": attempt, "records": len(wire)},
                )
                self._replace_pool()
            else:
                self.consecutive_deaths = 0
                return result
        return await self._one_at_a_time(wire)

    async def _in_worker(self, wire: Sequence[WireRecord]) -> BatchResult:
        # A partial of a module-level function pickles into the worker process.
        job = functools.partial(
            _classify_in_worker,
            self._model_dir,
            wire,
            topics=self._topics,
            max_event_bytes=self._max_event_bytes,
            limits=self._limits,
            trust=self._trust,
        )
        return await _run(self._pool, job)

    async def _one_at_a_time(self, wire: Sequence[WireRecord]) -> BatchResult:
        combined = BatchResult()
        for record in wire:
            try:
                single = await self._in_worker([record])
            except BrokenProcessPool:
                self._replace_pool()
                self.consecutive_deaths += 1
                if self.consecutive_deaths >= self._max_deaths:
                    raise WorkerUnstableError(
                        f"the classification worker died on {self.consecutive_deaths} articles"
                        " in a row, each alone"
                    ) from None
                single = BatchResult(outgoing=[dead_letter_for_crash(record, self._topics)])
            else:
                self.consecutive_deaths = 0
            combined.outgoing.extend(single.outgoing)
            combined.verdicts.extend(single.verdicts)
            combined.duration_s += single.duration_s
        return combined

    def _replace_pool(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._pool = self._new_pool()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def make_classifier(
    kind: WorkerKind,
    model_dir: Path,
    *,
    topics: Topics,
    max_event_bytes: int,
    log_level: str,
    predictor: ArticlePredictor | None = None,
    max_deaths: int = 3,
    limits: RecordLimits = DEFAULT_LIMITS,
    trust: ArtifactTrust | None = None,
) -> BatchClassifier:
    """A given predictor object lives in this process, so it always gets a thread.

    ``trust`` (a pinned digest and/or a signature check) applies to every load of the
    model from ``model_dir``, in this process or in a worker process."""
    if predictor is not None or kind is WorkerKind.THREAD:
        return ThreadClassifier(
            model_dir,
            topics=topics,
            max_event_bytes=max_event_bytes,
            predictor=predictor,
            limits=limits,
            trust=trust,
        )
    return ProcessClassifier(
        model_dir,
        topics=topics,
        max_event_bytes=max_event_bytes,
        log_level=log_level,
        max_deaths=max_deaths,
        limits=limits,
        trust=trust,
    )


async def _run(executor: Executor, function: Callable[..., _T], *args: Any) -> _T:
    return await asyncio.get_running_loop().run_in_executor(executor, function, *args)


def _classify_with(
    predictor: ArticlePredictor,
    records: Sequence[InputRecord],
    *,
    topics: Topics,
    max_event_bytes: int,
    limits: RecordLimits = DEFAULT_LIMITS,
) -> BatchResult:
    return classify_batch(
        records, predictor, topics=topics, max_event_bytes=max_event_bytes, limits=limits
    )


def _load_predictor(model_dir: Path, trust: ArtifactTrust | None) -> ArticlePredictor:
    from model import Predictor  # noqa: PLC0415 - only where the model lives

    predictor: ArticlePredictor = Predictor.load(model_dir, trust)
    return predictor


def _identity(predictor: ArticlePredictor) -> ModelIdentity:
    sha256: str | None = getattr(predictor, "artifact_sha256", None)
    return ModelIdentity(predictor.name, predictor.version, sha256)


def _pinned(trust: ArtifactTrust | None, sha256: str) -> ArtifactTrust:
    from model.trust import ArtifactTrust  # noqa: PLC0415 - only where the model lives

    return ArtifactTrust(sha256=sha256, public_key=trust.public_key if trust else None)


# -- inside the worker process ------------------------------------------------------------

#: The worker process's model, loaded once by its first task (a replacement worker loads
#: it again). This process does nothing else, so a module-level cache is its whole state.
_worker_predictors: dict[Path, ArticlePredictor] = {}


def _init_worker(log_level: str) -> None:
    # The service process owns shutdown: Ctrl-C reaches the whole process group, and a
    # worker that died of it would lose the batch being drained.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    configure_logging(log_level)
    threading.Thread(
        target=_exit_with_parent, args=(os.getppid(),), name="parent-watch", daemon=True
    ).start()


def _exit_with_parent(parent_pid: int) -> None:
    """A service killed with SIGKILL cannot stop its worker: the worker notices instead."""
    while os.getppid() == parent_pid:
        time.sleep(_PARENT_CHECK_INTERVAL_S)
    os._exit(0)


def _worker_predictor(model_dir: Path, trust: ArtifactTrust | None) -> ArticlePredictor:
    predictor = _worker_predictors.get(model_dir)
    if predictor is None:
        predictor = _worker_predictors[model_dir] = _load_predictor(model_dir, trust)
    return predictor


def _load_in_worker(model_dir: Path, trust: ArtifactTrust | None) -> ModelIdentity:
    return _identity(_worker_predictor(model_dir, trust))


def _classify_in_worker(
    model_dir: Path,
    records: Sequence[WireRecord],
    *,
    topics: Topics,
    max_event_bytes: int,
    limits: RecordLimits,
    trust: ArtifactTrust | None,
) -> BatchResult:
    return classify_batch(
        records,
        _worker_predictor(model_dir, trust),
        topics=topics,
        max_event_bytes=max_event_bytes,
        limits=limits,
    )
