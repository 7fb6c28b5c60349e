"""One batch of input records -> the records to publish, in input order (synchronous).

``bytes -> decode_article -> Predictor.predict (whole batch) -> encode_classified -> bytes``.
This runs in a worker thread or process (``service.workers``), and the offline ``classify``
command runs the same ``classify_values``. It never raises for a record's content or a
model that fails on one article: every record becomes either an output or a dead letter.
A failure that concerns no single record (out of memory, a model that cannot run at all
outside the per-record steps) propagates to the caller.
"""

from __future__ import annotations

import logging
import math
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from schemas import (
    DEFAULT_LIMITS,
    ArticleEvent,
    Classification,
    DecodeError,
    RecordLimits,
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


@dataclass(frozen=True, slots=True)
class Classified:
    """One article's output record, and what the metrics need of it."""

    value: bytes
    verdict: Verdict


@dataclass(frozen=True, slots=True)
class Refused:
    """Why a record has no output: its dead-letter reason and message (never article text).

    For a ``classification_error``, ``error`` is the exception type and ``trace`` where it
    was raised (code locations only, no values), for the log line.
    """

    reason: DeadLetterReason
    message: str
    article_id: str | None = None
    error: str | None = None
    trace: str | None = None


Outcome = Classified | Refused

#: Failures that say nothing about the record being processed: they propagate.
_NOT_PER_RECORD = (MemoryError,)


def classify_values(
    values: Sequence[bytes | None],
    predictor: ArticlePredictor,
    *,
    max_event_bytes: int,
    limits: RecordLimits = DEFAULT_LIMITS,
) -> list[Outcome]:
    """One outcome per value, in order: decode, classify (as one batch), encode."""
    decoded = [_decode(value, max_event_bytes, limits) for value in values]
    valid = [item for item in decoded if isinstance(item, ArticleEvent)]
    predictions = _predict(predictor, valid)
    classified_at = utc_now_rfc3339()
    return [
        item if isinstance(item, Refused) else _encode(item, predictions[id(item)], classified_at)
        for item in decoded
    ]


def classify_batch(
    records: Sequence[InputRecord],
    predictor: ArticlePredictor,
    *,
    topics: Topics,
    max_event_bytes: int,
    limits: RecordLimits = DEFAULT_LIMITS,
) -> BatchResult:
    """Decode, classify and encode ``records``; the result keeps their order."""
    started = time.perf_counter()
    outcomes = classify_values(
        [record.value for record in records],
        predictor,
        max_event_bytes=max_event_bytes,
        limits=limits,
    )
    result = BatchResult()
    for record, outcome in zip(records, outcomes, strict=True):
        if isinstance(outcome, Refused):
            result.outgoing.append(
                _dead_letter(
                    record,
                    topics,
                    outcome.reason,
                    outcome.message,
                    outcome.article_id,
                    error=outcome.error,
                    trace=outcome.trace,
                )
            )
            continue
        result.verdicts.append(outcome.verdict)
        result.outgoing.append(
            Outgoing(
                topic=topics.output,
                key=record.key,
                value=outcome.value,
                headers=[],
                source_partition=record.partition,
                source_offset=record.offset,
                source_timestamp_ms=record.timestamp,
            )
        )
    result.duration_s = time.perf_counter() - started
    return result


def _decode(
    value: bytes | None, max_event_bytes: int, limits: RecordLimits
) -> ArticleEvent | Refused:
    try:
        decoded = decode_article(value, max_bytes=max_event_bytes, limits=limits)
    except _NOT_PER_RECORD:
        raise
    except Exception as error:  # decode_article returns errors as values; this is a bug
        return _failure("decoding", error)
    if isinstance(decoded, DecodeError):
        return Refused(DeadLetterReason(decoded.reason.value), decoded.message)
    return decoded


def _encode(
    event: ArticleEvent, prediction: Classification | Exception, classified_at: str
) -> Outcome:
    if isinstance(prediction, Exception):
        return _failure("the model", prediction, event.article_id)
    try:
        _check(prediction)
        verdict = Verdict.of(prediction)
    except _NOT_PER_RECORD:
        raise
    except Exception as error:
        return _failure("the model's result", error, event.article_id)
    try:
        return Classified(encode_classified(event, prediction, classified_at), verdict)
    except _NOT_PER_RECORD:
        raise
    except Exception as error:
        return _failure("encoding the output", error, event.article_id)


def _check(classification: Classification) -> None:
    """Refuse what would make an output break its JSON Schema: the predictor builds its
    results without validation (``model_construct``), so a faulty model is caught here."""
    if not isinstance(classification, Classification):
        raise TypeError(f"expected a Classification, got {type(classification).__name__}")
    scores = [tag.score for tag in classification.tags]
    if classification.section is not None:
        scores.append(classification.section.score)
    if not all(math.isfinite(score) and 0.0 <= score <= 1.0 for score in scores):
        raise ValueError("a score is not a number in [0, 1]")


def _failure(stage: str, error: Exception, article_id: str | None = None) -> Refused:
    # The exception's message may quote the input, so only its type and the code
    # locations it passed through are kept.
    frames = traceback.extract_tb(error.__traceback__)
    return Refused(
        DeadLetterReason.CLASSIFICATION_ERROR,
        f"{stage} failed on this article ({type(error).__name__})",
        article_id,
        error=type(error).__name__,
        trace=" <- ".join(
            f"{frame.filename.rsplit('/', 1)[-1]}:{frame.lineno} {frame.name}"
            for frame in reversed(frames)
        ),
    )


def _predict(
    predictor: ArticlePredictor, valid: list[ArticleEvent]
) -> dict[int, Classification | Exception]:
    """Results keyed by ``id(event)``: a classification, or the error of the model on that
    article alone (after the whole batch failed and each article was retried by itself)."""
    if not valid:
        return {}
    try:
        batch = predictor.predict(valid)
    except _NOT_PER_RECORD:
        raise
    except Exception:
        logger.warning("model failed on a batch; retrying each article alone", exc_info=True)
    else:
        if len(batch) == len(valid):
            return {id(event): result for event, result in zip(valid, batch, strict=True)}
        logger.warning(
            "model returned a wrong number of results; retrying each article alone",
            extra={"articles": len(valid), "results": len(batch)},
        )
    by_id: dict[int, Classification | Exception] = {}
    for event in valid:
        try:
            (by_id[id(event)],) = predictor.predict([event])
        except _NOT_PER_RECORD:
            raise
        except Exception as error:
            by_id[id(event)] = error
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
    *,
    error: str | None = None,
    trace: str | None = None,
) -> Outgoing:
    failure = {} if error is None else {"error": error, "trace": trace}
    logger.warning(
        "dead letter",
        extra={
            **failure,
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
