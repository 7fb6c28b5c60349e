"""What carrying the publisher's headers and continuing its trace cost per record.

Run: ``python benchmarks/bench_trace.py [--batch 256] [--repeat 2000]``. Times, per record
of batches of ``--batch`` outgoing records (best of five runs of ``--repeat`` batches):

- ``carry_none_ns`` / ``carry_headers_ns``: ``service.core.headers.carried`` for a record
  without headers and for one with a ``traceparent``, a ``tracestate`` and two more;
- ``stamp_untraced_ns``: the tracing-off stage (``ContinuedTraces``) on records without
  headers, the common case;
- ``stamp_traced_ns``: the same on records that carry a valid ``traceparent``;
- ``stamp_otel_ns``: tracing on (``OpenTelemetryTraces``, every span sampled, batched as
  the service batches them and handed to the SDK's in-memory exporter: nothing sent),
  traced records; ``stamp_otel_unsampled_ns`` the same for records whose publisher did not
  sample them (W3C flags 00: the default parent-based sampler records no span).

Prints one JSON object; docs/observability.md quotes it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)

from service.core.headers import Header, carried  # noqa: E402
from service.core.records import Outgoing  # noqa: E402
from service.observe.tracing import ContinuedTraces, OpenTelemetryTraces  # noqa: E402

TRACEPARENT = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
HEADERS: list[Header] = [
    ("traceparent", TRACEPARENT),
    ("tracestate", b"vendor=opaque"),
    ("ce_type", b"com.example.article.published"),
    ("x-origin", b"cms-1"),
]


def _best_ns(run: Callable[[], object], records: int, repeat: int) -> float:
    """Nanoseconds per record: the fastest of five runs of ``repeat`` calls."""
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(repeat):
            run()
        best = min(best, time.perf_counter() - started)
    return round(best / repeat / records * 1e9, 1)


def _batch(size: int, headers: list[Header]) -> list[Outgoing]:
    return [Outgoing("out", b"k", b"{}", list(headers), 0, i, 0) for i in range(size)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=2000)
    args = parser.parse_args()
    size, repeat = args.batch, args.repeat
    continued = ContinuedTraces()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(InMemorySpanExporter()))
    traced_otel = OpenTelemetryTraces(provider)
    untraced, traced = _batch(size, []), _batch(size, HEADERS)
    unsampled = _batch(size, [("traceparent", TRACEPARENT[:-2] + b"00"), *HEADERS[1:]])
    start = time.monotonic()
    results = {
        "batch": size,
        "carry_none_ns": _best_ns(lambda: [carried(()) for _ in range(size)], size, repeat),
        "carry_headers_ns": _best_ns(lambda: [carried(HEADERS) for _ in range(size)], size, repeat),
        "stamp_untraced_ns": _best_ns(
            lambda: continued.stamp(untraced, started_s=start, topic="articles"), size, repeat
        ),
        "stamp_traced_ns": _best_ns(
            lambda: continued.stamp(traced, started_s=start, topic="articles"), size, repeat
        ),
        "stamp_otel_ns": _best_ns(
            lambda: traced_otel.stamp(traced, started_s=start, topic="articles"),
            size,
            max(1, repeat // 20),
        ),
        "stamp_otel_unsampled_ns": _best_ns(
            lambda: traced_otel.stamp(unsampled, started_s=start, topic="articles"),
            size,
            max(1, repeat // 20),
        ),
    }
    provider.shutdown()
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
