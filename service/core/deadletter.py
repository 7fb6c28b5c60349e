"""What a dead letter carries: the original key and value, and why it was refused."""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

from schemas import DecodeErrorReason
from service.core.headers import Header, carried

#: Longest ``error.message`` header; a validation message can quote a lot of input.
MAX_MESSAGE_BYTES = 1024
#: Set on a dead letter whose value was too large to forward: the value's size in bytes.
VALUE_DROPPED_HEADER = "error.value_dropped"


class DeadLetterReason(StrEnum):
    """Every ``error.reason`` header value: the decode reasons, the model's failure, and
    the Schema Registry framing of the input."""

    INVALID_UTF8 = DecodeErrorReason.INVALID_UTF8.value
    INVALID_JSON = DecodeErrorReason.INVALID_JSON.value
    SCHEMA_VIOLATION = DecodeErrorReason.SCHEMA_VIOLATION.value
    TOO_LARGE = DecodeErrorReason.TOO_LARGE.value
    CLASSIFICATION_ERROR = "classification_error"
    OUTPUT_REJECTED = "output_rejected"
    #: Schema Registry framing (``--registry-input``): no schema id where one is required,
    #: or a prefix/header that cannot be read.
    SCHEMA_ID_MISSING = "schema_id_missing"
    #: The registry does not know the id (or it is a GUID, which is not resolved).
    SCHEMA_ID_UNKNOWN = "schema_id_unknown"
    #: The registry knows the id, under none of the subjects the input allows.
    SCHEMA_SUBJECT_REFUSED = "schema_subject_refused"


def dead_letter_headers(
    reason: DeadLetterReason | DecodeErrorReason,
    message: str,
    *,
    topic: str,
    partition: int,
    offset: int,
    forwarded: Sequence[Header] | None = None,
) -> list[Header]:
    """The headers of a dead letter: the input's ``forwarded`` ones first (see
    ``service.core.headers``), then why and where from, UTF-8 encoded (the message cut to a
    bound)."""
    encoded = message.encode("utf-8")
    if len(encoded) > MAX_MESSAGE_BYTES:
        encoded = encoded[: MAX_MESSAGE_BYTES - 3].decode("utf-8", "ignore").encode() + b"..."
    return [
        *carried(forwarded),
        ("error.reason", str(reason.value).encode()),
        ("error.message", encoded),
        ("source.topic", topic.encode()),
        ("source.partition", str(partition).encode()),
        ("source.offset", str(offset).encode()),
    ]
