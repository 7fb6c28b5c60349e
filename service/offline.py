"""The offline commands: ``train``, ``evaluate``, ``classify`` and ``compare`` (no Kafka)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import IO, TextIO

from pydantic import ValidationError

from model import CorpusLoad, Predictor, evaluate, load_labelled, save_artifact, train
from model.compare import compare
from model.errors import CorpusError
from schemas import (
    ArticleEvent,
    DecodeError,
    LabelledArticle,
    decode_article,
    encode_classified,
    utc_now_rfc3339,
)

CLASSIFY_BATCH_SIZE = 256
_SKIPPED_LINES_SHOWN = 10


def run_train(
    data: Sequence[Path],
    out: Path,
    *,
    name: str,
    version: str | None,
    skip_invalid: bool,
    stdout: TextIO,
) -> int:
    """Train on labelled JSONL files, write the artifact, print the cross-validated summary."""
    corpus = _load(data, skip_invalid=skip_invalid)
    trained = train(corpus.records, name=name, version=version)
    path = save_artifact(trained, out)
    print(trained.render_summary(), file=stdout)
    print(
        f"model {trained.manifest.name} {trained.manifest.version} written to {path}", file=stdout
    )
    return 0


def run_evaluate(
    model_dir: Path, data: Sequence[Path], *, as_json: bool, skip_invalid: bool, stdout: TextIO
) -> int:
    """Score a saved model on labelled JSONL files."""
    predictor = Predictor.load(model_dir)
    corpus = _load(data, skip_invalid=skip_invalid)
    report = evaluate(predictor, corpus.records)
    if as_json:
        print(json.dumps(report.to_dict(), sort_keys=True), file=stdout)
    else:
        print(report.render_text(), file=stdout)
    return 0


@dataclass(frozen=True, slots=True)
class _Line:
    number: int
    result: ArticleEvent | DecodeError


def run_classify(
    model_dir: Path,
    source: IO[bytes],
    sink: IO[bytes],
    *,
    strict: bool,
    max_event_bytes: int,
    stderr: TextIO,
) -> int:
    """Classify ArticleEvent JSONL: one output line per valid input line, in input order.

    Invalid lines are reported on stderr with their line number and reason, and skipped;
    blank lines are ignored. With ``strict`` the exit status is 1 if any line was invalid.
    """
    predictor = Predictor.load(model_dir)
    valid = invalid = 0
    for batch in _batches(_decode_lines(source, max_event_bytes), CLASSIFY_BATCH_SIZE):
        events: list[ArticleEvent] = []
        for line in batch:
            if isinstance(line.result, DecodeError):
                invalid += 1
                print(
                    f"line {line.number}: {line.result.reason}: {line.result.message}", file=stderr
                )
            else:
                events.append(line.result)
        if not events:
            continue
        classified_at = utc_now_rfc3339()
        for event, classification in zip(events, predictor.predict(events), strict=True):
            sink.write(encode_classified(event, classification, classified_at) + b"\n")
        valid += len(events)
    sink.flush()
    print(f"classified {valid} article(s), {invalid} invalid line(s) skipped", file=stderr)
    return 1 if strict and invalid else 0


def _decode_lines(source: IO[bytes], max_event_bytes: int) -> Iterator[_Line]:
    for number, raw in enumerate(source, start=1):
        stripped = raw.rstrip(b"\r\n")
        if stripped.strip():
            yield _Line(number, decode_article(stripped, max_bytes=max_event_bytes))


def _batches(lines: Iterable[_Line], size: int) -> Iterator[list[_Line]]:
    iterator = iter(lines)
    while batch := list(islice(iterator, size)):
        yield batch


def _load(paths: Sequence[Path], *, skip_invalid: bool) -> CorpusLoad:
    corpus = load_labelled(paths, skip_invalid=skip_invalid)
    for error in corpus.skipped[:_SKIPPED_LINES_SHOWN]:
        print(f"skipped {error}", file=sys.stderr)
    if corpus.skipped:
        hidden = len(corpus.skipped) - _SKIPPED_LINES_SHOWN
        more = f" ({hidden} not shown)" if hidden > 0 else ""
        print(f"skipped {len(corpus.skipped)} invalid line(s){more}", file=sys.stderr)
    return corpus


def run_compare(
    model_dirs: Sequence[Path],
    data: Sequence[Path],
    *,
    as_json: bool,
    top: int,
    stdout: TextIO,
    stderr: TextIO,
) -> int:
    """Compare two saved models on JSONL articles (labelled or not); print the report.

    Invalid lines are reported on stderr with ``file:line`` and the reason, and skipped.
    """
    if len(model_dirs) != 2:
        raise CorpusError(f"compare needs exactly two --model options, got {len(model_dirs)}")
    model_a, model_b = (Predictor.load(directory) for directory in model_dirs)
    skipped: list[str] = []
    started = time.perf_counter()
    result = compare(model_a, model_b, _articles(data, skipped), top=top)
    elapsed = time.perf_counter() - started
    for problem in skipped[:_SKIPPED_LINES_SHOWN]:
        print(f"skipped {problem}", file=stderr)
    if skipped:
        print(f"skipped {len(skipped)} invalid line(s)", file=stderr)
    rate = result.articles / elapsed if elapsed > 0 else 0.0
    print(
        f"compared {result.articles} article(s) in {elapsed:.1f} s ({rate:,.0f} articles/s)",
        file=stderr,
    )
    if as_json:
        print(json.dumps(result.to_dict(), sort_keys=True), file=stdout)
    else:
        print(result.render_text(), file=stdout)
    return 0


def _articles(paths: Sequence[Path], skipped: list[str]) -> Iterator[LabelledArticle]:
    """Each valid line of ``paths`` as a LabelledArticle (an ArticleEvent line is one
    without labels); invalid lines are appended to ``skipped``."""
    for path in paths:
        try:
            handle = path.open("rb")
        except OSError as error:
            raise CorpusError(f"{path}: cannot read: {error.strerror}") from error
        with handle:
            for number, raw in enumerate(handle, start=1):
                if not raw.strip():
                    continue
                try:
                    yield LabelledArticle.model_validate_json(raw)
                except ValidationError as error:
                    first = error.errors(include_url=False, include_input=False)[0]
                    where = ".".join(str(part) for part in first["loc"])
                    reason = first["msg"].removeprefix("Value error, ")
                    skipped.append(f"{path}:{number}: {where + ': ' if where else ''}{reason}")
