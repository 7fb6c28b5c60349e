"""The publisher's headers travel with the article, and its trace goes on through the service.

Kafka Streams forwards a record's headers to what it produces from it; the service does the
same for the classified event and the dead letter, and continues the W3C trace context.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    Topics,
    article_records,
    consume_with_librdkafka,
    make_settings,
    produce_with_librdkafka,
    running_service,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from devtools.tansu import EmbeddedBroker
from schemas import DEFAULT_LIMITS
from service.core.classify import classify_batch
from service.core.headers import SERVICE_HEADERS, Header
from service.core.records import Outgoing
from service.core.records import Topics as OutTopics
from service.observe.tracing import (
    ContinuedTraces,
    OpenTelemetryTraces,
    TracingConfigError,
    parse_traceparent,
    tracing_enabled,
    tracing_from_environment,
)

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PRODUCER_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PRODUCER_SPAN}-01".encode()

#: What a CMS might send: a trace, vendor state, CloudEvents metadata, a repeated header, a
#: header with a null value, and the publisher's own name for something the service writes.
PUBLISHER_HEADERS: list[Header] = [
    ("traceparent", TRACEPARENT),
    ("tracestate", b"vendor=opaque,other=1"),
    ("ce_specversion", b"1.0"),
    ("ce_type", b"com.example.article.published"),
    ("x-origin", b"cms-1"),
    ("x-origin", b"cms-2"),
    ("x-empty", None),
]
_SPAN_HEX = re.compile(r"[0-9a-f]{16}")


class _Record:
    def __init__(self, offset: int, value: bytes, headers: list[Header]) -> None:
        self.topic = "articles"
        self.partition = 0
        self.offset = offset
        self.timestamp = 0
        self.key = b"k"
        self.value = value
        self.headers = headers


def _event(article_id: str) -> bytes:
    return json.dumps(
        {"article_id": article_id, "title": "Markets rally", "body": "Shares rose on Monday."}
    ).encode()


def _classified(predictor: Any, records: list[_Record]) -> list[Outgoing]:
    topics = OutTopics(output="out", dead_letter="dlq")
    result = classify_batch(
        records, predictor, topics=topics, max_event_bytes=1 << 20, limits=DEFAULT_LIMITS
    )
    return result.outgoing


def _without(headers: list[Header], name: str) -> list[Header]:
    return [header for header in headers if header[0] != name]


# -- forwarding (pure) ------------------------------------------------------------------


def test_output_and_dead_letter_carry_the_publishers_headers_in_order(predictor: Any) -> None:
    """Same names, values, order, repeats and nulls on the classified event; on the dead
    letter, the publisher's headers first and then the service's reason and source."""
    records = [
        _Record(0, _event("good"), list(PUBLISHER_HEADERS)),
        _Record(1, b"{not json", list(PUBLISHER_HEADERS)),
    ]
    output, dead = _classified(predictor, records)

    assert output.reason is None
    assert output.headers == PUBLISHER_HEADERS
    assert dead.reason is not None
    assert dead.headers[: len(PUBLISHER_HEADERS)] == PUBLISHER_HEADERS
    assert [name for name, _ in dead.headers[len(PUBLISHER_HEADERS) :]] == [
        "error.reason",
        "error.message",
        "source.topic",
        "source.partition",
        "source.offset",
    ]


def test_a_records_own_error_and_source_headers_are_not_forwarded(predictor: Any) -> None:
    """A replayed dead letter comes out without its old verdict: the service's own header
    names are written by the service only."""
    old_verdict: list[Header] = [(name, b"old") for name in sorted(SERVICE_HEADERS)]
    (output,) = _classified(
        predictor, [_Record(0, _event("replayed"), [*old_verdict, ("a", b"1")])]
    )
    assert output.headers == [("a", b"1")]


def test_records_without_headers_come_out_without_headers(predictor: Any) -> None:
    (output,) = _classified(predictor, [_Record(0, _event("plain"), [])])
    assert output.headers == []


# -- the trace context, tracing off -------------------------------------------------------


def _outgoing(headers: list[Header], offset: int = 0) -> Outgoing:
    return Outgoing("out", b"k", b"{}", headers, 0, offset, 0)


def test_traceparent_continues_the_trace_with_a_span_of_the_service() -> None:
    stamped = ContinuedTraces(random.Random(7)).stamp(
        [_outgoing(list(PUBLISHER_HEADERS))], started_s=time.monotonic(), topic="articles"
    )
    headers = stamped[0].headers
    parsed = parse_traceparent(dict(headers)["traceparent"])
    assert parsed is not None
    trace_id, span_id, flags = parsed
    assert (trace_id.decode(), flags) == (TRACE_ID, b"01")
    assert span_id.decode() != PRODUCER_SPAN
    assert _without(headers, "traceparent") == _without(PUBLISHER_HEADERS, "traceparent")
    assert [name for name, _ in headers].index("traceparent") == 0, "keeps its place"


@pytest.mark.parametrize(
    "value",
    [
        b"not-a-traceparent",
        b"00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        None,
    ],
)
def test_a_traceparent_that_is_not_valid_w3c_travels_unchanged(value: bytes | None) -> None:
    item = _outgoing([("traceparent", value), ("x", b"1")])
    (stamped,) = ContinuedTraces().stamp([item], started_s=0.0, topic="articles")
    assert stamped.headers == [("traceparent", value), ("x", b"1")]


def test_records_without_a_trace_are_not_given_one_when_tracing_is_off() -> None:
    items = [_outgoing([]), _outgoing([("x", b"1")])]
    stamped = ContinuedTraces().stamp(items, started_s=0.0, topic="articles")
    assert [item.headers for item in stamped] == [[], [("x", b"1")]]


# -- OpenTelemetry ------------------------------------------------------------------------


def _traced() -> tuple[OpenTelemetryTraces, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return OpenTelemetryTraces(provider), exporter


def _span(spans: tuple[ReadableSpan, ...], kind: SpanKind) -> list[ReadableSpan]:
    return [span for span in spans if span.kind is kind]


def test_a_batch_span_links_the_producers_and_each_output_gets_a_child_span() -> None:
    traces, exporter = _traced()
    other = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"
    batch = [
        _outgoing([("traceparent", TRACEPARENT)], offset=0),
        _outgoing([("traceparent", other)], offset=1),
        _outgoing([("x", b"untraced")], offset=2),
    ]
    stamped = traces.stamp(batch, started_s=time.monotonic() - 0.05, topic="articles")
    spans = exporter.get_finished_spans()

    (process,) = _span(spans, SpanKind.CONSUMER)
    assert process.name == "process articles"
    linked = {(link.context.trace_id, link.context.span_id) for link in process.links}
    assert linked == {
        (int(TRACE_ID, 16), int(PRODUCER_SPAN, 16)),
        (0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331),
    }
    assert process.end_time is not None
    assert process.start_time is not None
    assert process.end_time - process.start_time >= 40_000_000, "from the fetch on"

    (publish,) = _span(spans, SpanKind.PRODUCER)  # the unsampled producer's is not recorded
    assert publish.parent is not None
    assert publish.parent.is_remote
    assert (publish.parent.trace_id, publish.parent.span_id) == (
        int(TRACE_ID, 16),
        int(PRODUCER_SPAN, 16),
    )
    assert publish.context.trace_id == int(TRACE_ID, 16)
    assert [link.context.span_id for link in publish.links] == [process.context.span_id]
    first = dict(stamped[0].headers)["traceparent"]
    assert first == f"00-{TRACE_ID}-{publish.context.span_id:016x}-01".encode()
    unsampled = parse_traceparent(dict(stamped[1].headers)["traceparent"])
    assert unsampled is not None
    assert unsampled[0] == b"0af7651916cd43dd8448eb211c80319c"
    assert unsampled[2] == b"00"
    assert unsampled[1] != b"b7ad6b7169203331", "a span id of the service's"
    untraced = parse_traceparent(dict(stamped[2].headers)["traceparent"])
    assert untraced is not None
    assert int(untraced[0], 16) == process.context.trace_id, "the batch's own trace"
    assert dict(stamped[2].headers)["x"] == b"untraced"


@pytest.mark.parametrize(
    ("environ", "on"),
    [
        ({}, False),
        ({"OTEL_TRACES_EXPORTER": "none"}, False),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, True),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_SDK_DISABLED": "true"},
            False,
        ),
    ],
)
def test_the_standard_variables_turn_tracing_on(environ: dict[str, str], on: bool) -> None:
    assert tracing_enabled(environ) is on
    traces = tracing_from_environment(environ)
    try:
        assert isinstance(traces, OpenTelemetryTraces) is on
    finally:
        traces.close()


def test_an_exporter_the_service_lacks_is_a_clear_error() -> None:
    with pytest.raises(TracingConfigError, match="zipkin"):
        tracing_from_environment({"OTEL_TRACES_EXPORTER": "zipkin"})


# -- through a broker, with librdkafka on both sides --------------------------------------


@pytest.mark.kafka
async def test_headers_and_trace_survive_the_service_between_librdkafka_clients(
    broker: EmbeddedBroker, topics: Topics, model_dir: Path, predictor: Any
) -> None:
    records = article_records(6, prefix="hdr")
    records.append((b"broken", b"{not json"))
    bootstrap = broker.bootstrap_servers
    await asyncio.to_thread(
        produce_with_librdkafka, bootstrap, topics.input, records, headers=PUBLISHER_HEADERS
    )
    async with running_service(make_settings(bootstrap, topics, model_dir), predictor):
        outputs, dead = await asyncio.gather(
            asyncio.to_thread(
                consume_with_librdkafka, bootstrap, topics.output, f"{topics.group}-o", 6
            ),
            asyncio.to_thread(
                consume_with_librdkafka, bootstrap, topics.dead_letter, f"{topics.group}-d", 1
            ),
        )

    assert len(outputs) == 6
    assert len(dead) == 1
    spans = set()
    for message in [*outputs, *dead]:
        headers = message.headers()
        parsed = parse_traceparent(dict(headers)["traceparent"])
        assert parsed is not None
        assert parsed[0].decode() == TRACE_ID
        spans.add(parsed[1])
        assert _without(headers, "traceparent")[: len(PUBLISHER_HEADERS) - 1] == _without(
            PUBLISHER_HEADERS, "traceparent"
        )
    assert len(spans) == 7
    assert PRODUCER_SPAN.encode() not in spans
    assert dict(dead[0].headers())["error.reason"] == b"invalid_json"
    assert all(_SPAN_HEX.fullmatch(span.decode()) for span in spans)


def test_serve_refuses_an_unknown_exporter_before_it_starts(tmp_path: Path) -> None:
    """A misspelt ``OTEL_TRACES_EXPORTER`` is a usage error naming it, not a crash."""
    result = subprocess.run(
        [sys.executable, "-m", "service", "serve", "--model", str(tmp_path)],
        env={**os.environ, "OTEL_TRACES_EXPORTER": "jaeger"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "OTEL_TRACES_EXPORTER='jaeger'" in result.stderr
