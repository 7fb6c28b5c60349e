"""One batch of input records -> the records to publish, in input order (synchronous).

``bytes -> decode_article -> Predictor.predict (whole batch) -> encode_classified -> bytes``.
This runs in a worker thread or process (``service.workers``); it never raises for bad
input or a failing model: every record becomes either an output or a dead letter.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from schemas import (
    ArticleEvent,
    Classification,
    DecodeError,
    decode_article,
    encode_classified,
    utc_now_rfc3339,
)
from service.deadletter import DeadLetterReason, dead_letter_headers

logger = logging.getLogger(__name__)


class ArticlePredictor(Protocol):
    """What the service needs of ``model.Predictor``."""

    @property
    def name(self) -> str: ...

    @property
    def version(self) -> str: ...

    def predict(self, articles: Sequence[ArticleEvent]) -> list[Classification]: ...


class InputRecord(Protocol):
    """The fields of an aiokafka ``ConsumerRecord`` the service reads."""

    @property
    def topic(self) -> str: ...

    @property
    def partition(self) -> int: ...

    @property
    def offset(self) -> int: ...

    @property
    def timestamp(self) -> int: ...

    @property
    def key(self) -> bytes | None: ...

    @property
    def value(self) -> bytes | None: ...


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One record to produce, and the input record it answers."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    source_partition: int
    source_offset: int
    source_timestamp_ms: int
    #: None for a classified article, else the dead-letter reason.
    reason: DeadLetterReason | None = None


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the metrics need of one classification (cheap to send between processes)."""

    section: str | None
    section_score: float | None
    tag_count: int

    @classmethod
    def of(cls, classification: Classification) -> Verdict:
        section = classification.section
        return cls(
            section.label if section else None,
            section.score if section else None,
            len(classification.tags),
        )


@dataclass
class BatchResult:
    """What one batch produced, plus what the metrics need to know about it."""

    outgoing: list[Outgoing] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)
    duration_s: float = 0.0


@dataclass(frozen=True, slots=True)
class Topics:
    output: str
    dead_letter: str


def classify_batch(
    records: Sequence[InputRecord],
    predictor: ArticlePredictor,
    *,
    topics: Topics,
    max_event_bytes: int,
) -> BatchResult:
    """Decode, classify and encode ``records``; the result keeps their order."""
    started = time.perf_counter()
    decoded: list[ArticleEvent | DecodeError] = [
        decode_article(record.value, max_bytes=max_event_bytes) for record in records
    ]
    valid = [event for event in decoded if isinstance(event, ArticleEvent)]
    predictions = _predict(predictor, valid, records, decoded)
    classified_at = utc_now_rfc3339()
    result = BatchResult()
    for record, event in zip(records, decoded, strict=True):
        if isinstance(event, DecodeError):
            reason = DeadLetterReason(event.reason.value)
            result.outgoing.append(_dead_letter(record, topics, reason, event.message))
            continue
        classification = predictions.get(id(event))
        if classification is None:
            message = "the model failed on this article alone"
            result.outgoing.append(
                _dead_letter(
                    record, topics, DeadLetterReason.CLASSIFICATION_ERROR, message, event.article_id
                )
            )
            continue
        result.verdicts.append(Verdict.of(classification))
        result.outgoing.append(
            Outgoing(
                topic=topics.output,
                key=record.key,
                value=encode_classified(event, classification, classified_at),
                headers=[],
                source_partition=record.partition,
                source_offset=record.offset,
                source_timestamp_ms=record.timestamp,
            )
        )
    result.duration_s = time.perf_counter() - started
    return result


def _predict(
    predictor: ArticlePredictor,
    valid: list[ArticleEvent],
    records: Sequence[InputRecord],
    decoded: Sequence[ArticleEvent | DecodeError],
) -> dict[int, Classification]:
    """Classifications keyed by ``id(event)``; a record the model fails on alone is absent."""
    if not valid:
        return {}
    try:
        batch = predictor.predict(valid)
    except Exception:
        logger.warning("model failed on a batch; retrying each article alone", exc_info=True)
    else:
        if len(batch) == len(valid):
            return {id(event): result for event, result in zip(valid, batch, strict=True)}
        logger.warning(
            "model returned a wrong number of results; retrying each article alone",
            extra={"articles": len(valid), "results": len(batch)},
        )
    by_id: dict[int, Classification] = {}
    where = {id(event): record for record, event in zip(records, decoded, strict=True)}
    for event in valid:
        try:
            (single,) = predictor.predict([event])
        except Exception as error:
            record = where[id(event)]
            logger.error(  # noqa: TRY400 - the decision is logged, the trace was above
                "model failed on one article",
                extra={
                    "article_id": event.article_id,
                    "partition": record.partition,
                    "offset": record.offset,
                    "error": f"{type(error).__name__}: {error}",
                },
            )
            continue
        by_id[id(event)] = single
    return by_id


def dead_letter_for_crash(record: InputRecord, topics: Topics) -> Outgoing:
    """The dead letter for a record whose classification killed the worker process."""
    return _dead_letter(
        record,
        topics,
        DeadLetterReason.CLASSIFICATION_ERROR,
        "the classification worker died on this article",
    )


def _dead_letter(
    record: InputRecord,
    topics: Topics,
    reason: DeadLetterReason,
    message: str,
    article_id: str | None = None,
) -> Outgoing:
    logger.warning(
        "dead letter",
        extra={
            "article_id": article_id,
            # The key stands in for the article id when the event could not be decoded.
            "key": None if record.key is None else record.key[:256].decode("utf-8", "replace"),
            "topic": record.topic,
            "partition": record.partition,
            "offset": record.offset,
            "reason": reason.value,
            "detail": message[:300],
        },
    )
    headers = dead_letter_headers(
        reason, message, topic=record.topic, partition=record.partition, offset=record.offset
    )
    return Outgoing(
        topic=topics.dead_letter,
        key=record.key,
        value=record.value,
        headers=headers,
        source_partition=record.partition,
        source_offset=record.offset,
        source_timestamp_ms=record.timestamp,
        reason=reason,
    )
