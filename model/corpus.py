"""Reading labelled JSON Lines corpora into ``LabelledArticle`` records."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from model.errors import CorpusError
from schemas import LabelledArticle


@dataclass(frozen=True, slots=True)
class LineError:
    """One line of a corpus file that could not be read as a labelled article."""

    path: Path
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}"


@dataclass(frozen=True, slots=True)
class CorpusLoad:
    """The valid records of one or more corpus files, and the lines that were skipped."""

    records: list[LabelledArticle] = field(default_factory=list)
    skipped: list[LineError] = field(default_factory=list)


def load_labelled(paths: Sequence[Path], *, skip_invalid: bool = False) -> CorpusLoad:
    """Read labelled articles from JSON Lines files, in file and line order.

    Blank lines are ignored. An invalid line raises ``CorpusError`` naming ``file:line``
    and the reason, unless ``skip_invalid``, in which case it is recorded in ``skipped``.
    A missing or unreadable file always raises.
    """
    records: list[LabelledArticle] = []
    skipped: list[LineError] = []
    for path in paths:
        try:
            handle = path.open("rb")
        except OSError as error:
            raise CorpusError(f"{path}: cannot read corpus file: {error.strerror}") from error
        with handle:
            for number, raw in enumerate(handle, start=1):
                if not raw.strip():
                    continue
                try:
                    records.append(LabelledArticle.model_validate_json(raw))
                except ValidationError as error:
                    problem = LineError(path, number, _reason(error))
                    if not skip_invalid:
                        raise CorpusError(str(problem)) from None
                    skipped.append(problem)
    return CorpusLoad(records=records, skipped=skipped)


def _reason(error: ValidationError) -> str:
    """A one-line summary of a validation error (pydantic's own text spans many lines)."""
    parts = []
    for detail in error.errors(include_url=False, include_input=False):
        location = ".".join(str(part) for part in detail["loc"])
        message = detail["msg"].removeprefix("Value error, ")
        parts.append(f"{location}: {message}" if location else message)
    return "; ".join(parts)
