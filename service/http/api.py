"""The suggest API: ``POST /v1/classify`` for a CMS, on a port of its own.

A request carries one ``ArticleEvent`` or a JSON list of up to 256. Each event is validated
exactly as the stream validates a record (``decode_article`` with the same caps, so a 422
carries the message its dead letter would), then the batch is classified by the service's
own ``BatchClassifier``: the model the stream uses, in its worker thread or process, so the
event loop only moves bytes and a model swapped in the classifier serves both. Cutting a
list into events and rendering the answer run in a thread too (``asyncio.to_thread``), unless
the body is small (32 KiB: a typical article takes tens of microseconds, less than the hop).

Limits: ``--api-max-request-bytes`` (413), ``--api-max-concurrency`` requests at once (429
beyond, with ``Retry-After``), ``Content-Type: application/json`` (415). Every error body is
``schemas.api.ApiError``; the OpenAPI document (``service.http.openapi``) describes it all.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from pydantic_core import from_json, to_json
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from schemas import RecordLimits
from schemas.api import MAX_EXPLAIN, ApiError, ApiErrorReason, ApiProblem
from service.config.commands import ServeSettings
from service.core.errors import WorkerUnstableError
from service.core.headers import Header
from service.core.records import Outgoing
from service.http.api_request import Events, parse_events
from service.http.openapi import CLASSIFY_PATH, OPENAPI_PATH, render_openapi
from service.http.server import HttpServer
from service.models.workers import BatchClassifier

logger = logging.getLogger(__name__)

#: Where API records say they came from (the classifier's log lines name it).
API_SOURCE = "http:" + CLASSIFY_PATH
_PREFIX = "article_classifier_api"
_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_RETRY_AFTER_S = "1"
#: Open connections (idle keep-alive ones included) before uvicorn answers 503 itself.
_MAX_CONNECTIONS = 512
_GRACEFUL_STOP_S = 10.0
_DRAIN_FACTOR = 4
#: Bodies up to this size are cut and validated, and answers rendered, on the loop.
_INLINE_BYTES = 32 * 1024
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class ApiLimits:
    """What one request may hold and how many are handled at once."""

    max_request_bytes: int
    max_concurrency: int
    max_event_bytes: int
    record_limits: RecordLimits
    #: Largest ``explain`` this service can honour: 0 while the model gives no explanations.
    max_explain: int = 0

    @classmethod
    def from_settings(cls, settings: ServeSettings) -> ApiLimits:
        return cls(
            max_request_bytes=settings.api_max_request_bytes,
            max_concurrency=settings.api_max_concurrency,
            max_event_bytes=settings.max_event_bytes,
            record_limits=settings.record_limits,
            max_explain=MAX_EXPLAIN,
        )


class ApiMetrics:
    """The API's metrics, registered in ``registry`` beside the stream's."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            f"{_PREFIX}_requests_total",
            "Suggest-API requests answered, by HTTP status code.",
            ["code"],
            registry=registry,
        )
        self.duration = Histogram(
            f"{_PREFIX}_request_duration_seconds",
            "Time to answer a POST /v1/classify request, body read to response built.",
            buckets=_SECONDS_BUCKETS,
            registry=registry,
        )
        self.events = Counter(
            f"{_PREFIX}_events_total",
            "Events received by the API: classified, or the reason they were refused.",
            ["outcome"],
            registry=registry,
        )
        self.in_flight = Gauge(
            f"{_PREFIX}_requests_in_flight",
            "Suggest-API requests being handled now.",
            registry=registry,
        )


@dataclass(frozen=True, slots=True)
class _ApiRecord:
    """An event of a request in the shape the classifier reads (``InputRecord``)."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: tuple[Header, ...] = ()


class ClassifyApi:
    """The Starlette app of the API port and the state its limits need."""

    def __init__(
        self, classifier: BatchClassifier, *, limits: ApiLimits, metrics: ApiMetrics
    ) -> None:
        self._classifier = classifier
        self._limits = limits
        self._metrics = metrics
        self._in_flight = 0

    def app(self) -> Starlette:
        document = render_openapi().encode()

        async def openapi(_: Request) -> Response:
            return Response(document, media_type="application/json")

        app = Starlette(
            routes=[
                Route(CLASSIFY_PATH, self.classify, methods=["POST"]),
                Route(OPENAPI_PATH, openapi, methods=["GET"]),
            ],
            exception_handlers={HTTPException: _http_error},  # type: ignore[dict-item]
        )
        app.router.redirect_slashes = False
        return app

    async def classify(self, request: Request) -> Response:
        """``POST /v1/classify``: bounded, validated, classified off the loop."""
        started = time.perf_counter()
        if self._in_flight >= self._limits.max_concurrency:
            response = _error(
                429,
                ApiErrorReason.OVER_CAPACITY,
                f"{self._in_flight} requests are being handled, the most at once "
                f"(--api-max-concurrency); retry shortly",
                headers={"Retry-After": _RETRY_AFTER_S},
            )
        else:
            self._in_flight += 1
            self._metrics.in_flight.inc()
            try:
                response = await self._handle(request)
            except Exception as error:
                logger.exception("api request failed", extra={"error": repr(error)})
                response = _error(
                    500,
                    ApiErrorReason.INTERNAL_ERROR,
                    f"the request failed inside the service ({type(error).__name__})",
                )
            finally:
                self._in_flight -= 1
                self._metrics.in_flight.dec()
        self._metrics.requests.labels(str(response.status_code)).inc()
        self._metrics.duration.observe(time.perf_counter() - started)
        return response

    async def _handle(self, request: Request) -> Response:
        refused = _media_type_problem(request.headers.get("content-type"))
        if refused is not None:
            return _error(415, ApiErrorReason.UNSUPPORTED_MEDIA_TYPE, refused)
        explain = _explain(request.query_params.get("explain"), self._limits.max_explain)
        if isinstance(explain, ApiProblem):
            return _errors(422, [explain])
        body = await _read_body(request, self._limits.max_request_bytes)
        if isinstance(body, _TooLarge):
            return _error(
                413,
                ApiErrorReason.REQUEST_TOO_LARGE,
                f"the request body is over the limit of {self._limits.max_request_bytes} bytes "
                "(--api-max-request-bytes)",
                headers=None if body.drained else {"Connection": "close"},
            )
        parsed = await _off_loop_if_large(
            len(body),
            functools.partial(
                parse_events,
                body,
                max_event_bytes=self._limits.max_event_bytes,
                limits=self._limits.record_limits,
            ),
        )
        if not isinstance(parsed, Events):
            for problem in parsed:
                self._metrics.events.labels(problem.reason.value).inc()
            return _errors(422, parsed)
        return await self._classified(parsed, explain)

    async def _classified(self, events: Events, explain: int) -> Response:
        now_ms = int(time.time() * 1000)
        records = [
            _ApiRecord(API_SOURCE, 0, index, now_ms, None, value)
            for index, value in enumerate(events.values)
        ]
        try:
            result = await self._classifier.classify(records, explain=explain)
        except WorkerUnstableError as error:
            return _error(503, ApiErrorReason.UNAVAILABLE, str(error), {"Retry-After": "5"})
        size = sum(len(record.value or b"") for record in result.outgoing)
        rendered = await _off_loop_if_large(
            size, functools.partial(_render, result.outgoing, events.single)
        )
        if isinstance(rendered, bytes):
            self._metrics.events.labels("classified").inc(len(records))
            return Response(rendered, media_type="application/json")
        for problem in rendered:
            self._metrics.events.labels(problem.reason.value).inc()
        server_side = any(p.reason is ApiErrorReason.CLASSIFICATION_ERROR for p in rendered)
        return _errors(500 if server_side else 422, rendered)


async def _off_loop_if_large(size: int, work: Callable[[], _T]) -> _T:
    """Run ``work`` on ``size`` bytes in a thread, or inline when it is small: a thread hop
    costs more than parsing a typical article (a few KiB: tens of microseconds) and, with
    the GIL contended by the classifier, can wait a whole switch interval (5 ms)."""
    if size <= _INLINE_BYTES:
        return work()
    return await asyncio.to_thread(work)


def _render(outgoing: Sequence[Outgoing], single: bool) -> bytes | list[ApiProblem]:
    """The response body (one result, or a list in order), or the events that failed."""
    results: list[dict[str, object]] = []
    problems: list[ApiProblem] = []
    for index, record in enumerate(outgoing):
        if record.reason is not None:
            headers = dict(record.headers)
            problems.append(
                ApiProblem(
                    reason=_reason(record.reason.value),
                    message=(headers.get("error.message") or b"").decode("utf-8", "replace"),
                    index=None if single else index,
                )
            )
            continue
        event = from_json(record.value or b"", cache_strings=False)
        results.append(
            {
                "article_id": event["article_id"],
                "event_id": event.get("event_id"),
                "classification": event["classification"],
                "classified_at": event["classified_at"],
            }
        )
    if problems:
        return problems
    return to_json(results[0] if single else results)


def _reason(value: str) -> ApiErrorReason:
    try:
        return ApiErrorReason(value)
    except ValueError:
        return ApiErrorReason.CLASSIFICATION_ERROR


def _media_type_problem(content_type: str | None) -> str | None:
    """Why the Content-Type is refused, or None for JSON in UTF-8."""
    expected = "send the events as JSON with Content-Type: application/json"
    if not content_type:
        return f"the request has no Content-Type: {expected}"
    media_type, *parameters = (part.strip() for part in content_type.split(";"))
    if media_type.lower() != "application/json":
        return f"Content-Type {media_type[:100]!r} is not supported: {expected}"
    for parameter in parameters:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() != "utf-8":
            return f"charset {value.strip()[:40]!r} is not supported: the body must be UTF-8"
    return None


def _explain(value: str | None, max_explain: int) -> int | ApiProblem:
    """The ``explain`` query parameter: terms per label, 0 (the default) for none."""
    if value is None:
        return 0
    if not (value.isascii() and value.isdigit()) or int(value) > MAX_EXPLAIN:
        return ApiProblem(
            reason=ApiErrorReason.INVALID_PARAMETER,
            message=f"explain: must be an integer from 0 to {MAX_EXPLAIN}, got {value[:40]!r}",
            field="explain",
        )
    explain = int(value)
    if explain > max_explain:
        return ApiProblem(
            reason=ApiErrorReason.EXPLANATIONS_UNAVAILABLE,
            message="explain: explanations are not available from this service's model; "
            f"explain must be at most {max_explain}",
            field="explain",
        )
    return explain


async def _read_body(request: Request, limit: int) -> bytes | _TooLarge:
    """The whole body, or why not: it is (or is declared to be) over ``limit`` bytes.

    An oversize body is read on, discarded, up to ``_DRAIN_FACTOR`` times the limit: a
    client still sending when the 413 comes would otherwise see its connection reset
    instead of the answer. Beyond that (or declared beyond it) the connection is closed.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit * _DRAIN_FACTOR:
        return _TooLarge(drained=False)
    body = bytearray()
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received <= limit:
            body += chunk
        elif received > limit * _DRAIN_FACTOR:
            return _TooLarge(drained=False)
    return bytes(body) if received <= limit else _TooLarge(drained=True)


@dataclass(frozen=True, slots=True)
class _TooLarge:
    #: True when the whole body was read, so the connection can be kept.
    drained: bool


def _error(
    status: int, reason: ApiErrorReason, message: str, headers: dict[str, str] | None = None
) -> Response:
    return _errors(status, [ApiProblem(reason=reason, message=message)], headers)


def _errors(
    status: int, problems: list[ApiProblem], headers: dict[str, str] | None = None
) -> Response:
    body = ApiError(errors=problems).model_dump_json().encode()
    return Response(body, status, headers=headers, media_type="application/json")


_HTTP_REASONS = {404: ApiErrorReason.NOT_FOUND, 405: ApiErrorReason.METHOD_NOT_ALLOWED}


async def _http_error(request: Request, error: HTTPException) -> Response:
    reason = _HTTP_REASONS.get(error.status_code, ApiErrorReason.INVALID_PARAMETER)
    message = f"{request.method} {request.url.path[:200]}: {error.detail}"
    return _error(error.status_code, reason, message, dict(error.headers or {}))


class ApiServer(HttpServer):
    """The API port: ``async with`` starts and stops it."""

    def __init__(
        self,
        settings: ServeSettings,
        classifier: BatchClassifier,
        *,
        registry: CollectorRegistry,
        limits: ApiLimits | None = None,
    ) -> None:
        if settings.api_port is None:
            raise ValueError("the API is off: no api_port")
        api = ClassifyApi(
            classifier,
            limits=limits or ApiLimits.from_settings(settings),
            metrics=ApiMetrics(registry),
        )
        super().__init__(
            api.app(),
            settings.api_host,
            settings.api_port,
            name="api",
            graceful_timeout_s=_GRACEFUL_STOP_S,
            max_connections=_MAX_CONNECTIONS,
        )
