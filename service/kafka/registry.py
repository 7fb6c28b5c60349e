"""The Schema Registry on the input and the output (``--registry-input``, ``--registry-output``).

The input's schema ids are checked against the registry once per id: the answer (allowed,
unknown, or under no allowed subject) is kept in a dict, so a batch costs one dict lookup
per record once its ids are known. An unknown id is asked again after
``NEGATIVE_TTL_S`` (a schema registered a moment ago on a lagging replica is not refused
for good). The output's JSON Schema is registered once, at the first session's start, and
every output is framed with its id.

The registry being unreachable never dead-letters an article: the lookup raises
``RegistryUnavailableError``, the session ends without committing the batch, and the
supervisor starts a new one from the last commit after a growing delay.

The REST calls are those of Confluent's API, which Apicurio Registry also serves (under
``/apis/ccompat/v7``): ``GET /schemas/ids/{id}/versions`` and ``POST
/subjects/{subject}/versions``. httpx makes them on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, Protocol
from urllib.parse import quote

import httpx

from schemas.article import SCHEMA_VERSION
from service.config.commands import ReclassifySettings, ServeSettings
from service.config.options import RegistryInput
from service.core.classify import dead_letter
from service.core.deadletter import DeadLetterReason
from service.core.errors import RegistryUnavailableError
from service.core.framing import (
    VALUE_SCHEMA_ID_HEADER,
    Framed,
    FramingError,
    Unframed,
    frame,
    unframe,
)
from service.core.headers import Header
from service.core.records import BatchResult, InputRecord, Outgoing
from service.models.workers import WireRecord

logger = logging.getLogger(__name__)

#: How long an id the registry did not know (or knew under no allowed subject) stays refused
#: before it is asked again.
NEGATIVE_TTL_S = 60.0
#: Lookups of one batch's new ids in flight at once.
CONCURRENT_LOOKUPS = 8
_CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
OUTPUT_SCHEMA_FILE = f"classified-article-event.v{SCHEMA_VERSION}.json"


def output_schema() -> str:
    """The output's JSON Schema as checked in (``schemas/json/``), the text registered."""
    return resources.files("schemas").joinpath("json", OUTPUT_SCHEMA_FILE).read_text("utf-8")


class RegistryClient:
    """The two calls of the Confluent-compatible REST API the service makes."""

    def __init__(
        self,
        url: str,
        *,
        auth: httpx.Auth | None = None,
        headers: dict[str, str] | None = None,
        verify: ssl.SSLContext | bool = True,
        timeout_s: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.AsyncClient(
            base_url=self.url + "/",
            auth=auth,
            headers={"Accept": _CONTENT_TYPE, **(headers or {})},
            verify=verify,
            timeout=timeout_s,
            transport=transport,
        )

    async def subjects_of(self, schema_id: int) -> list[str] | None:
        """The subjects ``schema_id`` is registered under; None when the registry does not
        know the id."""
        response = await self._request("GET", f"schemas/ids/{schema_id}/versions")
        if response.status_code == httpx.codes.NOT_FOUND:
            return None
        body = self._json(response, f"schema id {schema_id}")
        return [str(item["subject"]) for item in body if isinstance(item, dict)]

    async def register(self, subject: str, schema: str) -> int:
        """Register ``schema`` (a JSON Schema) under ``subject``: its id (the same id again
        when it is registered already)."""
        response = await self._request(
            "POST",
            f"subjects/{quote(subject, safe='')}/versions",
            content=json.dumps({"schemaType": "JSON", "schema": schema}),
            headers={"Content-Type": _CONTENT_TYPE},
        )
        body = self._json(response, f"registering subject {subject!r}")
        return int(body["id"])

    async def close(self) -> None:
        """Close the connections; safe to call twice."""
        await self._http.aclose()

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return await self._http.request(method, path, **kwargs)
        except httpx.HTTPError as error:
            raise RegistryUnavailableError(
                f"Schema Registry {self.url}: {method} {path} failed: {error!r}"
            ) from error

    def _json(self, response: httpx.Response, what: str) -> Any:
        if response.is_success:
            try:
                return response.json()
            except ValueError as error:
                raise RegistryUnavailableError(
                    f"Schema Registry {self.url}: {what}: the answer is not JSON"
                ) from error
        raise RegistryUnavailableError(
            f"Schema Registry {self.url}: {what}: status {response.status_code}: "
            f"{response.text[:300]}"
        )


class Classifier(Protocol):
    """What the framing needs of ``service.models.workers.BatchClassifier``."""

    async def classify(self, records: Sequence[InputRecord]) -> BatchResult: ...


@dataclass(frozen=True, slots=True)
class _Refusal:
    reason: DeadLetterReason
    message: str
    until: float


#: Not in the cache yet: ask the registry.
_ASK = _Refusal(DeadLetterReason.SCHEMA_ID_UNKNOWN, "", 0.0)


class RegistryFraming:
    """Checks and strips the input's schema ids and frames the outputs, around the
    classifier (the pipeline's classify stage calls ``classify``)."""

    def __init__(
        self,
        client: RegistryClient,
        *,
        input_mode: RegistryInput,
        allowed_subjects: Sequence[str],
        output_subject: str | None,
        dead_letter_topic: str,
    ) -> None:
        self.client = client
        self._input = input_mode
        self._allowed = frozenset(allowed_subjects)
        self._output_subject = output_subject
        self._dead_letter_topic = dead_letter_topic
        #: Per schema id: None when allowed, else why refused (and until when).
        self._known: dict[int, _Refusal | None] = {}
        self.output_id: int | None = None
        #: Called after each answer of the registry (readiness clears its error).
        self.on_answer: Callable[[], None] = lambda: None
        #: Called with (request, outcome) for each request: "lookup" or "register", and
        #: "ok" or "error" (the metrics count them).
        self.on_request: Callable[[str, str], None] = lambda request, outcome: None

    async def start(self) -> None:
        """Register the output schema (once; later sessions reuse its id)."""
        if self._output_subject is None or self.output_id is not None:
            return
        async with self._counted("register"):
            self.output_id = await self.client.register(self._output_subject, output_schema())
        self.on_answer()
        logger.info(
            "output schema registered",
            extra={"subject": self._output_subject, "schema_id": self.output_id},
        )

    async def classify(self, records: Sequence[Any], classifier: Classifier) -> BatchResult:
        """Dead-letter the records whose schema id is missing, unknown or not allowed,
        classify the others without their framing, frame the outputs; input order kept.

        The registry is asked only about ids this process has not seen (each once per
        batch); every other record costs a dict lookup."""
        if self._input is RegistryInput.OFF:
            result = await classifier.classify(records)
            result.outgoing = [self._reframe(item, None) for item in result.outgoing]
            return result
        framings = [unframe(record.value, record.headers or ()) for record in records]
        now = time.monotonic()
        ask = []
        for schema_id in {item.schema_id for item in framings if isinstance(item, Framed)}:
            known = self._known.get(schema_id, _ASK)
            if known is _ASK or (known is not None and known.until <= now):
                ask.append(schema_id)
        if ask:
            await self._resolve(ask)
        refused: dict[tuple[int, int], Outgoing] = {}
        passed: list[Any] = []
        for record, framing in zip(records, framings, strict=True):
            refusal = self._admit(record, framing, passed)
            if refusal is not None:
                refused[record.partition, record.offset] = dead_letter(
                    record, self._dead_letter_topic, refusal.reason, refusal.message
                )
        result = await classifier.classify(passed) if passed else BatchResult()
        produced: dict[tuple[int, int], list[Outgoing]] = {}
        for item in result.outgoing:
            produced.setdefault((item.source_partition, item.source_offset), []).append(item)
        outgoing: list[Outgoing] = []
        for record in records:
            key = (record.partition, record.offset)
            if key in refused:
                outgoing.append(refused[key])
                continue
            outgoing.extend(self._reframe(item, record) for item in produced.pop(key, ()))
        for rest in produced.values():
            outgoing.extend(rest)
        result.outgoing = outgoing
        return result

    def _admit(
        self, record: Any, framing: Framed | Unframed | FramingError, passed: list[Any]
    ) -> _Refusal | None:
        if isinstance(framing, Unframed):
            if self._input is RegistryInput.OPTIONAL:
                passed.append(record)
                return None
            return _Refusal(
                DeadLetterReason.SCHEMA_ID_MISSING,
                "value has no schema id: neither the magic byte 0 and a 4-byte id before the "
                "JSON nor a __value_schema_id header",
                0.0,
            )
        if isinstance(framing, FramingError):
            return _Refusal(framing.reason, framing.message, 0.0)
        refusal = self._known[framing.schema_id]
        if refusal is None:
            passed.append(
                # The record as the model sees it: its value without the framing.
                WireRecord(
                    record.topic,
                    record.partition,
                    record.offset,
                    record.timestamp,
                    record.key,
                    framing.payload,
                    record.headers or (),
                )
            )
        return refusal

    async def _resolve(self, schema_ids: Sequence[int]) -> None:
        """Ask about ``schema_ids``, at most ``CONCURRENT_LOOKUPS`` at a time (a batch of
        new ids waits for the slowest, not for their sum); the first failure cancels the
        others and is raised."""
        slots = asyncio.Semaphore(CONCURRENT_LOOKUPS)

        async def one(schema_id: int) -> None:
            async with slots:
                self._known[schema_id] = await self._verdict(schema_id)

        try:
            async with asyncio.TaskGroup() as group:
                for schema_id in schema_ids:
                    group.create_task(one(schema_id))
        except BaseExceptionGroup as failed:
            first = failed.exceptions[0]
            if isinstance(first, Exception):
                raise first from None
            raise

    async def _verdict(self, schema_id: int) -> _Refusal | None:
        """Ask the registry about ``schema_id``: None when allowed, else why refused."""
        async with self._counted("lookup"):
            subjects = await self.client.subjects_of(schema_id)
        self.on_answer()
        until = time.monotonic() + NEGATIVE_TTL_S
        verdict: _Refusal | None
        if subjects is None:
            verdict = _Refusal(
                DeadLetterReason.SCHEMA_ID_UNKNOWN,
                f"schema id {schema_id} is not in the Schema Registry",
                until,
            )
        elif self._allowed.isdisjoint(subjects):
            shown = ", ".join(sorted(subjects)[:5]) or "no subject"
            verdict = _Refusal(
                DeadLetterReason.SCHEMA_SUBJECT_REFUSED,
                f"schema id {schema_id} is registered under {shown}, none of the allowed "
                f"subjects ({', '.join(sorted(self._allowed))})",
                until,
            )
        else:
            verdict = None
        logger.info(
            "input schema id checked",
            extra={
                "schema_id": schema_id,
                "subjects": subjects,
                "reason": None if verdict is None else verdict.reason.value,
            },
        )
        return verdict

    @contextlib.asynccontextmanager
    async def _counted(self, request: str) -> AsyncIterator[None]:
        try:
            yield
        except RegistryUnavailableError:
            self.on_request(request, "error")
            raise
        self.on_request(request, "ok")

    def _reframe(self, item: Outgoing, record: Any) -> Outgoing:
        if item.reason is not None:
            # A dead letter carries the record as received, framing included.
            return item if record is None else _with_value(item, record.value, item.headers)
        # The input's schema id header names the input's schema, not the output's: a
        # consumer reading it (confluent-kafka reads the header before the prefix) would
        # decode the output with the wrong schema.
        headers = [header for header in item.headers if header[0] != VALUE_SCHEMA_ID_HEADER]
        if self.output_id is None or item.value is None:
            return _with_value(item, item.value, headers)
        return _with_value(item, frame(self.output_id, item.value), headers)


def _with_value(item: Outgoing, value: bytes | None, headers: list[Header]) -> Outgoing:
    """``item`` with another value and headers (once per record: cheaper than
    ``dataclasses.replace``)."""
    return Outgoing(
        topic=item.topic,
        key=item.key,
        value=value,
        headers=headers,
        source_partition=item.source_partition,
        source_offset=item.source_offset,
        source_timestamp_ms=item.source_timestamp_ms,
        reason=item.reason,
    )


def build_registry_framing(
    settings: ServeSettings | ReclassifySettings,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
) -> RegistryFraming | None:
    """The framing ``settings`` ask for, or None without ``--registry-input`` or
    ``--registry-output``. ``transport`` replaces the network (tests)."""
    if settings.schema_registry_url is None or not (
        settings.registry_output or settings.registry_input is not RegistryInput.OFF
    ):
        return None
    auth: httpx.Auth | None = None
    headers: dict[str, str] = {}
    if settings.schema_registry_username is not None:
        password = settings.schema_registry_password
        auth = httpx.BasicAuth(
            settings.schema_registry_username,
            password.get_secret_value() if password is not None else "",
        )
    if settings.schema_registry_token is not None:
        headers["Authorization"] = f"Bearer {settings.schema_registry_token.get_secret_value()}"
    verify: ssl.SSLContext | bool = True
    if settings.schema_registry_cafile is not None:
        verify = ssl.create_default_context(cafile=str(settings.schema_registry_cafile))
    client = RegistryClient(
        settings.schema_registry_url,
        auth=auth,
        headers=headers,
        verify=verify,
        timeout_s=settings.schema_registry_timeout_s,
        transport=transport,
    )
    return RegistryFraming(
        client,
        input_mode=settings.registry_input,
        allowed_subjects=settings.registry_input_subjects or [f"{settings.input_topic}-value"],
        output_subject=(settings.registry_output_subject or f"{settings.output_topic}-value")
        if settings.registry_output
        else None,
        dead_letter_topic=settings.dead_letter_topic,
    )
