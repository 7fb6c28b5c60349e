"""Bytes in, an ArticleEvent or a typed error out: the edge where bad input becomes a value."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from schemas.article import ArticleEvent

DEFAULT_MAX_EVENT_BYTES = 1024 * 1024
_MAX_ERRORS_IN_MESSAGE = 3


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


def decode_article(
    raw: bytes | None, *, max_bytes: int = DEFAULT_MAX_EVENT_BYTES
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
        return ArticleEvent.model_validate_json(text)
    except ValidationError as error:
        return _from_validation_error(error)


def _from_validation_error(error: ValidationError) -> DecodeError:
    details = error.errors(include_url=False, include_input=False)
    if details and details[0]["type"] == "json_invalid":
        return DecodeError(
            DecodeErrorReason.INVALID_JSON, f"value is not valid JSON: {details[0]['msg']}"
        )
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
