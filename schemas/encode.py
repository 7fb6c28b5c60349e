"""ArticleEvent + Classification -> the bytes of a ClassifiedArticleEvent."""

from __future__ import annotations

from schemas.article import ArticleEvent
from schemas.classified import Classification, ClassifiedArticleEvent


def encode_classified(
    event: ArticleEvent, classification: Classification, classified_at: str
) -> bytes:
    """Serialise the output record: every input field as received, plus the classification.

    Both parts were validated on the way in (the event by ``decode_article``, the
    classification by its producer), so the output is assembled without validating again:
    this runs once per article on the hot path.
    """
    output = ClassifiedArticleEvent.model_construct(
        _fields_set=None,
        **event.__dict__,
        **(event.__pydantic_extra__ or {}),
        classification=classification,
        classified_at=classified_at,
    )
    return output.model_dump_json().encode("utf-8")
