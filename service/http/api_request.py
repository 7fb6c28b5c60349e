"""A request body of the suggest API -> each event's raw bytes, validated (synchronous).

A body is one event (a JSON object) or a JSON list of events. A list is cut into each
event's own bytes, exactly as sent, and every event goes through ``decode_article`` with
the stream's caps, one at a time: an event over ``--max-event-bytes`` is measured as the
stream would measure it, a refused event is dropped as soon as it is refused (one event's
parse at a time, never the whole list's objects), and the error is the dead letter's
reason and message. Cutting needs only the list's top-level commas: strings are skipped
whole by one regular expression, so no JSON is built here; anything malformed inside an
event is left for ``decode_article`` to name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from schemas import DecodeError, RecordLimits, decode_article
from schemas.api import MAX_EVENTS_PER_REQUEST, ApiErrorReason, ApiProblem

_WHITESPACE = b" \t\r\n"
#: A JSON string (skipped whole: commas and brackets inside are text), or a bracket or comma.
_TOKEN = re.compile(rb'"[^"\\]*+(?:\\.[^"\\]*+)*+"|[\[\]{},]', re.DOTALL)
#: Opening bracket -> the closing one it needs.
_PAIRS = {ord("["): ord("]"), ord("{"): ord("}")}
_CLOSE = frozenset(_PAIRS.values())


@dataclass(frozen=True, slots=True)
class Events:
    """The events of a valid request, in order, as raw bytes; ``single`` when the body was
    one event rather than a list."""

    values: list[bytes]
    single: bool


def parse_events(
    body: bytes,
    *,
    max_event_bytes: int,
    limits: RecordLimits,
    max_events: int = MAX_EVENTS_PER_REQUEST,
) -> Events | list[ApiProblem]:
    """The request's events, or every problem found (one per refused event, with its index)."""
    stripped = body.lstrip(_WHITESPACE)
    if not stripped.startswith(b"["):
        problem = _check(body, None, max_event_bytes, limits)
        return [problem] if problem else Events([body], single=True)
    values = split_list(stripped, max_events)
    if isinstance(values, ApiProblem):
        return [values]
    problems = [
        problem
        for index, value in enumerate(values)
        if (problem := _check(value, index, max_event_bytes, limits)) is not None
    ]
    return problems or Events(values, single=False)


def _check(
    value: bytes, index: int | None, max_event_bytes: int, limits: RecordLimits
) -> ApiProblem | None:
    decoded = decode_article(value, max_bytes=max_event_bytes, limits=limits)
    if not isinstance(decoded, DecodeError):
        return None
    return ApiProblem(
        reason=ApiErrorReason(decoded.reason.value),
        message=decoded.message,
        index=index,
        field=decoded.field,
    )


def split_list(text: bytes, max_events: int) -> list[bytes] | ApiProblem:
    """Each element of the JSON list ``text`` (which starts with ``[``) as its own bytes."""
    values: list[bytes] = []
    open_brackets: list[int] = []
    start = 1
    end: int | None = None
    for match in _TOKEN.finditer(text):
        token = match.group()
        if token[0] in _PAIRS:
            open_brackets.append(_PAIRS[token[0]])
        elif token[0] in _CLOSE:
            if not open_brackets or open_brackets.pop() != token[0]:
                return _invalid_json(
                    f"a '{token.decode()}' at offset {match.start()} closes nothing"
                )
            if not open_brackets:
                end = match.start()
                break
        elif token == b"," and len(open_brackets) == 1:
            values.append(text[start : match.start()].strip(_WHITESPACE))
            start = match.end()
            if len(values) >= max_events:
                return _too_many(max_events)
    if end is None:
        return _invalid_json("the list is not closed: a ']' is missing")
    if text[end + 1 :].strip(_WHITESPACE):
        return _invalid_json("the body holds more than one JSON value after the list")
    return _elements(values, text[start:end].strip(_WHITESPACE), max_events)


def _elements(values: list[bytes], last: bytes, max_events: int) -> list[bytes] | ApiProblem:
    if last or values:
        values.append(last)
    if not values:
        return ApiProblem(
            reason=ApiErrorReason.SCHEMA_VIOLATION,
            message=f"the list is empty: send 1 to {max_events} events",
        )
    if not all(values):
        return _invalid_json("the list has an empty element (a comma too many)")
    return values


def _too_many(max_events: int) -> ApiProblem:
    return ApiProblem(
        reason=ApiErrorReason.TOO_MANY_EVENTS,
        message=f"the list holds more than {max_events} events, the most one request may carry",
    )


def _invalid_json(message: str) -> ApiProblem:
    return ApiProblem(
        reason=ApiErrorReason.INVALID_JSON, message=f"body is not valid JSON: {message}"
    )
