"""The offline commands: ``train``, ``evaluate``, ``classify`` and ``compare`` (no Kafka)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import count, islice
from pathlib import Path
from typing import IO, TextIO

from pydantic import ValidationError

from model import (
    ArtifactTrust,
    CorpusLoad,
    EvaluationReport,
    Predictor,
    artifact_digest,
    evaluate,
    generate_key_pair,
    load_labelled,
    save_artifact,
    sign_artifact,
    train,
)
from model.compare import compare
from model.errors import CorpusError
from model.evaluation import RoutedEvaluationReport, evaluate_routed
from model.languages import RoutedPredictor
from schemas import DEFAULT_LIMITS, LabelledArticle, RecordLimits
from service.core.classify import classify_values
from service.core.deadletter import DeadLetterReason
from service.core.records import ArticlePredictor, Refused

CLASSIFY_BATCH_SIZE = 256
_SKIPPED_LINES_SHOWN = 10
_SKIP_CHUNK_BYTES = 1024 * 1024


def run_train(
    data: Sequence[Path],
    out: Path,
    *,
    name: str,
    version: str | None,
    skip_invalid: bool,
    stdout: TextIO,
    features: str | None = None,
) -> int:
    """Train on labelled JSONL files, write the artifact, print the cross-validated summary.
    ``features`` picks the feature set (``model.training.train``)."""
    corpus = _load(data, skip_invalid=skip_invalid)
    trained = train(corpus.records, name=name, version=version, features=features)
    path = save_artifact(trained, out)
    print(trained.render_summary(), file=stdout)
    print(
        f"model {trained.manifest.name} {trained.manifest.version} written to {path}", file=stdout
    )
    print(f"artifact sha256 {artifact_digest(path)} (pin it with --model-sha256)", file=stdout)
    return 0


def run_evaluate(
    model_dir: Path,
    data: Sequence[Path],
    *,
    as_json: bool,
    skip_invalid: bool,
    stdout: TextIO,
    trust: ArtifactTrust | None = None,
    language_models: Sequence[tuple[str, Path, ArtifactTrust | None]] = (),
) -> int:
    """Score a saved model on labelled JSONL files; with ``language_models`` (language,
    directory, trust), each record is scored by the model that would answer it, and the
    report has every record and each model apart (``model.evaluate_routed``)."""
    default = Predictor.load(model_dir, trust)
    corpus = _load(data, skip_invalid=skip_invalid)
    report: EvaluationReport | RoutedEvaluationReport
    if language_models:
        routed = RoutedPredictor(
            default,
            {
                language: Predictor.load(directory, checks)
                for language, directory, checks in language_models
            },
        )
        report = evaluate_routed(routed, corpus.records)
    else:
        report = evaluate(default, corpus.records)
    if as_json:
        print(json.dumps(report.to_dict(), sort_keys=True), file=stdout)
    else:
        print(report.render_text(), file=stdout)
    return 0


def run_sign(model_dir: Path, key: Path, *, stdout: TextIO) -> int:
    """Verify an artifact and write its Ed25519 signature into it."""
    path, digest = sign_artifact(model_dir, key)
    print(f"signed artifact sha256 {digest}: signature written to {path}", file=stdout)
    return 0


def run_keygen(out: Path, *, stdout: TextIO) -> int:
    """Write a new Ed25519 key pair for signing artifacts."""
    private, public = generate_key_pair(out)
    print(f"private key (keep it off the serving hosts): {private}", file=stdout)
    print(f"public key (for --model-public-key): {public}", file=stdout)
    return 0


@dataclass(frozen=True, slots=True)
class _Line:
    number: int
    value: bytes
    #: Bytes of a line too long to hold (its ``value`` is then empty).
    oversize: int = 0


def run_classify(
    model_dir: Path,
    source: IO[bytes],
    sink: IO[bytes],
    *,
    strict: bool,
    max_event_bytes: int,
    stderr: TextIO,
    limits: RecordLimits = DEFAULT_LIMITS,
    trust: ArtifactTrust | None = None,
    explain: int = 0,
    section_floor: float | None = None,
    language_models: Sequence[tuple[str, Path, ArtifactTrust | None]] = (),
) -> int:
    """Classify ArticleEvent JSONL: one output line per valid input line, in input order.

    Each batch goes through ``classify_values``, the service's own per-record path, so a
    line the service would dead-letter (invalid, over a cap, or failing in the model or the
    encoder) is reported on stderr with its line number, reason and message, and skipped;
    blank lines are ignored. With ``strict`` the exit status is 1 if any line was refused.
    ``explain`` > 0 adds that many explaining terms per label (``--explain``); a section
    scored under ``section_floor`` is flagged ``uncertain`` (``--section-floor``).
    ``language_models`` (language, directory, trust) route each article to the model of its
    language; the one in ``model_dir`` answers the others (``model.languages``).
    """
    default = Predictor.load(model_dir, trust, section_floor=section_floor)
    predictor: ArticlePredictor = default
    if language_models:
        predictor = RoutedPredictor(
            default,
            {
                language: Predictor.load(directory, checks, section_floor=section_floor)
                for language, directory, checks in language_models
            },
        )
    valid = invalid = 0
    for batch in _batches(_lines(source, max_event_bytes), CLASSIFY_BATCH_SIZE):
        outcomes = iter(
            classify_values(
                [line.value for line in batch if not line.oversize],
                predictor,
                max_event_bytes=max_event_bytes,
                limits=limits,
                explain=explain,
            )
        )
        for line in batch:
            outcome = _too_long(line, max_event_bytes) if line.oversize else next(outcomes)
            if isinstance(outcome, Refused):
                invalid += 1
                print(f"line {line.number}: {outcome.reason}: {outcome.message}", file=stderr)
            else:
                valid += 1
                sink.write(outcome.value + b"\n")
    sink.flush()
    print(f"classified {valid} article(s), {invalid} invalid line(s) skipped", file=stderr)
    return 1 if strict and invalid else 0


def _lines(source: IO[bytes], max_event_bytes: int) -> Iterator[_Line]:
    """Non-blank lines; one longer than the limit is skipped over, never held in memory."""
    limit = max_event_bytes + 2  # the line and its \r\n
    for number in count(1):
        raw = source.readline(limit)
        if not raw:
            return
        if len(raw) == limit and not raw.endswith(b"\n"):
            yield _Line(number, b"", _skip_rest_of_line(source, len(raw)))
            continue
        stripped = raw.rstrip(b"\r\n")
        if stripped.strip():
            yield _Line(number, stripped)


def _skip_rest_of_line(source: IO[bytes], length: int) -> int:
    while chunk := source.readline(_SKIP_CHUNK_BYTES):
        length += len(chunk)
        if chunk.endswith(b"\n"):
            return length - 1
    return length


def _too_long(line: _Line, max_event_bytes: int) -> Refused:
    return Refused(
        DeadLetterReason.TOO_LARGE,
        f"event is {line.oversize} bytes, over the limit of {max_event_bytes} bytes",
    )


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
