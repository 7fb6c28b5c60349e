"""The event contract: pydantic models are the single source of truth.

``bytes -> decode_article -> ArticleEvent``; ``ArticleEvent + Classification ->
encode_classified -> bytes``. JSON Schema files generated from these models live in
``schemas/json/``.
"""

from schemas._time import check_rfc3339, utc_now_rfc3339
from schemas.article import RESERVED_FIELDS, SCHEMA_VERSION, ArticleEvent, LabelledArticle
from schemas.classified import (
    Classification,
    ClassifiedArticleEvent,
    LabelScore,
    ModelRef,
)
from schemas.decode import (
    DEFAULT_LIMITS,
    DEFAULT_MAX_DEPTH,
    DEFAULT_MAX_EVENT_BYTES,
    DEFAULT_MAX_FIELDS,
    DEFAULT_MAX_TITLE_CHARS,
    PARSER_MAX_DEPTH,
    DecodeError,
    DecodeErrorReason,
    RecordLimits,
    decode_article,
)
from schemas.encode import encode_classified

__all__ = [
    "DEFAULT_LIMITS",
    "DEFAULT_MAX_DEPTH",
    "DEFAULT_MAX_EVENT_BYTES",
    "DEFAULT_MAX_FIELDS",
    "DEFAULT_MAX_TITLE_CHARS",
    "PARSER_MAX_DEPTH",
    "RESERVED_FIELDS",
    "SCHEMA_VERSION",
    "ArticleEvent",
    "Classification",
    "ClassifiedArticleEvent",
    "DecodeError",
    "DecodeErrorReason",
    "LabelScore",
    "LabelledArticle",
    "ModelRef",
    "RecordLimits",
    "check_rfc3339",
    "decode_article",
    "encode_classified",
    "utc_now_rfc3339",
]
