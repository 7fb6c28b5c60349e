"""The headers an outgoing record carries: the publisher's, forwarded as they came.

Kafka Streams forwards a record's headers to what it produces from it; so does the service,
to the classified event and to the dead letter alike: same names, same values, same order,
repeats kept, null values kept. Only the names the service writes itself on a dead letter
(``error.*``, ``source.*``) are not forwarded from the input, so that a dead letter replayed
by ``reclassify`` does not come out with its old verdict.

The W3C trace context (``traceparent``) is forwarded too; the tracing stage
(``service.observe.tracing``) then gives it the service's own span id.
"""

from __future__ import annotations

from collections.abc import Sequence

#: One Kafka record header; a header's value may be null.
Header = tuple[str, bytes | None]

#: The ``error.*`` and ``source.*`` names a dead letter gets from the service.
SERVICE_HEADERS = frozenset(
    {
        "error.reason",
        "error.message",
        "error.value_dropped",
        "source.topic",
        "source.partition",
        "source.offset",
    }
)


def carried(headers: Sequence[Header] | None) -> list[Header]:
    """The input's headers for an outgoing record, in order (a new list, never shared)."""
    if not headers:
        return []
    return [header for header in headers if header[0] not in SERVICE_HEADERS]
