"""The Schema Registry wire format of a record value: pure, synchronous, no I/O.

Confluent's framing puts a magic byte ``0`` and the schema id (4 bytes, big-endian) before
the JSON. confluent-kafka's newer serialisers may instead put the schema reference in the
``__value_schema_id`` header and leave the value unframed; its deserialiser
(``dual_schema_id_deserializer``) reads the header first, then the prefix. The same order
holds here. A header holds a magic byte and either a 4-byte id (``0``) or a 16-byte GUID
(``1``); only ids are resolved here (a GUID is refused with a reason).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from service.core.deadletter import DeadLetterReason

MAGIC_BYTE = 0
MAGIC_BYTE_GUID = 1
#: The header confluent-kafka's serialisers write the value's schema reference to.
VALUE_SCHEMA_ID_HEADER = "__value_schema_id"
PREFIX_BYTES = 5
_GUID_HEADER_BYTES = 17  # the magic byte 1 and a 16-byte UUID
_PREFIX = struct.Struct(">bI")


@dataclass(frozen=True, slots=True)
class Framed:
    """A value's schema id and the JSON it frames (the whole value when the id came in a
    header)."""

    schema_id: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class Unframed:
    """A value with no schema id at all (neither a prefix nor a header)."""


@dataclass(frozen=True, slots=True)
class FramingError:
    """A schema reference that cannot be read; ``reason`` is the dead-letter reason."""

    reason: DeadLetterReason
    message: str


def frame(schema_id: int, payload: bytes) -> bytes:
    """``payload`` with the magic byte and ``schema_id`` before it."""
    return _PREFIX.pack(MAGIC_BYTE, schema_id) + payload


def unframe(
    value: bytes | None, headers: Sequence[tuple[str, bytes | None]] = ()
) -> Framed | Unframed | FramingError:
    """The schema id of a record and the JSON it carries: from the ``__value_schema_id``
    header if there is one, else from the value's prefix. Never raises."""
    for name, header in headers:
        if name == VALUE_SCHEMA_ID_HEADER:
            return _from_header(header or b"", value)
    if value is None or not value.startswith(bytes([MAGIC_BYTE])):
        # A JSON value starts with "{" (or whitespace): no prefix.
        return Unframed()
    if len(value) < PREFIX_BYTES:
        return FramingError(
            DeadLetterReason.SCHEMA_ID_MISSING,
            f"value starts with the magic byte but is {len(value)} bytes, shorter than the "
            f"{PREFIX_BYTES}-byte prefix",
        )
    _, schema_id = _PREFIX.unpack_from(value)
    return Framed(schema_id, value[PREFIX_BYTES:])


def _from_header(header: bytes, value: bytes | None) -> Framed | FramingError:
    payload = value if value is not None else b""
    if len(header) == PREFIX_BYTES and header[0] == MAGIC_BYTE:
        return Framed(_PREFIX.unpack(header)[1], payload)
    if len(header) == _GUID_HEADER_BYTES and header[0] == MAGIC_BYTE_GUID:
        return FramingError(
            DeadLetterReason.SCHEMA_ID_UNKNOWN,
            f"{VALUE_SCHEMA_ID_HEADER} holds a schema GUID; only numeric schema ids are resolved",
        )
    return FramingError(
        DeadLetterReason.SCHEMA_ID_MISSING,
        f"{VALUE_SCHEMA_ID_HEADER} header is {len(header)} bytes: expected the magic byte "
        f"{MAGIC_BYTE} and a 4-byte schema id",
    )
