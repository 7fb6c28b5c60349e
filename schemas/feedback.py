"""The feedback contract: an editor's verdict on one classified article.

Labels are given in their final form, as ``LabelledArticle`` carries them: ``section`` is
the section the article ends up in, ``tags`` the complete final tag list (``[]``: no tag
applies). A final list, not tags added or removed, because it is what training needs as it
is, it does not depend on which earlier classification a delta was taken against, and a
record delivered twice or out of order is harmless: the latest verdict simply wins.

``predicted_section`` and ``predicted_tags`` are the model's labels as the editor saw them,
copied by the CMS from the classified event. Carrying them keeps the service stateless:
the live quality metrics need no per-article memory and no lookup, and stay right across
restarts, several instances and articles classified long ago.
"""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from schemas._time import Rfc3339
from schemas.article import SCHEMA_VERSION
from schemas.decode import DecodeError, DecodeErrorReason, _from_validation_error

#: A feedback event is a few hundred bytes; this bounds what one record can cost to parse.
DEFAULT_MAX_FEEDBACK_BYTES = 64 * 1024
#: More tags than any article carries (the research corpora: 16 at most).
MAX_FEEDBACK_TAGS = 256

Label = Annotated[str, Field(min_length=1, max_length=128, pattern=r"\S")]
TagList = Annotated[list[Label], Field(max_length=MAX_FEEDBACK_TAGS)]


class ArticleFeedback(BaseModel):
    """An editor's final labels for one article, with what the model had said.

    At least one of ``section`` and ``tags`` is given: a missing one means "not reviewed",
    ``tags: []`` means "reviewed, and no tag applies". Unknown fields are refused, so a
    misspelt label field is dead-lettered rather than silently lost.
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, title="ArticleFeedback")

    article_id: str = Field(
        min_length=1,
        max_length=256,
        pattern=r"\S",
        description="The article's id, as in ArticleEvent; the Kafka key.",
    )
    event_id: str | None = Field(
        default=None,
        max_length=256,
        description="event_id of the classified event the editor reviewed, if known.",
    )
    model_version: str | None = Field(
        default=None,
        min_length=1,
        max_length=256,
        description="classification.model.version of the event the editor reviewed.",
    )
    predicted_section: Label | None = Field(
        default=None, description="The section the model gave, as the editor saw it."
    )
    predicted_tags: TagList | None = Field(
        default=None, description="The tags the model gave, as the editor saw them."
    )
    section: Label | None = Field(default=None, description="The final section.")
    tags: TagList | None = Field(
        default=None, description="The complete final tag list; [] when no tag applies."
    )
    editor: str | None = Field(
        default=None, min_length=1, max_length=256, description="Opaque id of the editor."
    )
    corrected_at: Rfc3339 = Field(description="When the editor decided (RFC 3339).")
    schema_version: Literal[1] = Field(default=SCHEMA_VERSION, description="Contract version.")

    @model_validator(mode="after")
    def _has_labels(self) -> Self:
        if self.section is None and self.tags is None:
            raise ValueError("section and tags are both missing: at least one must be given")
        for name in ("tags", "predicted_tags"):
            values: list[str] | None = getattr(self, name)
            if values is not None and len(set(values)) != len(values):
                repeated = next(tag for tag in values if values.count(tag) > 1)
                raise ValueError(f"{name}: {repeated!r} is listed twice")
        if (self.predicted_section is not None or self.predicted_tags is not None) and (
            self.model_version is None
        ):
            raise ValueError("predicted labels need the model_version that gave them")
        return self


def decode_feedback(
    raw: bytes | None, *, max_bytes: int = DEFAULT_MAX_FEEDBACK_BYTES
) -> ArticleFeedback | DecodeError:
    """Decode one feedback record value; every failure is a DecodeError, never an exception.

    The reason codes are those of ``decode_article``: ``invalid_utf8``, ``invalid_json``,
    ``schema_violation`` and ``too_large``.
    """
    if raw is None:
        return DecodeError(DecodeErrorReason.SCHEMA_VIOLATION, "record has no value (tombstone)")
    if len(raw) > max_bytes:
        return DecodeError(
            DecodeErrorReason.TOO_LARGE,
            f"feedback is {len(raw)} bytes, over the limit of {max_bytes} bytes",
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        return DecodeError(
            DecodeErrorReason.INVALID_UTF8,
            f"value is not valid UTF-8: byte 0x{raw[error.start]:02x} at offset {error.start}",
        )
    try:
        return ArticleFeedback.model_validate_json(text)
    except ValidationError as error:
        return _from_validation_error(error)
