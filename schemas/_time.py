"""RFC 3339 timestamps: the one format the contract accepts and emits."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, Field

# RFC 3339 section 5.6: full-date "T" full-time, with a mandatory offset. Python's
# fromisoformat alone accepts far more (week dates, no offset, a space separator).
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$")


def check_rfc3339(value: str) -> str:
    """Return ``value`` unchanged if it is an RFC 3339 date-time, else raise ValueError."""
    if not _RFC3339.match(value):
        raise ValueError("must be an RFC 3339 date-time with an offset, e.g. 2026-11-20T08:15:00Z")
    try:
        # Only the calendar is checked here; fractions beyond microseconds are trimmed first.
        datetime.fromisoformat(re.sub(r"(\.\d{6})\d+", r"\1", value.upper()))
    except ValueError as error:
        raise ValueError(f"is not a valid date-time: {error}") from None
    return value


def utc_now_rfc3339() -> str:
    """The current time in UTC, RFC 3339 with milliseconds, e.g. ``2026-11-29T02:15:00.123Z``."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


Rfc3339 = Annotated[
    str,
    AfterValidator(check_rfc3339),
    Field(json_schema_extra={"format": "date-time"}, examples=["2026-11-20T08:15:00Z"]),
]
