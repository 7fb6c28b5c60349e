"""Bytes in, an ArticleEvent or a typed error out: the edge where bad input becomes a value."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from schemas.article import ArticleEvent

DEFAULT_MAX_EVENT_BYTES = 1024 * 1024
#: Headlines run to 60-140 characters (137 at most in the research corpora); 2,000 leaves
#: room for a CMS that puts a standfirst in the title while bounding what the model reads
#: twice (the title is weighted by repetition) to 4,000 characters.
DEFAULT_MAX_TITLE_CHARS = 2_000
#: A real event carries a dozen declared fields and a few dozen of the publisher's own
#: (desk, authors, keywords, images). Each field or array item is a Python object: 1 MB of
#: ``[{},{},...]`` parses into 330,000 of them holding 24 MB (a batch of 256: 6 GB), and
#: as many in the output. Refused, such an event is dropped as soon as it is parsed.
DEFAULT_MAX_FIELDS = 1_000
#: Deeper than any real metadata and well inside what common downstream parsers accept
#: (Rust's serde_json stops at 128 levels), since unknown fields are passed on unchanged.
DEFAULT_MAX_DEPTH = 64
#: The JSON parser (pydantic-core's jiter) refuses anything nested deeper than this itself.
PARSER_MAX_DEPTH = 200
_MAX_ERRORS_IN_MESSAGE = 3
_MAX_NAME_SHOWN = 64
# jiter's messages for valid JSON it will not build (too deep, an integer over 4,300 digits).
_PARSER_LIMITS = {
    "recursion limit exceeded": (
        f"event is nested deeper than the JSON parser's limit of {PARSER_MAX_DEPTH} levels"
    ),
    "number out of range": "event holds a number with more digits than the parser accepts",
}


class DecodeErrorReason(StrEnum):
    """Machine-readable reason codes; they become the dead-letter ``error.reason`` header."""

    INVALID_UTF8 = "invalid_utf8"
    INVALID_JSON = "invalid_json"
    SCHEMA_VIOLATION = "schema_violation"
    TOO_LARGE = "too_large"


@dataclass(frozen=True, slots=True)
class DecodeError:
    """Why a record is not a valid ArticleEvent. ``field`` is the first offending field, if any."""

    reason: DecodeErrorReason
    message: str
    field: str | None = None


@dataclass(frozen=True, slots=True)
class RecordLimits:
    """Per-record caps on what one event may cost, beyond its size in bytes.

    ``max_fields`` counts every member of every object and every item of every array, at
    any depth, the event's own top-level fields included; ``max_depth`` counts the event
    object as level 1. An event over a cap is refused as ``too_large``.
    """

    max_title_chars: int = DEFAULT_MAX_TITLE_CHARS
    max_fields: int = DEFAULT_MAX_FIELDS
    max_depth: int = DEFAULT_MAX_DEPTH

    def __post_init__(self) -> None:
        if self.max_title_chars < 1 or self.max_fields < 1:
            raise ValueError("max_title_chars and max_fields must be positive")
        if not 1 <= self.max_depth <= PARSER_MAX_DEPTH:
            raise ValueError(f"max_depth must be between 1 and {PARSER_MAX_DEPTH}")


DEFAULT_LIMITS = RecordLimits()


def decode_article(
    raw: bytes | None,
    *,
    max_bytes: int = DEFAULT_MAX_EVENT_BYTES,
    limits: RecordLimits = DEFAULT_LIMITS,
) -> ArticleEvent | DecodeError:
    """Decode one record value. Never raises for bad input: every failure is a DecodeError."""
    if raw is None:
        return DecodeError(DecodeErrorReason.SCHEMA_VIOLATION, "record has no value (tombstone)")
    if len(raw) > max_bytes:
        return DecodeError(
            DecodeErrorReason.TOO_LARGE,
            f"event is {len(raw)} bytes, over the limit of {max_bytes} bytes",
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        return DecodeError(
            DecodeErrorReason.INVALID_UTF8,
            f"value is not valid UTF-8: byte 0x{raw[error.start]:02x} at offset {error.start}",
        )
    try:
        event = ArticleEvent.model_validate_json(text)
    except ValidationError as error:
        return _from_validation_error(error)
    return _over_limits(event, limits) or event


def _over_limits(event: ArticleEvent, limits: RecordLimits) -> DecodeError | None:
    """The first cap ``event`` breaks, or a non-finite number it carries; None if neither.

    Declared fields are strings or small integers (strict validation), so only the unknown
    fields are walked, iteratively, stopping at the first cap passed: the cost is bounded
    by ``max_fields`` whatever the event holds.
    """
    if len(event.title) > limits.max_title_chars:
        return DecodeError(
            DecodeErrorReason.TOO_LARGE,
            f"title: {len(event.title)} characters, over the limit of "
            f"{limits.max_title_chars} characters",
            "title",
        )
    return _walk_fields(event, limits)


def _walk_fields(event: ArticleEvent, limits: RecordLimits) -> DecodeError | None:
    extra: dict[str, Any] = event.__pydantic_extra__ or {}
    count = len(event.model_fields_set)
    if count > limits.max_fields:
        return _too_many_fields(limits)
    pending: list[tuple[str, Any, int]] = []
    for name, value in extra.items():
        if isinstance(value, dict | list):
            pending.append((name, value, 2))
        elif type(value) is float and not math.isfinite(value):
            return _non_finite(name)
    while pending:
        name, container, depth = pending.pop()
        if depth > limits.max_depth:
            return DecodeError(
                DecodeErrorReason.TOO_LARGE,
                f"{_shown(name)}: nested {depth} levels deep, over the limit of {limits.max_depth}",
                name,
            )
        count += len(container)
        if count > limits.max_fields:
            return _too_many_fields(limits)
        for item in container.values() if isinstance(container, dict) else container:
            if isinstance(item, dict | list):
                pending.append((name, item, depth + 1))
            elif type(item) is float and not math.isfinite(item):
                return _non_finite(name)
    return None


def _too_many_fields(limits: RecordLimits) -> DecodeError:
    return DecodeError(
        DecodeErrorReason.TOO_LARGE,
        f"event has more fields and array items (counted at any depth) than the limit of "
        f"{limits.max_fields}",
    )


def _non_finite(name: str) -> DecodeError:
    # jiter reads 1e999 as infinity and accepts NaN/Infinity literals; JSON has no such
    # numbers, so passing the field through unchanged is impossible: refuse, never rewrite.
    return DecodeError(
        DecodeErrorReason.SCHEMA_VIOLATION,
        f"{_shown(name)}: holds a number outside the range of a double (or NaN/Infinity), "
        "which cannot be passed through unchanged",
        name,
    )


def _shown(name: str) -> str:
    """A field name fit for a one-line message: unknown names can be anything, of any size."""
    short = name[:_MAX_NAME_SHOWN]
    if not (short.isprintable() and short.strip() == short and short):
        short = json.dumps(short)
    return short + ("..." if len(name) > _MAX_NAME_SHOWN else "")


def _from_validation_error(error: ValidationError) -> DecodeError:
    details = error.errors(include_url=False, include_input=False)
    if details and details[0]["type"] == "json_invalid":
        message = details[0]["msg"]
        for marker, explanation in _PARSER_LIMITS.items():
            if marker in message:
                return DecodeError(DecodeErrorReason.TOO_LARGE, f"{explanation} ({message})")
        return DecodeError(DecodeErrorReason.INVALID_JSON, f"value is not valid JSON: {message}")
    first_field = _location(details[0]) if details else None
    shown = "; ".join(
        f"{_location(item) or 'event'}: {item['msg'].removeprefix('Value error, ')}"
        for item in details[:_MAX_ERRORS_IN_MESSAGE]
    )
    more = len(details) - _MAX_ERRORS_IN_MESSAGE
    if more > 0:
        shown += f" (and {more} more)"
    return DecodeError(DecodeErrorReason.SCHEMA_VIOLATION, shown, first_field)


def _location(item: ErrorDetails) -> str | None:
    location = ".".join(str(part) for part in item["loc"])
    return location or None
