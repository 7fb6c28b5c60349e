"""The output contract: the input event, unchanged, plus its classification."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from schemas._time import Rfc3339
from schemas.article import ArticleEvent

Score = Annotated[float, Field(ge=0.0, le=1.0)]


class LabelScore(BaseModel):
    """One label with a probability-like score in [0, 1]."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    label: str
    score: Score


class ModelRef(BaseModel):
    """Which model produced a classification: outputs are deterministic per version."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    version: str


class Classification(BaseModel):
    """What the model says about one article.

    ``section`` is null only when the model was trained without a section head;
    ``tags`` is sorted by score, highest first, and empty when no tag applies (or the
    model has no tag head).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    section: LabelScore | None
    tags: list[LabelScore]
    model: ModelRef


class ClassifiedArticleEvent(ArticleEvent):
    """Every field of the input event (unknown ones included), plus the classification."""

    model_config = ConfigDict(title="ClassifiedArticleEvent")

    classification: Classification
    classified_at: Rfc3339 = Field(description="When the service classified it (RFC 3339, UTC).")
