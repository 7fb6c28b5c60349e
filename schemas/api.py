"""The suggest API's contract: what ``POST /v1/classify`` answers, and its error body.

The request is one ``ArticleEvent`` or a JSON list of them (``schemas.article``); the
answer carries the same ``Classification`` as the stream's output events.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from schemas._time import Rfc3339
from schemas.classified import Classification

#: Most events one request may carry.
MAX_EVENTS_PER_REQUEST = 256
#: Largest ``explain`` the API accepts (terms per label).
MAX_EXPLAIN = 50


class ClassifyResult(BaseModel):
    """One article's classification, as the stream would publish it."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="ClassifyResult")

    article_id: str = Field(description="The event's article_id.")
    event_id: str | None = Field(description="The event's event_id, null when it had none.")
    classification: Classification
    classified_at: Rfc3339 = Field(description="When the service classified it (RFC 3339, UTC).")


class ApiErrorReason(StrEnum):
    """Why a request was refused: the stream's dead-letter reasons for an event, plus the
    reasons that concern the HTTP request itself."""

    INVALID_UTF8 = "invalid_utf8"
    INVALID_JSON = "invalid_json"
    SCHEMA_VIOLATION = "schema_violation"
    TOO_LARGE = "too_large"
    CLASSIFICATION_ERROR = "classification_error"
    TOO_MANY_EVENTS = "too_many_events"
    INVALID_PARAMETER = "invalid_parameter"
    EXPLANATIONS_UNAVAILABLE = "explanations_unavailable"
    REQUEST_TOO_LARGE = "request_too_large"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    UNAUTHORIZED = "unauthorized"
    OVER_CAPACITY = "over_capacity"
    UNAVAILABLE = "unavailable"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    INTERNAL_ERROR = "internal_error"


class ApiProblem(BaseModel):
    """One thing wrong with a request."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="ApiProblem")

    reason: ApiErrorReason
    message: str = Field(
        description="What is wrong, naming the offending field: for an event, the message "
        "its dead letter would carry. Never the article text."
    )
    index: int | None = Field(
        default=None,
        ge=0,
        description="Position of the offending event in a list request; null otherwise.",
    )
    field: str | None = Field(
        default=None, description="The first offending field of the event, when one is known."
    )


class ApiError(BaseModel):
    """The body of every error response of the API."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="ApiError")

    errors: list[ApiProblem] = Field(min_length=1)
