"""Reading labelled corpora: valid records, and bad lines named by file and line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from model import CorpusError, CorpusLoad, LineError, load_labelled


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


GOOD = json.dumps({"article_id": "a1", "title": "Rates rise", "section": "business"})
TAGGED = json.dumps({"article_id": "a2", "body": "Goal!", "tags": ["football"]})
NEGATIVE = json.dumps({"article_id": "a3", "title": "Quiet day", "tags": []})


def test_reads_records_in_order_with_missing_labels_as_none(tmp_path: Path) -> None:
    """Records keep file order; an absent label key is None and `tags: []` stays empty."""
    corpus = load_labelled([_write(tmp_path / "c.jsonl", [GOOD, "", TAGGED, NEGATIVE])])
    assert isinstance(corpus, CorpusLoad)
    assert [r.article_id for r in corpus.records] == ["a1", "a2", "a3"]
    assert corpus.records[0].tags is None
    assert corpus.records[1].section is None
    assert corpus.records[2].tags == []
    assert corpus.skipped == []


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("{not json", "Invalid JSON"),
        (json.dumps({"article_id": "x", "title": " ", "body": ""}), "both blank"),
        (json.dumps({"article_id": "x", "title": "t", "tags": "uk"}), "tags"),
        (json.dumps({"title": "t"}), "article_id"),
    ],
)
def test_invalid_line_raises_with_file_line_and_reason(
    tmp_path: Path, line: str, reason: str
) -> None:
    """A bad line raises CorpusError naming `file:line` and why it is bad."""
    path = _write(tmp_path / "bad.jsonl", [GOOD, line])
    with pytest.raises(CorpusError, match=rf"bad\.jsonl:2: .*{reason}"):
        load_labelled([path])


def test_skip_invalid_records_skipped_lines(tmp_path: Path) -> None:
    """With skip_invalid, bad lines are skipped and reported; good ones are kept."""
    first = _write(tmp_path / "one.jsonl", [GOOD, "{oops"])
    second = _write(tmp_path / "two.jsonl", [json.dumps({"article_id": "z"}), TAGGED])
    corpus = load_labelled([first, second], skip_invalid=True)
    assert [r.article_id for r in corpus.records] == ["a1", "a2"]
    assert [(e.path.name, e.line) for e in corpus.skipped] == [("one.jsonl", 2), ("two.jsonl", 1)]
    assert all(isinstance(e, LineError) for e in corpus.skipped)
    assert str(corpus.skipped[1]).startswith(f"{second}:1: ")


def test_missing_file_raises_even_when_skipping(tmp_path: Path) -> None:
    """A missing file is an error, not a skipped line."""
    with pytest.raises(CorpusError, match=r"missing\.jsonl"):
        load_labelled([tmp_path / "missing.jsonl"], skip_invalid=True)
