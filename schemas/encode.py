"""ArticleEvent + Classification -> the bytes of a ClassifiedArticleEvent."""

from __future__ import annotations

from typing import Any

from pydantic_core import to_json

from schemas.article import ArticleEvent
from schemas.classified import Classification


def encode_classified(
    event: ArticleEvent, classification: Classification, classified_at: str
) -> bytes:
    """Serialise the output record: every input field as received, plus the classification.

    The output is built as a plain dict, never as keyword arguments or attributes, so a
    field name can be anything JSON allows (``_fields_set``, ``model_config``,
    ``__class__``, ``self``) without meeting a library's parameter or a Python attribute.
    The order is the contract's: the declared fields, ``classification``,
    ``classified_at``, then the unknown fields as received. Both parts were validated on
    the way in (the event by ``decode_article``, the classification by its producer), so
    nothing is validated again: this runs once per article on the hot path. Raises
    ``PydanticSerializationError`` for a value JSON cannot carry.
    """
    output: dict[str, Any] = dict(event.__dict__)
    output["classification"] = classification
    output["classified_at"] = classified_at
    extra = event.__pydantic_extra__
    if extra:
        # RESERVED_FIELDS keeps "classification" and "classified_at" out of the extras, and
        # pydantic keeps declared names out of them, so nothing here overwrites a field.
        output.update(extra)
    # "null" only matters for a non-finite score from a faulty model; decode_article refuses
    # non-finite numbers in the input, so an input value is never rewritten.
    return to_json(output, inf_nan_mode="null")
