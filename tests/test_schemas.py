"""The event contract: what is accepted, what is refused and why, and what comes out."""

from __future__ import annotations

import json
from typing import Any

import pytest

from schemas import (
    ArticleEvent,
    Classification,
    ClassifiedArticleEvent,
    DecodeError,
    DecodeErrorReason,
    LabelledArticle,
    LabelScore,
    ModelRef,
    RecordLimits,
    decode_article,
    encode_classified,
    utc_now_rfc3339,
)
from schemas.generate import stale_schemas

VALID: dict[str, Any] = {
    "article_id": "cms-1234",
    "event_id": "evt-1",
    "title": "Council approves new tram line",
    "body": "The city council voted on Tuesday to fund a tram line.",
    "url": "https://news.example.org/tram",
    "published_at": "2026-11-20T08:15:00+01:00",
    "language": "en-GB",
    "source": "newsroom-cms",
}


def _encode(payload: Any) -> bytes:
    return json.dumps(payload).encode("utf-8")


def _error(raw: bytes | None, **kwargs: Any) -> DecodeError:
    result = decode_article(raw, **kwargs)
    assert isinstance(result, DecodeError), result
    return result


def test_valid_event_decodes_with_every_field() -> None:
    """A complete, valid event decodes to an ArticleEvent carrying each field as sent."""
    event = decode_article(_encode(VALID))
    assert isinstance(event, ArticleEvent)
    assert event.model_dump(exclude={"schema_version"}) == VALID
    assert event.schema_version == 1


def test_title_or_body_alone_is_enough() -> None:
    """An event needs only an article_id and one non-blank text field."""
    assert isinstance(
        decode_article(_encode({"article_id": "a", "title": "Only a title"})), ArticleEvent
    )
    assert isinstance(
        decode_article(_encode({"article_id": "a", "body": "Only a body"})), ArticleEvent
    )


def test_unknown_fields_pass_through_to_the_output() -> None:
    """Fields the contract does not know are kept and come out unchanged in the output."""
    extra = {"desk": "metro", "embargo": {"until": None, "regions": ["uk"]}}
    event = decode_article(_encode({**VALID, **extra}))
    assert isinstance(event, ArticleEvent)
    output = json.loads(encode_classified(event, _classification(), utc_now_rfc3339()))
    assert output["desk"] == "metro"
    assert output["embargo"] == extra["embargo"]
    assert {key: output[key] for key in VALID} == VALID


def test_invalid_utf8_is_reported_with_its_offset() -> None:
    """Bytes that are not UTF-8 give reason invalid_utf8 and say where."""
    error = _error(b'{"article_id": "a", "title": "caf\xe9"}')
    assert error.reason is DecodeErrorReason.INVALID_UTF8
    assert "offset 33" in error.message


@pytest.mark.parametrize("raw", [b"", b"{", b"not json", b'{"article_id": "a",}'])
def test_malformed_json_is_invalid_json(raw: bytes) -> None:
    """Text that does not parse as JSON gives reason invalid_json."""
    assert _error(raw).reason is DecodeErrorReason.INVALID_JSON


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"title": "no id"}, "article_id"),
        ({"article_id": "", "title": "t"}, "article_id"),
        ({"article_id": "   ", "title": "t"}, "article_id"),
        ({"article_id": "x" * 257, "title": "t"}, "article_id"),
        ({"article_id": 42, "title": "t"}, "article_id"),
        ({"article_id": "a", "title": 7}, "title"),
        ({"article_id": "a", "title": "t", "published_at": "yesterday"}, "published_at"),
        ({"article_id": "a", "title": "t", "published_at": "2026-11-20T08:15:00"}, "published_at"),
        ({"article_id": "a", "title": "t", "published_at": "2026-02-30T08:15:00Z"}, "published_at"),
        ({"article_id": "a", "title": "t", "language": "english please"}, "language"),
        ({"article_id": "a", "title": "t", "schema_version": 2}, "schema_version"),
    ],
)
def test_schema_violations_name_the_offending_field(payload: dict[str, Any], field: str) -> None:
    """A schema violation carries reason schema_violation and names the field at fault."""
    error = _error(_encode(payload))
    assert error.reason is DecodeErrorReason.SCHEMA_VIOLATION
    assert error.field == field
    assert error.message.startswith(f"{field}: ")


def test_blank_title_and_body_are_refused() -> None:
    """An event whose title and body are both blank has nothing to classify."""
    error = _error(_encode({"article_id": "a", "title": "  ", "body": "\n"}))
    assert error.reason is DecodeErrorReason.SCHEMA_VIOLATION
    assert "title and body are both blank" in error.message


@pytest.mark.parametrize("payload", [[VALID], "a string", 12, None])
def test_a_json_value_that_is_not_an_object_is_a_schema_violation(payload: Any) -> None:
    """Only a JSON object can be an event."""
    assert _error(_encode(payload)).reason is DecodeErrorReason.SCHEMA_VIOLATION


def test_output_only_fields_are_refused_on_input() -> None:
    """An input carrying 'classification' is refused instead of being overwritten silently."""
    error = _error(_encode({**VALID, "classification": {"section": "sport"}}))
    assert error.reason is DecodeErrorReason.SCHEMA_VIOLATION
    assert "'classification' is reserved" in error.message


def test_tombstone_is_a_schema_violation() -> None:
    """A record without a value (a Kafka tombstone) is refused with a clear message."""
    error = _error(None)
    assert error.reason is DecodeErrorReason.SCHEMA_VIOLATION
    assert "no value" in error.message


def test_size_limit_is_enforced_before_parsing() -> None:
    """An event over the byte limit is refused as too_large, naming both sizes."""
    raw = _encode({**VALID, "body": "x" * 2000})
    error = _error(raw, max_bytes=1000)
    assert error.reason is DecodeErrorReason.TOO_LARGE
    assert f"{len(raw)} bytes" in error.message
    assert "1000 bytes" in error.message
    assert isinstance(decode_article(raw, max_bytes=len(raw)), ArticleEvent)


def test_default_size_limit_is_one_mebibyte() -> None:
    """Without an explicit limit, events up to 1 MiB are accepted and larger ones refused."""
    filler = "x" * (1024 * 1024)
    assert (
        _error(_encode({"article_id": "a", "body": filler})).reason is DecodeErrorReason.TOO_LARGE
    )


def test_error_messages_never_echo_article_text() -> None:
    """A refused event's message names fields, not their content (logs must not carry text)."""
    secret = "embargoed-scoop-text"
    error = _error(_encode({"article_id": "a", "title": secret, "published_at": secret}))
    assert secret not in error.message


def test_output_round_trips_through_the_output_schema() -> None:
    """encode_classified produces bytes that validate as a ClassifiedArticleEvent."""
    event = decode_article(_encode(VALID))
    assert isinstance(event, ArticleEvent)
    raw = encode_classified(event, _classification(), "2026-11-29T02:00:00.000Z")
    output = ClassifiedArticleEvent.model_validate_json(raw)
    assert output.classification == _classification()
    assert output.classified_at == "2026-11-29T02:00:00.000Z"
    assert output.article_id == VALID["article_id"]


def test_classified_at_is_rfc3339_utc() -> None:
    """The service's timestamps are RFC 3339 in UTC with a Z suffix."""
    stamp = utc_now_rfc3339()
    assert stamp.endswith("Z")
    assert isinstance(
        decode_article(_encode({"article_id": "a", "title": "t", "published_at": stamp})),
        ArticleEvent,
    )


def test_scores_outside_unit_interval_are_refused() -> None:
    """A label score must lie in [0, 1]."""
    with pytest.raises(ValueError, match="less than or equal to 1"):
        LabelScore(label="sport", score=1.5)


def test_labelled_article_distinguishes_missing_and_empty_tags() -> None:
    """A missing tags key means 'no tag label'; an empty list means 'no tag applies'."""
    unlabelled = LabelledArticle.model_validate_json(_encode({"article_id": "a", "title": "t"}))
    negative = LabelledArticle.model_validate_json(
        _encode({"article_id": "a", "title": "t", "tags": []})
    )
    assert unlabelled.tags is None
    assert unlabelled.section is None
    assert negative.tags == []


def test_checked_in_json_schemas_match_the_models() -> None:
    """schemas/json/ is regenerated whenever a model changes (run `make schemas`)."""
    assert stale_schemas() == []


def _classification() -> Classification:
    return Classification(
        section=LabelScore(label="politics", score=0.93),
        tags=[LabelScore(label="uk", score=0.8), LabelScore(label="elections", score=0.61)],
        model=ModelRef(name="demo", version="1"),
    )


def test_output_order_is_declared_fields_classification_then_unknown_fields() -> None:
    """The output lists the declared fields (absent ones as null), classification,
    classified_at, then the unknown fields in the order received."""
    raw = b'{"zeta":1,"title":"t","article_id":"a","alpha":{"b":1,"a":2},"__class__":"x"}'
    event = decode_article(raw)
    assert isinstance(event, ArticleEvent)
    output = json.loads(encode_classified(event, _classification(), "2026-11-29T02:00:00.000Z"))
    assert list(output) == [
        *ArticleEvent.model_fields,
        "classification",
        "classified_at",
        "zeta",
        "alpha",
        "__class__",
    ]
    assert output["body"] == ""
    assert output["url"] is None
    assert output["alpha"] == {"b": 1, "a": 2}


def test_field_names_that_are_python_or_pydantic_internals_pass_through() -> None:
    """An unknown field named like a keyword argument or attribute is plain data."""
    names = ["_fields_set", "model_config", "__class__", "__dict__", "self", "__init__"]
    event = decode_article(_encode({**VALID, **{name: [name] for name in names}}))
    assert isinstance(event, ArticleEvent)
    output = json.loads(encode_classified(event, _classification(), utc_now_rfc3339()))
    assert all(output[name] == [name] for name in names)


@pytest.mark.parametrize(
    "limits",
    [{"max_title_chars": 0}, {"max_fields": 0}, {"max_depth": 0}, {"max_depth": 201}],
)
def test_record_limits_refuse_values_that_cannot_work(limits: dict[str, int]) -> None:
    """A cap of zero, or a depth beyond what the JSON parser itself allows, is refused."""
    with pytest.raises(ValueError, match="max_"):
        RecordLimits(**limits)


def test_unknown_field_names_in_messages_are_bounded_and_on_one_line() -> None:
    """A refused unknown field is named, escaped and cut short: names can be anything."""
    name = "line\nbreak" + "x" * 500
    error = _error(_encode({**VALID, name: float("inf")}).replace(b"Infinity", b"1e999"))
    assert error.reason is DecodeErrorReason.SCHEMA_VIOLATION
    assert error.message.startswith('"line\\nbreak')
    assert "\n" not in error.message
    assert len(error.message) < 250
