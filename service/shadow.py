"""Shadow scoring (``--shadow-model``): a candidate model scores the same articles, unseen.

In the worker, ``CandidateScorer`` scores every valid article of a batch with the candidate
right after the live model, and compares the two: section agreement, tag agreement
(Jaccard) and per-label flips (the candidate adds or removes a label). Only counts travel
back to the event loop, plus, with ``--shadow-topic``, the candidate's output records (the
same contract as the output topic). A candidate that fails never touches the live
outputs: its failures are counted and logged.

On the event loop, ``ShadowObserver`` turns the comparisons into metrics labelled by both
versions, dropping the series of a pair of versions once either model is swapped (label
values come from the two models' label sets, so the series stay bounded), and
``ShadowPublisher`` sends the candidate's outputs to the shadow topic, best effort: off the
delivery path, never delaying a batch, never part of its commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from schemas import ArticleEvent, Classification, utc_now_rfc3339
from service.classify import (
    ArticlePredictor,
    Classified,
    InputRecord,
    Outgoing,
    Refused,
    encode_result,
    predict_events,
)

if TYPE_CHECKING:
    from service.metrics import ServiceMetrics

logger = logging.getLogger(__name__)

ADDED, REMOVED = "added", "removed"
SECTION, TAG = "section", "tag"
#: Batches of shadow outputs waiting for the shadow producer before new ones are dropped.
_PUBLISH_QUEUE_BATCHES = 8
_RETRY_S = 5.0


@dataclass(frozen=True, slots=True)
class ShadowBatch:
    """How the candidate compared with the live model on one batch (cheap to pickle)."""

    model_version: str
    shadow_version: str
    #: Articles both models classified.
    articles: int
    section_agreements: int
    #: Tag agreement of each compared article: |live & candidate| / |live | candidate|
    #: (1.0 when both assign no tag).
    jaccards: tuple[float, ...]
    #: (head, label, ADDED or REMOVED) -> articles where the candidate did that.
    flips: dict[tuple[str, str, str], int]
    #: Articles the candidate failed on (the live output is unaffected).
    failures: int
    duration_s: float
    #: The candidate's output records for ``--shadow-topic`` (empty without it).
    outgoing: tuple[Outgoing, ...] = ()


class CandidateScorer:
    """Scores a batch's valid articles with the candidate and compares (in the worker)."""

    def __init__(self, candidate: ArticlePredictor, *, topic: str | None = None) -> None:
        self.candidate = candidate
        self._topic = topic

    def __call__(
        self,
        valid: Sequence[tuple[InputRecord, ArticleEvent]],
        predictions: dict[int, Classification | Exception],
    ) -> ShadowBatch:
        started = time.perf_counter()
        results: Sequence[Classification | Refused | None]
        try:
            results = predict_events(self.candidate, [event for _, event in valid])
        except MemoryError:
            raise
        except Exception as error:  # the candidate must never break the live path
            logger.warning("shadow model failed on a batch", extra={"error": type(error).__name__})
            results = [None] * len(valid)
        compared = 0
        agreements = 0
        failures = 0
        jaccards: list[float] = []
        flips: Counter[tuple[str, str, str]] = Counter()
        outgoing: list[Outgoing] = []
        classified_at = utc_now_rfc3339()
        for (record, event), candidate in zip(valid, results, strict=True):
            if not isinstance(candidate, Classification):
                failures += 1
                continue
            if self._topic is not None:
                outgoing.extend(self._output(record, event, candidate, classified_at))
            live = predictions.get(id(event))
            if not isinstance(live, Classification):
                continue
            compared += 1
            agreements += _compare(live, candidate, jaccards, flips)
        return ShadowBatch(
            model_version=_version(predictions),
            shadow_version=self.candidate.version,
            articles=compared,
            section_agreements=agreements,
            jaccards=tuple(jaccards),
            flips=dict(flips),
            failures=failures,
            duration_s=time.perf_counter() - started,
            outgoing=tuple(outgoing),
        )

    def _output(
        self,
        record: InputRecord,
        event: ArticleEvent,
        candidate: Classification,
        classified_at: str,
    ) -> list[Outgoing]:
        assert self._topic is not None
        outcome = encode_result(event, candidate, classified_at)
        if not isinstance(outcome, Classified):
            return []
        return [
            Outgoing(
                topic=self._topic,
                key=record.key,
                value=outcome.value,
                headers=[],
                source_partition=record.partition,
                source_offset=record.offset,
                source_timestamp_ms=record.timestamp,
            )
        ]


def _compare(
    live: Classification,
    candidate: Classification,
    jaccards: list[float],
    flips: Counter[tuple[str, str, str]],
) -> bool:
    """Record the tag agreement and flips of one article; True when the sections agree."""
    live_section = live.section.label if live.section else None
    candidate_section = candidate.section.label if candidate.section else None
    if live_section != candidate_section:
        if candidate_section is not None:
            flips[(SECTION, candidate_section, ADDED)] += 1
        if live_section is not None:
            flips[(SECTION, live_section, REMOVED)] += 1
    live_tags = {tag.label for tag in live.tags}
    candidate_tags = {tag.label for tag in candidate.tags}
    union = live_tags | candidate_tags
    jaccards.append(len(live_tags & candidate_tags) / len(union) if union else 1.0)
    for label in candidate_tags - live_tags:
        flips[(TAG, label, ADDED)] += 1
    for label in live_tags - candidate_tags:
        flips[(TAG, label, REMOVED)] += 1
    return live_section == candidate_section


def _version(predictions: dict[int, Classification | Exception]) -> str:
    for result in predictions.values():
        if isinstance(result, Classification):
            return result.model.version
    return ""


class ShadowObserver:
    """Turns ``ShadowBatch`` comparisons into metrics (on the event loop)."""

    def __init__(self, metrics: ServiceMetrics) -> None:
        self._metrics = metrics
        self._pair: tuple[str, str] | None = None
        self._flip_series: set[tuple[str, ...]] = set()

    def observe(self, batch: ShadowBatch) -> None:
        """Count one batch's comparison under its pair of versions."""
        metrics = self._metrics
        metrics.shadow_duration.observe(batch.duration_s)
        if not batch.model_version:  # nothing the live model classified in this batch
            if batch.failures:
                metrics.shadow_failures.labels("", batch.shadow_version).inc(batch.failures)
            return
        pair = (batch.model_version, batch.shadow_version)
        if pair != self._pair:
            self.forget()
            self._pair = pair
        metrics.shadow_articles.labels(*pair).inc(batch.articles)
        metrics.shadow_section_agreements.labels(*pair).inc(batch.section_agreements)
        if batch.failures:
            metrics.shadow_failures.labels(*pair).inc(batch.failures)
        jaccard = metrics.shadow_tag_jaccard.labels(*pair)
        for value in batch.jaccards:
            jaccard.observe(value)
        for (head, label, change), count in batch.flips.items():
            labels = (*pair, head, label, change)
            metrics.shadow_label_flips.labels(*labels).inc(count)
            self._flip_series.add(labels)

    def forget(self) -> None:
        """Drop the series of the current pair of versions (one model was swapped)."""
        if self._pair is None:
            return
        metrics = self._metrics
        for family in (
            metrics.shadow_articles,
            metrics.shadow_section_agreements,
            metrics.shadow_failures,
            metrics.shadow_tag_jaccard,
        ):
            with contextlib.suppress(KeyError):
                family.remove(*self._pair)
        for labels in self._flip_series:
            with contextlib.suppress(KeyError):
                metrics.shadow_label_flips.remove(*labels)
        self._flip_series.clear()
        self._pair = None


class ShadowPublisher:
    """Sends the candidate's outputs to ``--shadow-topic``, best effort, off the hot path.

    Its own producer, started lazily and retried: a shadow topic that is missing or a
    broker that is down costs shadow records (counted in
    ``shadow_publish_failures_total`` and logged), never a live one.
    """

    def __init__(
        self,
        make_producer: Callable[[], Any],
        *,
        on_failure: Callable[[int], None],
        queue_batches: int = _PUBLISH_QUEUE_BATCHES,
    ) -> None:
        self._make_producer = make_producer
        self._on_failure = on_failure
        self._queue: asyncio.Queue[Sequence[Outgoing]] = asyncio.Queue(queue_batches)
        self._task: asyncio.Task[None] | None = None
        self._producer: Any = None

    def submit(self, outgoing: Sequence[Outgoing]) -> None:
        """Queue one batch's shadow records; dropped (and counted) when the queue is full."""
        if not outgoing:
            return
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="shadow-publisher")
        try:
            self._queue.put_nowait(outgoing)
        except asyncio.QueueFull:
            self._on_failure(len(outgoing))
            logger.warning(
                "shadow topic falling behind; a batch of shadow records is dropped",
                extra={"records": len(outgoing)},
            )

    async def close(self) -> None:
        """Stop sending; records still queued are dropped (shadow output is best effort)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._producer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._producer.stop(), 10)
            self._producer = None

    async def _run(self) -> None:
        while True:
            batch = await self._queue.get()
            try:
                if self._producer is None:
                    producer = self._make_producer()
                    try:
                        await producer.start()
                    except BaseException:
                        with contextlib.suppress(Exception):
                            await producer.stop()
                        raise
                    self._producer = producer
                futures = [
                    await self._producer.send(
                        item.topic, key=item.key, value=item.value, headers=item.headers
                    )
                    for item in batch
                ]
                results = await asyncio.gather(*futures, return_exceptions=True)
                failed = [result for result in results if isinstance(result, BaseException)]
                if failed:
                    self._failed(len(failed), failed[0])
            except asyncio.CancelledError:
                raise
            except Exception as error:
                self._failed(len(batch), error)
                await asyncio.sleep(_RETRY_S)

    def _failed(self, count: int, error: BaseException) -> None:
        self._on_failure(count)
        logger.warning(
            "shadow records not published", extra={"records": count, "error": repr(error)}
        )
