"""The ArticleFeedback contract: what a CMS may send, and why a record is refused."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest

from schemas import (
    DEFAULT_MAX_FEEDBACK_BYTES,
    ArticleFeedback,
    DecodeError,
    DecodeErrorReason,
    decode_feedback,
)
from schemas.generate import SCHEMA_DIR, stale_schemas

VALID: dict[str, Any] = {
    "article_id": "cms-1234",
    "event_id": "evt-1",
    "model_version": "20261129.021744-5fe41b4b",
    "predicted_section": "business",
    "predicted_tags": ["interest-rates", "uk"],
    "section": "politics",
    "tags": ["uk", "elections"],
    "editor": "ed-42",
    "corrected_at": "2026-11-20T09:30:00.123456789+01:00",
    "schema_version": 1,
}


def _encode(payload: Any) -> bytes:
    return json.dumps(payload).encode("utf-8")


def _error(raw: bytes | None) -> DecodeError:
    result = decode_feedback(raw)
    assert isinstance(result, DecodeError), result
    return result


def _schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((SCHEMA_DIR / "article-feedback.v1.json").read_text())
    return loaded


def test_complete_feedback_decodes_with_every_field() -> None:
    """A complete feedback event decodes to an ArticleFeedback carrying each field as sent."""
    feedback = decode_feedback(_encode(VALID))
    assert isinstance(feedback, ArticleFeedback)
    assert feedback.model_dump() == VALID


def test_a_section_or_the_tags_alone_is_enough() -> None:
    """Only article_id, corrected_at and one final label head are needed; [] is a verdict."""
    choices: list[dict[str, Any]] = [{"section": "sport"}, {"tags": []}]
    for labels in choices:
        payload = {"article_id": "a", "corrected_at": "2026-11-20T08:00:00Z", **labels}
        feedback = decode_feedback(_encode(payload))
        assert isinstance(feedback, ArticleFeedback), feedback
        assert feedback.model_version is None


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"section": None, "tags": None}, None, "at least one must be given"),
        ({"article_id": "  "}, "article_id", "String should match pattern"),
        ({"corrected_at": "2026-11-20 09:30"}, "corrected_at", "RFC 3339"),
        ({"corrected_at": None}, "corrected_at", "Field required"),
        ({"tags": ["uk", "uk"]}, None, "'uk' is listed twice"),
        ({"predicted_tags": ["a", "a"]}, None, "predicted_tags"),
        ({"model_version": None}, None, "need the model_version"),
        ({"tag": ["misspelt"]}, "tag", "Extra inputs are not permitted"),
        ({"tags": "uk"}, "tags", "valid array"),
        ({"section": ""}, "section", "at least 1 character"),
        ({"tags": [f"t{i}" for i in range(257)]}, "tags", "at most 256"),
        ({"schema_version": 2}, "schema_version", "1"),
    ],
)
def test_bad_feedback_is_a_schema_violation_naming_the_field(
    change: dict[str, Any], field: str | None, words: str
) -> None:
    """Each broken rule gives schema_violation, the first offending field and a clear message."""
    payload = {**VALID, **change}
    if change.get("corrected_at", "") is None:
        del payload["corrected_at"]
    error = _error(_encode(payload))
    assert error.reason is DecodeErrorReason.SCHEMA_VIOLATION
    assert error.field == field
    assert words in error.message


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (None, DecodeErrorReason.SCHEMA_VIOLATION),
        (b'{"article_id": "caf\xe9"}', DecodeErrorReason.INVALID_UTF8),
        (b'{"article_id": "a",', DecodeErrorReason.INVALID_JSON),
        (b"[1, 2]", DecodeErrorReason.SCHEMA_VIOLATION),
        (b" " * (DEFAULT_MAX_FEEDBACK_BYTES + 1), DecodeErrorReason.TOO_LARGE),
    ],
)
def test_bytes_that_are_no_feedback_get_the_article_reason_codes(
    raw: bytes | None, reason: DecodeErrorReason
) -> None:
    """Tombstones, bad UTF-8, bad JSON, non-objects and oversize values use the same codes as
    articles, so one dead-letter convention covers both topics."""
    error = _error(raw)
    assert error.reason is reason
    assert error.message


def test_checked_in_json_schema_matches_the_model_and_accepts_the_example() -> None:
    """The generated schema is checked in (no drift) and agrees with the model on examples."""
    assert "article-feedback.v1.json" not in stale_schemas()
    schema = _schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    validator.validate(VALID)
    with pytest.raises(jsonschema.ValidationError):
        validator.validate({**VALID, "tag": ["misspelt"]})
    with pytest.raises(jsonschema.ValidationError):
        validator.validate({key: value for key, value in VALID.items() if key != "corrected_at"})
