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
import gc
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool, ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, TypeVar

from schemas import DEFAULT_LIMITS, ArticleEvent, Classification, RecordLimits
from service.config.options import (
    WorkerKind,
)
from service.core.classify import classify_batch, dead_letter_for_crash, predict_events
from service.core.errors import WorkerUnstableError
from service.core.headers import Header
from service.core.records import (
    ArticlePredictor,
    BatchResult,
    InputRecord,
    Refused,
    ShadowBatch,
    Topics,
)
from service.models.loading import (
    LoadedModels,
    ModelIdentity,
    ModelSetIdentity,
    ModelSpec,
    Reusable,
    load_models,
    reusable,
)
from service.observe.logs import configure_logging

if TYPE_CHECKING:
    from model.trust import ArtifactTrust

__all__ = [
    "BatchClassifier",
    "ModelClassifier",
    "ModelIdentity",
    "ModelSetIdentity",
    "ModelSpec",
    "ProcessClassifier",
    "ThreadClassifier",
    "WireRecord",
    "WorkerKind",
    "make_classifier",
]

logger = logging.getLogger(__name__)
_T = TypeVar("_T")
_PARENT_CHECK_INTERVAL_S = 1.0


class BatchClassifier(Protocol):
    """Classifies batches off the event loop."""

    async def start(self) -> ModelIdentity:
        """Load the model (in the worker) and say which one it is."""
        ...

    async def classify(
        self, records: Sequence[InputRecord], *, explain: int | None = None
    ) -> BatchResult:
        """Classify a batch; ``explain`` (terms per label) overrides the service's
        ``--explain`` for this batch (the suggest API's per-request ``?explain=K``)."""
        ...

    def close(self) -> None: ...


class ModelClassifier(BatchClassifier, Protocol):
    """A ``BatchClassifier`` whose models can be swapped while it runs.

    A swap loads, verifies and smoke-tests the new models off the batch path (a loader
    thread, or a new worker process), then switches at a batch boundary: a batch whose
    classification has started finishes with the models it started with, every later
    call uses the new ones, and no batch mixes two models. A failed swap raises and
    leaves the serving models untouched.
    """

    @property
    def models(self) -> ModelSetIdentity:
        """The models serving now (after ``start``)."""
        ...

    @property
    def spec(self) -> ModelSpec:
        """What the serving models were loaded from (their trust pinned to them)."""
        ...

    async def swap(self, spec: ModelSpec) -> ModelSetIdentity: ...

    async def classify_articles(
        self, events: Sequence[ArticleEvent]
    ) -> list[Classification | Refused]:
        """Classify already-validated articles with the live model (for callers outside
        the stream, e.g. an HTTP API): one result per event, in order, or a
        ``classification_error`` ``Refused`` for an article the model fails on alone."""
        ...


class WireRecord(NamedTuple):
    """The parts of a consumer record a worker process needs (cheap to pickle)."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[Header] = ()


#: Called on the event loop with each batch's shadow comparison.
ShadowSink = Callable[[ShadowBatch], None]


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
        explain: int = 0,
        spec: ModelSpec | None = None,
        on_shadow: ShadowSink | None = None,
    ) -> None:
        self._spec = spec or ModelSpec(model_dir, trust)
        self._given = predictor
        self._loaded: LoadedModels | None = None
        self._on_shadow = on_shadow
        self._classify = functools.partial(
            _classify_with,
            topics=topics,
            max_event_bytes=max_event_bytes,
            limits=limits,
            explain=explain,
        )
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="classify")

    async def start(self) -> ModelIdentity:
        self._loaded = await _run(self._executor, _load_models, self._spec, self._given)
        self._spec = self._spec.pinned(self._loaded.identity)
        return self._loaded.identity.primary

    @property
    def models(self) -> ModelSetIdentity:
        return self._current().identity

    @property
    def spec(self) -> ModelSpec:
        return self._spec

    async def swap(self, spec: ModelSpec) -> ModelSetIdentity:
        # A thread of its own: the classify thread keeps serving batches meanwhile. A live
        # model the swap leaves as it is (the default model or a language's, when another
        # one changes, or all of them for a new candidate) is kept, not reloaded.
        reuse = reusable(self._spec, self._current().primary)
        loaded = await asyncio.to_thread(_load_models, spec, None, reuse)
        self._loaded = loaded
        self._spec = spec.pinned(loaded.identity)
        return loaded.identity

    async def classify(
        self, records: Sequence[InputRecord], *, explain: int | None = None
    ) -> BatchResult:
        classify = self._classify
        if explain is not None:
            classify = functools.partial(classify, explain=explain)
        result = await _run(self._executor, classify, self._current(), records)
        _deliver_shadow(result, self._on_shadow)
        return result

    async def classify_articles(
        self, events: Sequence[ArticleEvent]
    ) -> list[Classification | Refused]:
        return await _run(self._executor, predict_events, self._current().primary, events)

    def _current(self) -> LoadedModels:
        if self._loaded is None:
            raise RuntimeError("ThreadClassifier.start() was not awaited")
        return self._loaded

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


@dataclass(frozen=True, slots=True)
class _Worker:
    """One worker process pool and the models it serves."""

    pool: ProcessPoolExecutor
    spec: ModelSpec


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
        explain: int = 0,
        spec: ModelSpec | None = None,
        on_shadow: ShadowSink | None = None,
    ) -> None:
        self._explain = explain
        self._max_deaths = max_deaths
        #: Records in a row that each killed a worker alone.
        self.consecutive_deaths = 0
        spec = spec or ModelSpec(model_dir, trust)
        self._topics = topics
        self._max_event_bytes = max_event_bytes
        self._limits = limits
        self._log_level = log_level
        self._on_shadow = on_shadow
        self._worker = _Worker(self._new_pool(), _resolved(spec))
        self._identity: ModelSetIdentity | None = None

    @property
    def _pool(self) -> ProcessPoolExecutor:
        return self._worker.pool

    def _new_pool(self) -> ProcessPoolExecutor:
        # spawn, not fork: the service process has threads (the HTTP server, asyncio's).
        return ProcessPoolExecutor(
            max_workers=1,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=(self._log_level,),
        )

    async def start(self) -> ModelIdentity:
        worker = self._worker
        identity = await _run(worker.pool, _load_in_worker, worker.spec)
        # A replacement worker loads the models again: they must be these very artifacts,
        # not whatever the directories hold by then.
        self._worker = _Worker(worker.pool, worker.spec.pinned(identity))
        self._identity = identity
        return identity.primary

    @property
    def models(self) -> ModelSetIdentity:
        if self._identity is None:
            raise RuntimeError("ProcessClassifier.start() was not awaited")
        return self._identity

    @property
    def spec(self) -> ModelSpec:
        return self._worker.spec

    async def swap(self, spec: ModelSpec) -> ModelSetIdentity:
        # A new worker process loads and smoke-tests the new models while the current one
        # keeps classifying; then new batches go to the new worker, and the old one exits
        # once the batch it holds is done.
        spec = _resolved(spec)
        pool = self._new_pool()
        try:
            identity = await _run(pool, _load_in_worker, spec)
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        old, self._worker = self._worker, _Worker(pool, spec.pinned(identity))
        self._identity = identity
        old.pool.shutdown(wait=False, cancel_futures=False)
        return identity

    async def classify(
        self, records: Sequence[InputRecord], *, explain: int | None = None
    ) -> BatchResult:
        terms = self._explain if explain is None else explain
        wire = [
            WireRecord(r.topic, r.partition, r.offset, r.timestamp, r.key, r.value, r.headers)
            for r in records
        ]
        for attempt in (1, 2):
            try:
                result = await self._in_worker(wire, terms)
            except BrokenProcessPool:
                logger.error(  # noqa: TRY400 - the worker's traceback died with it
                    "classification worker died; starting a new one",
                    extra={"attempt": attempt, "records": len(wire)},
                )
                self._replace_pool()
            else:
                self.consecutive_deaths = 0
                _deliver_shadow(result, self._on_shadow)
                return result
        result = await self._one_at_a_time(wire, terms)
        _deliver_shadow(result, self._on_shadow)
        return result

    async def classify_articles(
        self, events: Sequence[ArticleEvent]
    ) -> list[Classification | Refused]:
        worker = self._worker
        try:
            return await _run(worker.pool, _predict_in_worker, worker.spec, list(events))
        except BrokenProcessPool:
            self._replace_pool()
            raise

    async def _in_worker(self, wire: Sequence[WireRecord], explain: int) -> BatchResult:
        # A partial of a module-level function pickles into the worker process. The worker
        # is read once: a swap meanwhile lets this batch finish where it started.
        worker = self._worker
        job = functools.partial(
            _classify_in_worker,
            worker.spec,
            wire,
            topics=self._topics,
            max_event_bytes=self._max_event_bytes,
            limits=self._limits,
            explain=explain,
        )
        return await _run(worker.pool, job)

    async def _one_at_a_time(self, wire: Sequence[WireRecord], explain: int) -> BatchResult:
        combined = BatchResult()
        shadows: list[ShadowBatch] = []
        for record in wire:
            try:
                single = await self._in_worker([record], explain)
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
            combined.baselines = combined.baselines or single.baselines
            if single.shadow is not None:
                shadows.append(single.shadow)
        combined.shadow = merge_shadow(shadows)
        return combined

    def _replace_pool(self) -> None:
        # If a swap replaced the worker that died just before this, its successor is
        # replaced too: a wasted process start, never a wrong model (the spec is pinned).
        worker = self._worker
        worker.pool.shutdown(wait=False, cancel_futures=True)
        self._worker = _Worker(self._new_pool(), worker.spec)

    def close(self) -> None:
        self._worker.pool.shutdown(wait=True, cancel_futures=True)


def make_classifier(
    kind: WorkerKind,
    *,
    topics: Topics,
    max_event_bytes: int,
    log_level: str,
    spec: ModelSpec,
    predictor: ArticlePredictor | None = None,
    max_deaths: int = 3,
    limits: RecordLimits = DEFAULT_LIMITS,
    explain: int = 0,
    on_shadow: ShadowSink | None = None,
) -> ModelClassifier:
    """The classifier of ``kind`` for the models ``spec`` names, each load checked against
    the trust ``spec`` carries (in this process or in a worker process). A given predictor
    object lives in this process, so it always gets a thread."""
    if predictor is not None or kind is WorkerKind.THREAD:
        return ThreadClassifier(
            spec.primary,
            topics=topics,
            max_event_bytes=max_event_bytes,
            predictor=predictor,
            limits=limits,
            explain=explain,
            spec=spec,
            on_shadow=on_shadow,
        )
    return ProcessClassifier(
        spec.primary,
        topics=topics,
        max_event_bytes=max_event_bytes,
        log_level=log_level,
        max_deaths=max_deaths,
        limits=limits,
        explain=explain,
        spec=spec,
        on_shadow=on_shadow,
    )


async def _run(executor: Executor, function: Callable[..., _T], *args: Any) -> _T:
    return await asyncio.get_running_loop().run_in_executor(executor, function, *args)


def _classify_with(
    loaded: LoadedModels,
    records: Sequence[InputRecord],
    *,
    topics: Topics,
    max_event_bytes: int,
    limits: RecordLimits = DEFAULT_LIMITS,
    explain: int = 0,
) -> BatchResult:
    return classify_batch(
        records,
        loaded.primary,
        topics=topics,
        max_event_bytes=max_event_bytes,
        limits=limits,
        explain=explain,
        shadow=loaded.shadow,
    )


def _load_models(
    spec: ModelSpec, given: ArticlePredictor | None, reuse: Reusable | None = None
) -> LoadedModels:
    loaded = load_models(spec, given, reuse)
    _settle_heap()
    return loaded


def _settle_heap() -> None:
    """Take what is alive once the models are loaded (their arrays and label tuples, the
    imported modules) out of the garbage collector's scans: otherwise every full collection
    walks it again while the batches' short-lived objects trigger collections all the time
    (``gc_collect_main`` in the classification thread's profile; README, "Where the time
    goes"). Garbage from loading is collected first, so nothing dead is kept; a swapped-out
    model is still freed by reference counting."""
    gc.collect()
    gc.freeze()


def _resolved(spec: ModelSpec) -> ModelSpec:
    """Paths resolved once: a worker process must load what the symlink meant now."""
    return replace(
        spec,
        primary=spec.primary.resolve(),
        shadow=spec.shadow.resolve() if spec.shadow is not None else None,
        languages=tuple(
            replace(model, directory=model.directory.resolve()) for model in spec.languages
        ),
    )


def _deliver_shadow(result: BatchResult, sink: ShadowSink | None) -> None:
    if result.shadow is None:
        return
    if sink is not None:
        try:
            sink(result.shadow)
        except Exception:  # metrics or the shadow topic must never stop a batch
            logger.exception("shadow observer failed")
    # The pipeline publishes only ``outgoing``: the comparison stays out of its way.
    result.shadow = None


def merge_shadow(batches: Sequence[ShadowBatch]) -> ShadowBatch | None:
    """One comparison from the comparisons of records classified one at a time."""
    if not batches:
        return None
    flips: dict[tuple[str, str, str], int] = {}
    for batch in batches:
        for key, count in batch.flips.items():
            flips[key] = flips.get(key, 0) + count
    versions = [b.model_version for b in batches if b.model_version]
    return ShadowBatch(
        model_version=versions[0] if versions else "",
        shadow_version=batches[0].shadow_version,
        articles=sum(b.articles for b in batches),
        section_agreements=sum(b.section_agreements for b in batches),
        jaccards=tuple(value for b in batches for value in b.jaccards),
        flips=flips,
        failures=sum(b.failures for b in batches),
        duration_s=sum(b.duration_s for b in batches),
        outgoing=tuple(item for b in batches for item in b.outgoing),
    )


# -- inside the worker process ------------------------------------------------------------

#: The worker process's models, loaded by its first task (a replacement worker loads them
#: again, pinned to the same artifacts). A worker process serves one ``ModelSpec`` for its
#: whole life (a swap starts a new one), so this one slot is its whole state.
_worker_models: list[LoadedModels] = []


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


def _worker_loaded(spec: ModelSpec) -> LoadedModels:
    if not _worker_models:
        _worker_models.append(load_models(spec))
        _settle_heap()
    return _worker_models[0]


def _load_in_worker(spec: ModelSpec) -> ModelSetIdentity:
    return _worker_loaded(spec).identity


def _predict_in_worker(
    spec: ModelSpec, events: list[ArticleEvent]
) -> list[Classification | Refused]:
    return predict_events(_worker_loaded(spec).primary, events)


def _classify_in_worker(
    spec: ModelSpec,
    records: Sequence[WireRecord],
    *,
    topics: Topics,
    max_event_bytes: int,
    limits: RecordLimits,
    explain: int = 0,
) -> BatchResult:
    return _classify_with(
        _worker_loaded(spec),
        records,
        topics=topics,
        max_event_bytes=max_event_bytes,
        limits=limits,
        explain=explain,
    )
