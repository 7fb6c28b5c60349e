"""One batch of input records -> the records to publish, in input order (synchronous).

``bytes -> decode_article -> Predictor.predict (whole batch) -> encode_classified -> bytes``.
This runs in a worker thread or process (``service.models.workers``), and the offline ``classify``
command runs the same ``classify_values``. It never raises for a record's content or a
model that fails on one article: every record becomes either an output or a dead letter.
A failure that concerns no single record (out of memory, a model that cannot run at all
outside the per-record steps) propagates to the caller.
"""

from __future__ import annotations

import functools
import logging
import math
import time
import traceback
from collections.abc import Sequence
from typing import TYPE_CHECKING

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
from service.core.deadletter import DeadLetterReason, dead_letter_headers
from service.core.headers import carried
from service.core.records import (
    ArticleNotes,
    ArticlePredictor,
    BatchResult,
    Classified,
    InputRecord,
    ObservedPredictor,
    Outcome,
    Outgoing,
    Refused,
    ShadowScorer,
    Topics,
    Verdict,
)

if TYPE_CHECKING:
    pass

logger = logging.getLogger(__name__)


_NOT_PER_RECORD = (MemoryError,)


def classify_values(
    values: Sequence[bytes | None],
    predictor: ArticlePredictor,
    *,
    max_event_bytes: int,
    limits: RecordLimits = DEFAULT_LIMITS,
    explain: int = 0,
) -> list[Outcome]:
    """One outcome per value, in order: decode, classify (as one batch), encode.

    ``explain`` > 0 asks the predictor for that many explaining terms per label.
    """
    return _classify_values(
        values, predictor, max_event_bytes=max_event_bytes, limits=limits, explain=explain
    )[0]


def _classify_values(
    values: Sequence[bytes | None],
    predictor: ArticlePredictor,
    *,
    max_event_bytes: int,
    limits: RecordLimits,
    explain: int = 0,
) -> tuple[
    list[Outcome],
    list[ArticleEvent | Refused],
    dict[int, Classification | Exception],
    dict[int, ArticleNotes],
]:
    """The outcomes, plus each value decoded, and the model's results and notes (tokens,
    the model that answered) by ``id(event)``."""
    decoded = [_decode(value, max_event_bytes, limits) for value in values]
    valid = [item for item in decoded if isinstance(item, ArticleEvent)]
    texts: dict[int, ArticleNotes] = {}
    predictions = _predict(predictor, valid, explain=explain, texts=texts)
    classified_at = utc_now_rfc3339()
    outcomes = [
        item
        if isinstance(item, Refused)
        else _encode(item, predictions[id(item)], classified_at, texts.get(id(item)))
        for item in decoded
    ]
    return outcomes, decoded, predictions, texts


def predict_events(
    predictor: ArticlePredictor, events: Sequence[ArticleEvent]
) -> list[Classification | Refused]:
    """One result per already-validated event, in order: its classification, or a
    ``classification_error`` naming the stage (the model failed on it even alone, or gave
    a result the output schema would refuse). For callers that hold ``ArticleEvent``s."""
    predictions = _predict(predictor, list(events))
    results: list[Classification | Refused] = []
    for event in events:
        prediction = predictions[id(event)]
        if isinstance(prediction, Exception):
            results.append(_failure("the model", prediction, event.article_id))
            continue
        try:
            _check(prediction)
        except _NOT_PER_RECORD:
            raise
        except Exception as error:
            results.append(_failure("the model's result", error, event.article_id))
        else:
            results.append(prediction)
    return results


def classify_batch(
    records: Sequence[InputRecord],
    predictor: ArticlePredictor,
    *,
    topics: Topics,
    max_event_bytes: int,
    limits: RecordLimits = DEFAULT_LIMITS,
    explain: int = 0,
    shadow: ShadowScorer | None = None,
) -> BatchResult:
    """Decode, classify and encode ``records``; the result keeps their order. With a
    ``shadow`` scorer, the valid articles are also scored by the candidate model."""
    started = time.perf_counter()
    outcomes, decoded, predictions, notes = _classify_values(
        [record.value for record in records],
        predictor,
        max_event_bytes=max_event_bytes,
        limits=limits,
        explain=explain,
    )
    result = BatchResult()
    if isinstance(predictor, ObservedPredictor):
        result.baselines = predictor.baselines
    if shadow is not None:
        pairs = [
            (record, event)
            for record, event in zip(records, decoded, strict=True)
            if isinstance(event, ArticleEvent)
        ]
        result.shadow = shadow(pairs, predictions, notes)
    for record, outcome in zip(records, outcomes, strict=True):
        if isinstance(outcome, Refused):
            result.outgoing.append(
                dead_letter(
                    record,
                    topics.dead_letter,
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
                headers=carried(record.headers),
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


def encode_result(
    event: ArticleEvent, prediction: Classification | Exception, classified_at: str
) -> Outcome:
    """The output record of one article and its model result, or why there is none."""
    return _encode(event, prediction, classified_at)


def _encode(
    event: ArticleEvent,
    prediction: Classification | Exception,
    classified_at: str,
    notes: ArticleNotes | None = None,
) -> Outcome:
    if isinstance(prediction, Exception):
        return _failure("the model", prediction, event.article_id)
    try:
        _check(prediction)
        verdict = Verdict.of(prediction, notes)
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
    explanations = classification.explanations
    if explanations is not None:
        explained = [*explanations.tags]
        if explanations.section is not None:
            explained.append(explanations.section)
        values = [term["contribution"] for label in explained for term in label["terms"]]
        if not all(math.isfinite(value) and value > 0.0 for value in values):
            raise ValueError("an explanation's contribution is not a positive number")


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
    predictor: ArticlePredictor,
    valid: list[ArticleEvent],
    *,
    explain: int = 0,
    texts: dict[int, ArticleNotes] | None = None,
) -> dict[int, Classification | Exception]:
    """Results keyed by ``id(event)``: a classification, or the error of the model on that
    article alone (after the whole batch failed and each article was retried by itself).

    ``texts``, if given, receives each classified article's ``ArticleNotes`` (tokens,
    unknown tokens, the model that answered) by ``id(event)`` from a predictor that says.
    """
    if not valid:
        return {}
    run = functools.partial(_run_model, predictor, explain=explain, texts=texts)
    try:
        batch = run(valid)
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
            (by_id[id(event)],) = run([event])
        except _NOT_PER_RECORD:
            raise
        except Exception as error:
            by_id[id(event)] = error
    return by_id


def _run_model(
    predictor: ArticlePredictor,
    articles: list[ArticleEvent],
    *,
    explain: int,
    texts: dict[int, ArticleNotes] | None,
) -> list[Classification]:
    if not isinstance(predictor, ObservedPredictor):
        return predictor.predict(articles)
    batch = predictor.predict_batch(articles, explain=explain)
    if texts is None or len(batch.tokens) != len(articles):
        return batch.classifications
    if len(batch.languages) == len(articles):
        for article, tokens, unknown, language, fallback in zip(
            articles,
            batch.tokens,
            batch.unknown_tokens,
            batch.languages,
            batch.fallbacks,
            strict=True,
        ):
            texts[id(article)] = ArticleNotes(tokens, unknown, language, fallback)
    else:
        for article, tokens, unknown in zip(
            articles, batch.tokens, batch.unknown_tokens, strict=True
        ):
            texts[id(article)] = ArticleNotes(tokens, unknown)
    return batch.classifications


def dead_letter_for_crash(record: InputRecord, topics: Topics) -> Outgoing:
    """The dead letter for a record whose classification killed the worker process."""
    return dead_letter(
        record,
        topics.dead_letter,
        DeadLetterReason.CLASSIFICATION_ERROR,
        "the classification worker died on this article",
    )


def dead_letter(
    record: InputRecord,
    dead_letter_topic: str,
    reason: DeadLetterReason,
    message: str,
    article_id: str | None = None,
    *,
    error: str | None = None,
    trace: str | None = None,
) -> Outgoing:
    """The record, unchanged, for the dead-letter topic with its reason headers; logged."""
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
        reason,
        message,
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        forwarded=record.headers,
    )
    return Outgoing(
        topic=dead_letter_topic,
        key=record.key,
        value=record.value,
        headers=headers,
        source_partition=record.partition,
        source_offset=record.offset,
        source_timestamp_ms=record.timestamp,
        reason=reason,
    )
