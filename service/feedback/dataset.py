"""The ``dataset`` command: editor corrections joined with article text, ready for ``train``.

Feedback (``ArticleFeedback`` JSONL or a feedback topic) is read first and merged per
article: for each head (section, tags) the latest verdict wins, by ``corrected_at`` and then
by reading order, so a section fixed by one editor and the tags fixed later by another
both count. Then the articles (ArticleEvent or ClassifiedArticleEvent JSONL, or the
classified topic) are read, keeping only the corrected articles' text: memory grows with
the number of corrected articles, not with the archive. An article sent several times
gives the version whose ``event_id`` the winning verdict names, else the last one read.

The output holds one ``LabelledArticle`` per joined article, with the declared article
fields only (unknown ones could collide with the label keys), written atomically.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError, TopicAuthorizationFailedError
from pydantic import ValidationError

from schemas import (
    ArticleEvent,
    DecodeError,
    LabelledArticle,
    decode_feedback,
)
from service.config.options import KafkaConnection
from service.kafka.access import authorization, explain
from service.kafka.clients import client_options, raise_unauthorized, security_kwargs

_SHOWN_PROBLEMS = 10
_DECLARED = tuple(name for name in ArticleEvent.model_fields if name != "schema_version")
_FRACTION = re.compile(r"(\.\d{6})\d+")
#: How long an unknown topic is looked for in the metadata before it is called missing.
_METADATA_WAIT_S = 5.0


class DatasetError(RuntimeError):
    """A source cannot be read (no such file or topic, broker unreachable)."""


@dataclass(frozen=True, slots=True)
class Source:
    """A JSONL file or a topic."""

    path: Path | None = None
    topic: str | None = None

    def __str__(self) -> str:
        return str(self.path) if self.path is not None else f"topic {self.topic}"


def resolve_source(value: str, bootstrap_servers: str | None) -> Source:
    """A file if one exists by that name; otherwise a topic when a broker is given."""
    path = Path(value)
    if path.is_file():
        return Source(path=path)
    if bootstrap_servers is None:
        raise DatasetError(f"{value}: no such file (give --bootstrap-servers to read a topic)")
    return Source(topic=value)


@dataclass(slots=True)
class _Verdict:
    value: Any
    when: tuple[datetime, int]
    event_id: str | None
    conflicting: bool = False


@dataclass(slots=True)
class _Corrected:
    order: int
    section: _Verdict | None = None
    tags: _Verdict | None = None
    latest: _Verdict | None = None
    article: ArticleEvent | None = None
    matched: bool = False

    def event_id(self) -> str | None:
        return self.latest.event_id if self.latest is not None else None


@dataclass
class DatasetReport:
    """What the join saw and did; ``render`` is what the command prints."""

    feedback_records: int = 0
    feedback_invalid: int = 0
    corrected_articles: int = 0
    conflicting: int = 0
    article_records: int = 0
    article_unreadable: int = 0
    joined: int = 0
    unmatched: int = 0
    problems: list[str] = field(default_factory=list)

    def render(self, out: Path) -> str:
        return "\n".join(
            [
                f"feedback: {self.feedback_records} record(s), {self.feedback_invalid} invalid "
                f"(skipped); corrections for {self.corrected_articles} article(s), "
                f"{self.conflicting} conflicting (the latest verdict won)",
                f"articles: {self.article_records} record(s) read, {self.article_unreadable} "
                "unreadable (skipped)",
                f"joined {self.joined}, unmatched {self.unmatched} (no article text found)",
                f"wrote {self.joined} labelled article(s) to {out}",
            ]
        )


class Join:
    """Feed it feedback, then articles, then ``write``."""

    def __init__(self) -> None:
        self.report = DatasetReport()
        self._corrected: dict[str, _Corrected] = {}
        self._order = 0

    def add_feedback(self, where: str, raw: bytes | None) -> None:
        self.report.feedback_records += 1
        decoded = decode_feedback(raw)
        if isinstance(decoded, DecodeError):
            self.report.feedback_invalid += 1
            self._problem(f"{where}: {decoded.reason}: {decoded.message}")
            return
        self._order += 1
        entry = self._corrected.get(decoded.article_id)
        if entry is None:
            entry = self._corrected[decoded.article_id] = _Corrected(self._order)
        when = (_instant(decoded.corrected_at), self._order)
        verdict = _Verdict(None, when, decoded.event_id)
        if entry.latest is None or when > entry.latest.when:
            entry.latest = verdict
        if decoded.section is not None:
            entry.section = _merge(entry.section, decoded.section, verdict)
        if decoded.tags is not None:
            entry.tags = _merge(entry.tags, sorted(decoded.tags), verdict)

    def add_article(self, where: str, raw: bytes | None) -> None:
        self.report.article_records += 1
        try:
            payload = json.loads(raw) if raw is not None else None
        except ValueError as error:
            self._unreadable(f"{where}: not JSON: {error}")
            return
        if not isinstance(payload, dict):
            self._unreadable(f"{where}: not a JSON object")
            return
        article_id = payload.get("article_id")
        entry = self._corrected.get(article_id) if isinstance(article_id, str) else None
        if entry is None:
            return
        declared = {name: payload[name] for name in _DECLARED if payload.get(name) is not None}
        try:
            article = ArticleEvent.model_validate(declared)
        except ValidationError as error:
            first = error.errors(include_url=False, include_input=False)[0]
            location = ".".join(str(part) for part in first["loc"]) or "event"
            self._unreadable(f"{where}: {location}: {first['msg']}")
            return
        wanted = entry.event_id()
        if entry.matched:
            return
        entry.article = article
        entry.matched = wanted is not None and article.event_id == wanted

    def write(self, out: Path) -> DatasetReport:
        """Write the joined LabelledArticle JSONL atomically; return the counts."""
        report = self.report
        report.corrected_articles = len(self._corrected)
        report.conflicting = sum(
            1
            for entry in self._corrected.values()
            if any(v is not None and v.conflicting for v in (entry.section, entry.tags))
        )
        out.parent.mkdir(parents=True, exist_ok=True)
        descriptor, staging = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
        try:
            with os.fdopen(descriptor, "w", encoding="utf-8") as sink:
                for entry in sorted(self._corrected.values(), key=lambda e: e.order):
                    if entry.article is None:
                        report.unmatched += 1
                        continue
                    sink.write(_labelled(entry, entry.article) + "\n")
                    report.joined += 1
            Path(staging).replace(out)
        except BaseException:
            Path(staging).unlink(missing_ok=True)
            raise
        return report

    def _problem(self, text: str) -> None:
        if len(self.report.problems) < _SHOWN_PROBLEMS:
            self.report.problems.append(text)

    def _unreadable(self, text: str) -> None:
        self.report.article_unreadable += 1
        self._problem(text)


def _merge(current: _Verdict | None, value: Any, verdict: _Verdict) -> _Verdict:
    if current is None:
        return _Verdict(value, verdict.when, verdict.event_id)
    conflicting = current.conflicting or current.value != value
    if verdict.when > current.when:
        return _Verdict(value, verdict.when, verdict.event_id, conflicting)
    current.conflicting = conflicting
    return current


def _labelled(entry: _Corrected, article: ArticleEvent) -> str:
    fields = {name: getattr(article, name) for name in _DECLARED}
    if entry.section is not None:
        fields["section"] = entry.section.value
    if entry.tags is not None:
        fields["tags"] = entry.tags.value
    record = LabelledArticle.model_validate(fields)
    return record.model_dump_json(exclude_none=True)


def _instant(text: str) -> datetime:
    """An RFC 3339 string (already validated) as an aware datetime, for ordering."""
    return datetime.fromisoformat(_FRACTION.sub(r"\1", text.upper()))


# -- reading ----------------------------------------------------------------------------


def _file_lines(path: Path) -> Iterator[tuple[str, bytes]]:
    try:
        handle = path.open("rb")
    except OSError as error:
        raise DatasetError(f"{path}: cannot read: {error.strerror}") from error
    with handle:
        for number, raw in enumerate(handle, start=1):
            if raw.strip():
                yield f"{path}:{number}", raw.rstrip(b"\r\n")


def _consumer_options(connection: KafkaConnection | None) -> dict[str, Any]:
    """The security and further client settings of ``connection`` (none: plaintext)."""
    if connection is None:
        return {"client_id": "article-classifier-dataset"}
    options = {
        **security_kwargs(connection),
        **client_options(connection, "AIOKafkaConsumer"),
        "client_id": f"{connection.client_id}-dataset",
    }
    del options["bootstrap_servers"]  # dataset's own --bootstrap-servers is optional
    return options


async def _topic_records(
    bootstrap_servers: str, topic: str, timeout_s: float, connection: KafkaConnection | None
) -> AsyncIterator[tuple[str, bytes | None]]:
    """Every record of ``topic`` up to its end offsets when reading starts (no group)."""
    consumer = AIOKafkaConsumer(
        **_consumer_options(connection),
        bootstrap_servers=bootstrap_servers,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    try:
        await asyncio.wait_for(consumer.start(), timeout_s)
    except (KafkaError, OSError, TimeoutError) as error:
        await consumer.stop()
        denied = None if connection is None else await explain(error, connection)
        if denied is not None:
            raise DatasetError(f"broker {bootstrap_servers} refused: {denied}") from error
        raise DatasetError(f"broker {bootstrap_servers} unreachable: {error!r}") from error
    try:
        if not await _exists(consumer, topic, min(timeout_s, _METADATA_WAIT_S)):
            raise await _unlisted(consumer, topic, bootstrap_servers)
        # Subscribed without a group, the consumer is assigned every partition once the
        # topic's metadata arrives (Apache Kafka sends none unasked).
        consumer.subscribe([topic])
        assigned = await _assignment(consumer, timeout_s)
        ends = await asyncio.wait_for(consumer.end_offsets(assigned), timeout_s)
        await consumer.seek_to_beginning(*assigned)
        # The end offsets when reading starts; some brokers (tansu) under-report them, so
        # the high watermark of the first fetch of a partition raises its target.
        targets = {tp: ends[tp] for tp in assigned if ends[tp] > 0}
        raised: set[TopicPartition] = set()
        deadline = time.monotonic() + timeout_s
        while targets:
            if time.monotonic() > deadline:
                raise DatasetError(f"topic {topic}: no progress for {timeout_s} s")
            fetched = await consumer.getmany(*targets, timeout_ms=500)
            for tp, records in fetched.items():
                deadline = time.monotonic() + timeout_s
                highwater = consumer.highwater(tp)
                if tp not in raised and highwater is not None:
                    targets[tp] = max(targets[tp], highwater)
                    raised.add(tp)
                for record in records:
                    if record.offset < targets[tp]:
                        yield f"{topic}-{tp.partition}@{record.offset}", record.value
            for tp in list(targets):
                if await consumer.position(tp) >= targets[tp]:
                    del targets[tp]
    finally:
        await consumer.stop()


async def _unlisted(consumer: AIOKafkaConsumer, topic: str, bootstrap_servers: str) -> DatasetError:
    """Why the broker does not list ``topic``: the principal may not describe it, or it
    does not exist."""
    try:
        await raise_unauthorized(consumer._client, [topic])
    except TopicAuthorizationFailedError as error:
        return DatasetError(f"{topic}: {authorization(error)}")
    return DatasetError(f"{topic}: no such file, and no such topic on {bootstrap_servers}")


async def _exists(consumer: AIOKafkaConsumer, topic: str, wait_s: float) -> bool:
    """Whether the broker knows ``topic``; a topic just created may take a moment to be in
    every broker's metadata, so an unknown one is asked about again for ``wait_s``."""
    deadline = time.monotonic() + wait_s
    while topic not in await asyncio.wait_for(consumer.topics(), wait_s):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.2)
    return True


async def _assignment(consumer: AIOKafkaConsumer, timeout_s: float) -> list[TopicPartition]:
    deadline = time.monotonic() + timeout_s
    while not (assigned := sorted(consumer.assignment())):
        if time.monotonic() > deadline:
            raise DatasetError(f"no partitions assigned within {timeout_s} s")
        await asyncio.sleep(0.05)
    return assigned


async def _read(
    source: Source,
    bootstrap_servers: str | None,
    timeout_s: float,
    connection: KafkaConnection | None = None,
) -> AsyncIterator[tuple[str, bytes | None]]:
    if source.path is not None:
        for where, line in _file_lines(source.path):
            yield where, line
        return
    if source.topic is None or bootstrap_servers is None:
        raise DatasetError(f"{source}: neither a file nor a topic on a given broker")
    async for item in _topic_records(bootstrap_servers, source.topic, timeout_s, connection):
        yield item


async def build_dataset(
    feedback: Sequence[Source],
    articles: Sequence[Source],
    out: Path,
    *,
    bootstrap_servers: str | None = None,
    timeout_s: float = 30.0,
    connection: KafkaConnection | None = None,
) -> DatasetReport:
    """Join ``feedback`` with ``articles`` into ``out``; raises DatasetError on a bad source.
    Topics are read with ``connection``'s security and client settings."""
    join = Join()
    for source in feedback:
        async for where, raw in _read(source, bootstrap_servers, timeout_s, connection):
            join.add_feedback(where, raw)
    for source in articles:
        async for where, raw in _read(source, bootstrap_servers, timeout_s, connection):
            join.add_article(where, raw)
    return join.write(out)


def run_dataset(
    feedback: Sequence[str],
    articles: Sequence[str],
    out: Path,
    *,
    bootstrap_servers: str | None,
    timeout_s: float,
    connection: KafkaConnection | None = None,
    stdout: TextIO,
    stderr: TextIO,
) -> int:
    """The command: resolve the sources, join, print the problems and the counts."""
    feedback_sources = [resolve_source(value, bootstrap_servers) for value in feedback]
    article_sources = [resolve_source(value, bootstrap_servers) for value in articles]
    report = asyncio.run(
        build_dataset(
            feedback_sources,
            article_sources,
            out,
            bootstrap_servers=bootstrap_servers,
            timeout_s=timeout_s,
            connection=connection,
        )
    )
    for problem in report.problems:
        print(f"skipped {problem}", file=stderr)
    print(report.render(out), file=stdout)
    return 0
