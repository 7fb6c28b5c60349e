"""Shadow scoring (``--shadow-model``): a candidate model scores the same articles, unseen.

In the worker, ``CandidateScorer`` scores every valid article of a batch with the candidate
right after the live model, and compares the two: section agreement, tag agreement
(Jaccard) and per-label flips (the candidate adds or removes a label). Only counts travel
back to the event loop, plus, with ``--shadow-topic``, the candidate's output records (the
same contract as the output topic). A candidate that fails never touches the live
outputs: its failures are counted and logged.

On the event loop, ``service.observe.shadow.ShadowObserver`` turns the comparisons into
metrics and ``service.kafka.shadow.ShadowPublisher`` sends the candidate's outputs to the
shadow topic, best effort.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Mapping, Sequence

from schemas import ArticleEvent, Classification, utc_now_rfc3339
from service.core.classify import encode_result, predict_events
from service.core.records import (
    ArticleNotes,
    ArticlePredictor,
    Classified,
    InputRecord,
    Outgoing,
    Refused,
    ShadowBatch,
)

logger = logging.getLogger(__name__)

ADDED, REMOVED = "added", "removed"
SECTION, TAG = "section", "tag"


class CandidateScorer:
    """Scores a batch's valid articles with the candidate and compares (in the worker).

    With a ``language`` (``--shadow-model de=DIR``) the candidate is a replacement for that
    language's model: it scores only the articles that model answered (by the live
    ``notes``), and is compared with it alone.
    """

    def __init__(
        self, candidate: ArticlePredictor, *, topic: str | None = None, language: str | None = None
    ) -> None:
        self.candidate = candidate
        self.language = language
        self._topic = topic

    def __call__(
        self,
        valid: Sequence[tuple[InputRecord, ArticleEvent]],
        predictions: dict[int, Classification | Exception],
        notes: Mapping[int, ArticleNotes] | None = None,
    ) -> ShadowBatch:
        started = time.perf_counter()
        if self.language is not None:
            answered = notes or {}
            valid = [
                (record, event)
                for record, event in valid
                if (note := answered.get(id(event))) is not None and note.language == self.language
            ]
            predictions = {id(event): predictions[id(event)] for _, event in valid}
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
                outgoing.extend(self._output(self._topic, record, event, candidate, classified_at))
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
        topic: str,
        record: InputRecord,
        event: ArticleEvent,
        candidate: Classification,
        classified_at: str,
    ) -> list[Outgoing]:
        outcome = encode_result(event, candidate, classified_at)
        if not isinstance(outcome, Classified):
            return []
        return [
            Outgoing(
                topic=topic,
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
