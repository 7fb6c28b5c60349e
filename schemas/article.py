"""The input contract: a new-article event, and the labelled form used for training."""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas._time import Rfc3339

SCHEMA_VERSION: Literal[1] = 1

#: Output-only fields: an input that carries one is refused, so a classified event can never
#: be mistaken for a fresh one and a publisher's field is never silently overwritten.
RESERVED_FIELDS = frozenset({"classification", "classified_at"})


class ArticleEvent(BaseModel):
    """A new article, as published upstream. Unknown fields are kept and passed through."""

    model_config = ConfigDict(extra="allow", strict=True, frozen=True, title="ArticleEvent")

    article_id: str = Field(
        min_length=1,
        max_length=256,
        pattern=r"\S",
        description="Publisher's article id; the Kafka key.",
    )
    title: str = Field(
        default="", description="Headline. At least one of title and body is non-blank."
    )
    body: str = Field(
        default="", description="Article text. At least one of title and body is non-blank."
    )
    event_id: str | None = Field(
        default=None,
        max_length=256,
        description="Id of this event (one article may be sent again).",
    )
    url: str | None = Field(default=None, max_length=2048)
    published_at: Rfc3339 | None = Field(default=None, description="RFC 3339 timestamp.")
    language: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*$",
        description="BCP 47 language tag, e.g. en or en-GB.",
    )
    source: str | None = Field(default=None, max_length=256, description="Publishing system.")
    schema_version: Literal[1] = Field(default=SCHEMA_VERSION, description="Contract version.")

    @model_validator(mode="after")
    def _has_text_and_no_reserved_field(self) -> Self:
        if not (self.title.strip() or self.body.strip()):
            raise ValueError("title and body are both blank: at least one must carry text")
        reserved = RESERVED_FIELDS.intersection(self.model_extra or ())
        if reserved:
            raise ValueError(f"field {sorted(reserved)[0]!r} is reserved for the classified output")
        return self


class LabelledArticle(ArticleEvent):
    """A training record. A missing label key means "no label for that head"; ``tags: []``
    means "labelled, and no tag applies" (a negative example for every tag)."""

    model_config = ConfigDict(title="LabelledArticle")

    section: str | None = Field(default=None, min_length=1, max_length=128)
    tags: list[Annotated[str, Field(min_length=1, max_length=128)]] | None = None
