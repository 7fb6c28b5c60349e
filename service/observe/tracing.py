"""The W3C trace context across the service: the output's ``traceparent`` continues the
input's trace, with a span of the service's own.

A record that arrives with a valid ``traceparent`` (``00-<trace id>-<parent id>-<flags>``)
leaves, as classified event and as dead letter, with the same trace id and flags and a new
parent id: the service's span. ``tracestate`` and every other header travel unchanged
(``service.core.headers``); a ``traceparent`` that is not valid W3C travels unchanged too.

Two ways to stamp a batch, chosen once by the composition root:

- ``ContinuedTraces`` (tracing off, the default): a fresh random span id per traced record,
  nothing recorded or exported; records without a ``traceparent`` are not touched.
- ``OpenTelemetryTraces`` (the standard ``OTEL_*`` variables turn it on, see
  ``tracing_from_environment``): one ``process`` span per batch, linked to the producers'
  spans, and per traced record a ``publish`` span that is a child of the producer's span,
  linked to the batch span; its id is the output's parent id. A record without a
  ``traceparent`` gets the batch span's context.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Mapping, Sequence
from typing import Protocol

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import Link, SpanContext, TraceFlags, Tracer

from service.config.commands import ConfigError
from service.core.headers import Header
from service.core.records import Outgoing

TRACEPARENT = "traceparent"
#: ``00-`` + trace id (32 hex) + ``-`` + parent id (16 hex) + ``-`` + flags (2 hex).
_TRACEPARENT_BYTES = 55
_LOWER_HEX = b"0123456789abcdef"
_ZERO_TRACE = b"0" * 32
_ZERO_SPAN = b"0" * 16


def parse_traceparent(value: bytes | None) -> tuple[bytes, bytes, bytes] | None:
    """(trace id, parent id, flags) of a valid version-00 ``traceparent``, else None."""
    if value is None:
        return None
    if len(value) != _TRACEPARENT_BYTES:
        value = value.strip()
        if len(value) != _TRACEPARENT_BYTES:
            return None
    if value[:3] != b"00-" or value[35:36] != b"-" or value[52:53] != b"-":
        return None
    trace_id, span_id, flags = value[3:35], value[36:52], value[53:55]
    if (trace_id + span_id + flags).translate(None, _LOWER_HEX):
        return None  # a character that is not lowercase hex
    if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    return trace_id, span_id, flags


def _traceparent_of(headers: Sequence[Header]) -> bytes | None:
    for name, value in headers:
        if name == TRACEPARENT:
            return value
    return None


def _set_traceparent(item: Outgoing, value: bytes) -> None:
    """Give ``item`` this ``traceparent``, in the place of the one it has, or last.

    In place: an outgoing record's header list is its own (``service.core.headers.carried``
    and the dead-letter headers make a new list per record), and a new record per stamp
    would cost more than the rest of the stamping.
    """
    headers = item.headers
    for index, (name, _) in enumerate(headers):
        if name == TRACEPARENT:
            headers[index] = (TRACEPARENT, value)
            return
    headers.append((TRACEPARENT, value))


class Traces(Protocol):
    """Gives a batch's outgoing records the service's span in their trace context."""

    def stamp(self, outgoing: list[Outgoing], *, started_s: float, topic: str) -> list[Outgoing]:
        """``outgoing`` with each ``traceparent`` continued (the records' header lists are
        changed in place); ``started_s`` is when the batch was fetched
        (``time.monotonic()``), ``topic`` the input topic."""
        ...

    def close(self) -> None:
        """Flush what was recorded (at shutdown)."""
        ...


class ContinuedTraces:
    """Tracing off: the trace id and flags go on, with a random span id per record."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self._bits = (rng or random.Random()).getrandbits  # noqa: S311 - an id, not a secret

    def stamp(self, outgoing: list[Outgoing], *, started_s: float, topic: str) -> list[Outgoing]:
        for item in outgoing:
            if not item.headers:
                continue
            parsed = parse_traceparent(_traceparent_of(item.headers))
            if parsed is None:
                continue
            trace_id, _, flags = parsed
            span_id = b"%016x" % (self._bits(64) or 1)
            _set_traceparent(item, b"00-%s-%s-%s" % (trace_id, span_id, flags))
        return outgoing

    def close(self) -> None:
        """Nothing was recorded."""


class OpenTelemetryTraces:
    """Tracing on: a ``process`` span per batch and a ``publish`` span per traced record."""

    def __init__(self, provider: TracerProvider, *, owns_provider: bool = True) -> None:
        self._provider = provider
        self._owns_provider = owns_provider
        self._tracer: Tracer = provider.get_tracer("article-classifier")

    def stamp(self, outgoing: list[Outgoing], *, started_s: float, topic: str) -> list[Outgoing]:
        sources: dict[tuple[int, int], SpanContext] = {}
        for item in outgoing:
            context = _span_context(_traceparent_of(item.headers)) if item.headers else None
            if context is not None:
                sources[(item.source_partition, item.source_offset)] = context
        start_ns = time.time_ns() - int((time.monotonic() - started_s) * 1e9)
        links = [Link(context) for context in sources.values()]
        batch = self._tracer.start_span(
            f"process {topic}",
            kind=trace.SpanKind.CONSUMER,
            links=links,
            start_time=start_ns,
            attributes={
                "messaging.system": "kafka",
                "messaging.operation.type": "process",
                "messaging.destination.name": topic,
                "messaging.batch.message_count": len(outgoing),
            },
        )
        try:
            batch_context = batch.get_span_context()
            for item in outgoing:
                self._stamp(item, sources, batch_context)
            return outgoing
        finally:
            batch.end()

    def _stamp(
        self, item: Outgoing, sources: Mapping[tuple[int, int], SpanContext], batch: SpanContext
    ) -> None:
        producer = sources.get((item.source_partition, item.source_offset))
        if producer is None:
            _set_traceparent(item, _format(batch))
            return
        links = [Link(batch)]
        span = self._tracer.start_span(
            f"publish {item.topic}",
            context=trace.set_span_in_context(trace.NonRecordingSpan(producer)),
            kind=trace.SpanKind.PRODUCER,
            links=links,
            attributes={
                "messaging.system": "kafka",
                "messaging.operation.type": "send",
                "messaging.destination.name": item.topic,
                "messaging.kafka.offset": item.source_offset,
                "messaging.destination.partition.id": str(item.source_partition),
            },
        )
        span.end()
        _set_traceparent(item, _format(span.get_span_context()))

    def close(self) -> None:
        if self._owns_provider:
            self._provider.shutdown()


def _span_context(value: bytes | None) -> SpanContext | None:
    parsed = parse_traceparent(value)
    if parsed is None:
        return None
    trace_id, span_id, flags = parsed
    return SpanContext(
        int(trace_id, 16), int(span_id, 16), is_remote=True, trace_flags=TraceFlags(int(flags, 16))
    )


def _format(context: SpanContext) -> bytes:
    return b"00-%032x-%016x-%02x" % (context.trace_id, context.span_id, context.trace_flags)


def tracing_enabled(environ: Mapping[str, str]) -> bool:
    """Whether the standard variables ask for traces: ``OTEL_TRACES_EXPORTER`` other than
    ``none``, or an OTLP endpoint; never with ``OTEL_SDK_DISABLED=true``."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        return exporter != "none"
    return bool(
        environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    )


class TracingConfigError(ConfigError):
    """The ``OTEL_*`` variables name an exporter this service does not have (exit 2)."""


def tracing_from_environment(environ: Mapping[str, str] | None = None) -> Traces:
    """The traces the ``OTEL_*`` variables ask for (``ContinuedTraces`` when off).

    The SDK reads the rest itself: ``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES``
    (resource), ``OTEL_TRACES_SAMPLER`` and ``..._ARG`` (sampling), ``OTEL_BSP_*`` (batching)
    and ``OTEL_EXPORTER_OTLP_*`` (endpoint, headers, certificates, timeout).
    """
    env = os.environ if environ is None else environ
    if not tracing_enabled(env):
        return ContinuedTraces()
    names = [name.strip() for name in env.get("OTEL_TRACES_EXPORTER", "otlp").split(",")]
    exporters: list[SpanExporter] = []
    for name in filter(None, names):
        if name == "otlp":
            # Imported only when exporting: it brings protobuf and requests.
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
                OTLPSpanExporter,
            )

            exporters.append(OTLPSpanExporter())
        elif name == "console":
            exporters.append(ConsoleSpanExporter())
        else:
            raise TracingConfigError(
                f"OTEL_TRACES_EXPORTER={name!r} is not one this service has (otlp, console, none)"
            )
    resource = Resource.create()  # OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": "article-classifier"}))
    provider = TracerProvider(resource=resource)
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return OpenTelemetryTraces(provider)
