"""The output contract: the input event, unchanged, plus its classification."""

from __future__ import annotations

import operator
from functools import partial
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, with_config
from pydantic.json_schema import SkipJsonSchema
from typing_extensions import TypedDict

from schemas._time import Rfc3339
from schemas.article import ArticleEvent

Score = Annotated[float, Field(ge=0.0, le=1.0)]

#: Most terms an explanation may list per label (``--explain K``).
MAX_EXPLAIN_TERMS = 50


#: Whether an optional field is left out of the output: ``value is None``, as a C-level
#: callable (serialising calls it for every label of every output).
_absent = partial(operator.is_, None)


def _no_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


class LabelScore(BaseModel):
    """One label with a probability-like score in [0, 1]."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    label: str
    score: Score
    # Left out, not written as null, unless a section floor is configured: without one the
    # output is exactly what it was before the flag existed.
    uncertain: bool | SkipJsonSchema[None] = Field(
        default=None,
        exclude_if=_absent,
        json_schema_extra=_no_default,
        description="The section only, and only when the model runs with a section floor: "
        "true when the section's score is below the floor (the model does not know which "
        "section the article belongs to; treat the section as a guess), false otherwise. "
        "Never on a tag.",
    )


class ModelRef(BaseModel):
    """Which model produced a classification: outputs are deterministic per version."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    version: str


# The two per-term and per-label shapes are TypedDicts, not models: an explained batch has
# thousands of them, and a plain dict costs a tenth of a constructed model.
@with_config(ConfigDict(extra="forbid"))
class TermContribution(TypedDict):
    """One term of the article and how much it added to a label's decision score."""

    term: Annotated[str, Field(description="A term of the model's vocabulary in the article.")]
    contribution: Annotated[
        float,
        Field(
            gt=0.0,
            allow_inf_nan=False,
            description="The term's TF-IDF value in this article times the model's weight of "
            "the term for this label, in the units of the label's linear decision score (before "
            "the softmax of the sections or the threshold and sigmoid of the tags); rounded to 6 "
            "decimal places.",
        ),
    ]


@with_config(ConfigDict(extra="forbid"))
class LabelExplanation(TypedDict):
    """The terms that raised one predicted label's score the most."""

    label: str
    terms: Annotated[
        list[TermContribution],
        Field(
            max_length=MAX_EXPLAIN_TERMS,
            description="At most K terms with a positive contribution, largest first; equal "
            "contributions in the order of the model's vocabulary. Fewer (or none) when fewer "
            "of the article's terms raised the score.",
        ),
    ]


class Explanations(BaseModel):
    """Why the model chose the section and each tag (``--explain K``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    section: LabelExplanation | None = Field(
        description="For the predicted section; null when the model has no section head."
    )
    tags: list[LabelExplanation] = Field(
        description="One per predicted tag, in the order of ``tags``."
    )


class Classification(BaseModel):
    """What the model says about one article.

    ``section`` is null only when the model was trained without a section head;
    ``tags`` is sorted by score, highest first, and empty when no tag applies (or the
    model has no tag head).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    section: LabelScore | None = Field(
        description="The most probable section and its calibrated probability; null when the "
        "model has no section head."
    )
    tags: list[LabelScore]
    model: ModelRef
    # Left out of the output, not written as null, when explanations are off: the default
    # output stays exactly what it was before explanations existed.
    explanations: Explanations | SkipJsonSchema[None] = Field(
        default=None,
        exclude_if=_absent,
        json_schema_extra=_no_default,
        description="Present only when the service or command runs with --explain K (K > 0): "
        "the terms behind the section and each tag.",
    )


class ClassifiedArticleEvent(ArticleEvent):
    """Every field of the input event (unknown ones included), plus the classification."""

    model_config = ConfigDict(title="ClassifiedArticleEvent")

    classification: Classification
    classified_at: Rfc3339 = Field(description="When the service classified it (RFC 3339, UTC).")
