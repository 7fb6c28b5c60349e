"""The suggest API, POST /v1/classify, served by uvicorn on 127.0.0.1 (no broker here)."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import Broker, article_records, demo_texts, http_get, make_settings, produce, settle
from conftest import Topics as KafkaTopics
from prometheus_client import CollectorRegistry

from schemas import ArticleEvent, Classification, RecordLimits
from schemas.api import ApiError, ClassifyResult
from service.commands.serve import run_service
from service.config.commands import ServeSettings
from service.core.classify import classify_values
from service.core.errors import WorkerUnstableError
from service.core.records import BatchResult, InputRecord, Refused, Topics
from service.http.api import ApiServer, _off_loop_if_large
from service.http.api_request import Events, parse_events, split_list
from service.http.openapi import DOCUMENT, is_stale, render_openapi
from service.models.workers import BatchClassifier, ModelIdentity, ThreadClassifier

TOPICS = Topics("out", "dlq")
JSON = {"Content-Type": "application/json"}


def _event(article_id: str, index: int = 0, **fields: Any) -> dict[str, Any]:
    title, body = demo_texts()[index]
    event = {"article_id": article_id, "event_id": f"e-{article_id}", "title": title, "body": body}
    return event | fields


def _bytes(value: Any) -> bytes:
    return json.dumps(value).encode()


@asynccontextmanager
async def serving(
    classifier: BatchClassifier, model_dir: Path, **settings: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, CollectorRegistry]]:
    """The API on a free 127.0.0.1 port over ``classifier``, and a client for it."""
    registry = CollectorRegistry()
    config = ServeSettings(model=model_dir, api_port=0, **settings)
    async with (
        ApiServer(config, classifier, registry=registry) as server,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", timeout=30) as client,
    ):
        yield client, registry


@pytest.fixture
async def classifier(model_dir: Path, predictor: Any) -> AsyncIterator[ThreadClassifier]:
    """The service's thread classifier over the demo model."""
    made = ThreadClassifier(
        model_dir, topics=TOPICS, max_event_bytes=1024 * 1024, predictor=predictor
    )
    await made.start()
    yield made
    made.close()


def _stream_outcome(value: bytes, predictor: Any, **limits: Any) -> Any:
    (outcome,) = classify_values([value], predictor, max_event_bytes=1024 * 1024, **limits)
    return outcome


def _sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


async def test_one_event_gets_the_streams_classification(
    classifier: ThreadClassifier, model_dir: Path, predictor: Any
) -> None:
    """A single event is answered with one ClassifyResult whose classification is exactly
    what the stream publishes for the same bytes (same model, same version)."""
    value = _bytes(_event("cms-1", desk="economics"))
    async with serving(classifier, model_dir) as (client, registry):
        response = await client.post("/v1/classify", content=value, headers=JSON)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    result = ClassifyResult.model_validate_json(response.content)
    assert (result.article_id, result.event_id) == ("cms-1", "e-cms-1")
    stream = json.loads(_stream_outcome(value, predictor).value)
    assert result.classification == Classification.model_validate(stream["classification"])
    assert result.classification.model.version == predictor.version
    assert set(response.json()) == {"article_id", "event_id", "classification", "classified_at"}
    assert _sample(registry, "article_classifier_api_requests_total", code="200") == 1
    assert _sample(registry, "article_classifier_api_events_total", outcome="classified") == 1
    assert _sample(registry, "article_classifier_api_request_duration_seconds_count") == 1


async def test_a_list_is_answered_in_order(
    classifier: ThreadClassifier, model_dir: Path, predictor: Any
) -> None:
    """A list of events (with whitespace and an unknown field) is answered with a list of
    results in the same order, each the stream's classification of that event."""
    events = [_event(f"cms-{i}", i, desk=[i, {"x": None}]) for i in range(7)]
    body = b" [\n" + b" ,\n ".join(_bytes(e) for e in events) + b"\n] "
    async with serving(classifier, model_dir) as (client, _):
        response = await client.post("/v1/classify", content=body, headers=JSON)
    assert response.status_code == 200, response.text
    results = [ClassifyResult.model_validate(item) for item in response.json()]
    assert [r.article_id for r in results] == [e["article_id"] for e in events]
    for event, result in zip(events, results, strict=True):
        stream = json.loads(_stream_outcome(_bytes(event), predictor).value)
        assert result.classification.model_dump() == stream["classification"]


@pytest.mark.parametrize(
    ("value", "reason", "field"),
    [
        (_bytes({"article_id": "a", "title": " ", "body": ""}), "schema_violation", None),
        (_bytes({"article_id": "a", "title": "t", "published_at": "2026-11-20"}),
         "schema_violation", "published_at"),
        (_bytes({"article_id": 7, "title": "t"}), "schema_violation", "article_id"),
        (_bytes({"article_id": "a", "title": "t", "classification": {}}), "schema_violation", None),
        (_bytes({"article_id": "a", "title": "t" * 2001}), "too_large", "title"),
        (b'{"article_id": "a", "title": "t", "n": 1e999}', "schema_violation", "n"),
        (b'{"article_id": "a", "title": "\xff"}', "invalid_utf8", None),
        (b'{"article_id": "a", "title": "t"', "invalid_json", None),
        (b'"just a string"', "schema_violation", None),
    ],
)  # fmt: skip
async def test_an_invalid_event_is_422_with_its_dead_letters_reason_and_message(
    classifier: ThreadClassifier,
    model_dir: Path,
    predictor: Any,
    value: bytes,
    reason: str,
    field: str | None,
) -> None:
    """A refused event is answered 422 with the reason and the exact message the stream's
    dead letter carries for the same bytes, and the field when one is named."""
    stream = _stream_outcome(value, predictor)
    assert isinstance(stream, Refused)
    async with serving(classifier, model_dir) as (client, registry):
        response = await client.post("/v1/classify", content=value, headers=JSON)
    assert response.status_code == 422, response.text
    (problem,) = ApiError.model_validate_json(response.content).errors
    assert (problem.reason.value, problem.message) == (stream.reason.value, stream.message)
    assert (problem.index, problem.field) == (None, field)
    assert _sample(registry, "article_classifier_api_events_total", outcome=reason) == 1


async def test_the_streams_caps_apply_as_configured(
    classifier: ThreadClassifier, model_dir: Path, predictor: Any
) -> None:
    """--max-title-chars, --max-fields and --max-event-bytes of serve apply to the API."""
    limits = {"max_title_chars": 10, "max_fields": 20, "max_event_bytes": 5000}
    cases = [
        _bytes({"article_id": "a", "title": "eleven char"}),
        _bytes({"article_id": "a", "title": "t", "tags": list(range(30))}),
        _bytes({"article_id": "a", "title": "t", "body": "b" * 5000}),
    ]
    async with serving(classifier, model_dir, **limits) as (client, _):
        for value in cases:
            response = await client.post("/v1/classify", content=value, headers=JSON)
            assert response.status_code == 422, response.text
            (problem,) = response.json()["errors"]
            assert problem["reason"] == "too_large"
            assert "over the limit" in problem["message"] or "limit of" in problem["message"]


async def test_a_list_with_bad_events_names_each_by_index(
    classifier: ThreadClassifier, model_dir: Path
) -> None:
    """A list is all or nothing: every refused event is named by its index and field."""
    events = [_event("ok-0"), {"article_id": "x", "title": "t", "url": 5}, _event("ok-2"), 3]
    async with serving(classifier, model_dir) as (client, _):
        response = await client.post("/v1/classify", content=_bytes(events), headers=JSON)
    assert response.status_code == 422
    problems = response.json()["errors"]
    assert [(p["index"], p["field"], p["reason"]) for p in problems] == [
        (1, "url", "schema_violation"),
        (3, None, "schema_violation"),
    ]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"[]", "schema_violation"),
        (b"[" + b",".join([_bytes(_event("a"))] * 257) + b"]", "too_many_events"),
        (b"[" + _bytes(_event("a")) + b",]", "invalid_json"),
        (b"[" + _bytes(_event("a")), "invalid_json"),
        (b"[" + _bytes(_event("a")) + b"] []", "invalid_json"),
        (b"[" + _bytes(_event("a")) + b"}", "invalid_json"),
    ],
)
async def test_a_malformed_list_is_422_for_the_request(
    classifier: ThreadClassifier, model_dir: Path, body: bytes, reason: str
) -> None:
    """An empty list, more than 256 events or a broken list structure is refused whole."""
    async with serving(classifier, model_dir) as (client, _):
        response = await client.post("/v1/classify", content=body, headers=JSON)
    assert response.status_code == 422
    (problem,) = response.json()["errors"]
    assert (problem["reason"], problem["index"]) == (reason, None)


async def test_request_size_and_content_type_limits(
    classifier: ThreadClassifier, model_dir: Path
) -> None:
    """Over --api-max-request-bytes is 413 whether the length is declared or the body is
    chunked; a missing or non-JSON Content-Type, or a charset other than UTF-8, is 415."""
    big = _bytes(_event("a", body="word " * 600))
    async with serving(classifier, model_dir, api_max_request_bytes=2048) as (client, _):
        declared = await client.post("/v1/classify", content=big, headers=JSON)
        assert declared.status_code == 413
        assert declared.json()["errors"][0]["reason"] == "request_too_large"

        async def chunks() -> AsyncIterator[bytes]:
            for start in range(0, len(big), 500):
                yield big[start : start + 500]

        chunked = await client.post("/v1/classify", content=chunks(), headers=JSON)
        assert chunked.status_code == 413
        huge = await client.post("/v1/classify", content=b"x" * 20_000, headers=JSON)
        assert huge.status_code == 413
        assert huge.headers["connection"] == "close"
        small = _bytes(_event("a", body="short"))
        for content_type in (None, "text/plain", "application/x-www-form-urlencoded",
                             "application/json; charset=latin-1"):  # fmt: skip
            headers = {} if content_type is None else {"Content-Type": content_type}
            response = await client.post("/v1/classify", content=small, headers=headers)
            assert response.status_code == 415, content_type
            assert response.json()["errors"][0]["reason"] == "unsupported_media_type"
        ok = await client.post(
            "/v1/classify",
            content=small,
            headers={"Content-Type": "Application/JSON; charset=UTF-8"},
        )
        assert ok.status_code == 200


async def test_explain_is_honoured_per_request_and_validated(
    classifier: ThreadClassifier, model_dir: Path, predictor: Any
) -> None:
    """explain=0 (the default) gives no explanations; explain=K gives exactly the K terms the
    model computes for that article (as the stream's --explain K would); anything but an
    integer from 0 to 50 is 422 invalid_parameter."""
    value = _bytes(_event("a"))
    async with serving(classifier, model_dir) as (client, _):
        plain = await client.post("/v1/classify?explain=0", content=value, headers=JSON)
        assert plain.is_success
        assert "explanations" not in plain.json()["classification"]
        answer = await client.post("/v1/classify?explain=3", content=value, headers=JSON)
        assert answer.status_code == 200
        explained = answer.json()["classification"]["explanations"]
        (expected,) = classify_values([value], predictor, max_event_bytes=1024 * 1024, explain=3)
        assert not isinstance(expected, Refused)
        stream = json.loads(expected.value)["classification"]["explanations"]
        assert explained == stream
        assert 0 < len(explained["section"]["terms"]) <= 3
        for bad in ("-1", "x", "51", "1.5", ""):
            answer = await client.post(f"/v1/classify?explain={bad}", content=value, headers=JSON)
            assert answer.status_code == 422, bad
            assert answer.json()["errors"][0] == {
                "reason": "invalid_parameter",
                "message": answer.json()["errors"][0]["message"],
                "index": None,
                "field": "explain",
            }


class _Gated:
    """A classifier that holds every batch in a worker thread until released."""

    def __init__(self, inner: BatchClassifier) -> None:
        self.inner = inner
        self.entered = asyncio.Event()
        self.release = threading.Event()

    async def start(self) -> ModelIdentity:
        return await self.inner.start()

    async def classify(
        self, records: Sequence[InputRecord], *, explain: int | None = None
    ) -> BatchResult:
        self.entered.set()
        await asyncio.to_thread(self.release.wait, 30)
        return await self.inner.classify(records)

    def close(self) -> None:
        self.inner.close()


async def test_over_the_concurrency_limit_is_429_while_the_loop_stays_responsive(
    classifier: ThreadClassifier, model_dir: Path
) -> None:
    """With --api-max-concurrency requests being classified (off the loop), the next one is
    answered 429 with Retry-After at once; the held ones then complete."""
    gated = _Gated(classifier)
    value = _bytes(_event("a"))
    async with serving(gated, model_dir, api_max_concurrency=2) as (client, registry):
        held = [
            asyncio.create_task(client.post("/v1/classify", content=value, headers=JSON))
            for _ in range(2)
        ]
        await asyncio.wait_for(gated.entered.wait(), 10)
        await _until_in_flight(registry, 2)
        refused = await client.post("/v1/classify", content=value, headers=JSON)
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "1"
        assert refused.json()["errors"][0]["reason"] == "over_capacity"
        assert (await client.get("/openapi.json")).status_code == 200
        gated.release.set()
        assert [r.status_code for r in await asyncio.gather(*held)] == [200, 200]
        assert (await client.post("/v1/classify", content=value, headers=JSON)).is_success
    assert _sample(registry, "article_classifier_api_requests_total", code="429") == 1


async def _until_in_flight(registry: CollectorRegistry, count: int) -> None:
    for _ in range(1000):
        if _sample(registry, "article_classifier_api_requests_in_flight") >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("requests did not reach the classifier")


class _FailingPredictor:
    """The demo model, except that it raises on any article titled 'boom'."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.name, self.version = inner.name, inner.version

    def predict(self, articles: Sequence[ArticleEvent]) -> list[Classification]:
        if any(article.title == "boom" for article in articles):
            raise ValueError("the model broke")
        result: list[Classification] = self._inner.predict(articles)
        return result


async def test_a_model_failure_is_500_naming_the_event_and_never_its_text(
    model_dir: Path, predictor: Any
) -> None:
    """An event the model fails on is answered 500 classification_error with its index
    and the stream's message (exception type only), the others of the list are unaffected
    in a later request."""
    failing = ThreadClassifier(
        model_dir,
        topics=TOPICS,
        max_event_bytes=1024 * 1024,
        predictor=_FailingPredictor(predictor),
    )
    await failing.start()
    events = [_event("fine"), {"article_id": "bad", "title": "boom"}]
    try:
        async with serving(failing, model_dir) as (client, _):
            response = await client.post("/v1/classify", content=_bytes(events), headers=JSON)
            assert response.status_code == 500
            (problem,) = response.json()["errors"]
            assert problem["reason"] == "classification_error"
            assert problem["index"] == 1
            assert problem["message"] == "the model failed on this article (ValueError)"
            fine = await client.post("/v1/classify", content=_bytes(events[:1]), headers=JSON)
            assert fine.status_code == 200
    finally:
        failing.close()


class _Unstable:
    """A classifier whose worker keeps dying."""

    async def start(self) -> ModelIdentity:
        return ModelIdentity("x", "1")

    async def classify(
        self, records: Sequence[InputRecord], *, explain: int | None = None
    ) -> BatchResult:
        raise WorkerUnstableError("the classification worker died on 3 articles in a row")

    def close(self) -> None:
        pass


class _Broken(_Unstable):
    async def classify(
        self, records: Sequence[InputRecord], *, explain: int | None = None
    ) -> BatchResult:
        raise RuntimeError("unexpected")


async def test_an_unstable_worker_is_503_and_an_unexpected_error_500(model_dir: Path) -> None:
    """A dying worker answers 503 with Retry-After; any other failure a JSON 500, and the
    server goes on serving."""
    value = _bytes(_event("a"))
    async with serving(_Unstable(), model_dir) as (client, _):
        response = await client.post("/v1/classify", content=value, headers=JSON)
        assert response.status_code == 503
        assert response.headers["retry-after"] == "5"
        assert response.json()["errors"][0]["reason"] == "unavailable"
    async with serving(_Broken(), model_dir) as (client, _):
        for _ in range(2):
            response = await client.post("/v1/classify", content=value, headers=JSON)
            assert response.status_code == 500
            assert response.json()["errors"][0] == {
                "reason": "internal_error",
                "message": "the request failed inside the service (RuntimeError)",
                "index": None,
                "field": None,
            }


async def test_unknown_paths_and_methods_are_json_errors(
    classifier: ThreadClassifier, model_dir: Path
) -> None:
    """404 and 405 on the API port use the API's error body; 405 names the allowed method;
    GET /openapi.json serves the checked-in document."""
    async with serving(classifier, model_dir) as (client, _):
        missing = await client.post("/v1/classify/", content=b"{}", headers=JSON)
        assert missing.status_code == 404
        assert missing.json()["errors"][0]["reason"] == "not_found"
        wrong = await client.get("/v1/classify")
        assert wrong.status_code == 405
        assert wrong.headers["allow"] == "POST"
        assert wrong.json()["errors"][0]["reason"] == "method_not_allowed"
        document = await client.get("/openapi.json")
        assert document.status_code == 200
        assert document.text == DOCUMENT.read_text("utf-8")


def test_the_openapi_document_is_checked_in_and_current() -> None:
    """schemas/openapi/classify-api.v1.json is what the models render (run `make schemas`)."""
    assert not is_stale()
    document = json.loads(render_openapi())
    assert document["openapi"].startswith("3.1")
    operation = document["paths"]["/v1/classify"]["post"]
    assert set(operation["responses"]) == {"200", "401", "413", "415", "422", "429", "500", "503"}
    event_schema = document["components"]["schemas"]["ArticleEvent"]
    assert event_schema["required"] == ["article_id"]


def test_the_api_port_must_differ_from_the_metrics_port(model_dir: Path) -> None:
    """Configuring both servers on one port is refused with both options named."""
    with pytest.raises(ValueError, match="--api-port=9108 must differ from --metrics-port=9108"):
        ServeSettings(model=model_dir, api_port=9108)


@pytest.mark.kafka
async def test_the_running_service_serves_the_api_with_the_streams_model_while_it_flows(
    broker: Broker, topics: KafkaTopics, model_dir: Path, predictor: Any
) -> None:
    """With --api-port, serve answers API requests while the stream classifies the same
    events: every API classification equals the stream's output for that article, the API
    counters show on /metrics, and the service stops cleanly (exit 0)."""
    settings = make_settings(broker.bootstrap_servers, topics, model_dir, api_port=0)
    records = article_records(60, prefix="both")
    values = [value for _, value in records if value is not None]
    stop = asyncio.Event()
    registry = CollectorRegistry()
    loop = asyncio.get_running_loop()
    # A client that keeps within --api-max-concurrency, as a CMS would.
    room = asyncio.Semaphore(settings.api_max_concurrency)

    async def post(client: httpx.AsyncClient, value: bytes) -> httpx.Response:
        async with room:
            return await client.post("/v1/classify", content=value, headers=JSON)

    metrics_port: asyncio.Future[int] = loop.create_future()
    api_port: asyncio.Future[int] = loop.create_future()
    service = asyncio.create_task(
        run_service(
            settings,
            predictor=predictor,
            stop=stop,
            registry=registry,
            http_port=metrics_port,
            api_port=api_port,
        )
    )
    try:
        await asyncio.wait({service, api_port}, return_when=asyncio.FIRST_COMPLETED)
        assert not service.done(), service
        produced = asyncio.create_task(produce(broker.bootstrap_servers, topics.input, records))
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{api_port.result()}", timeout=30
        ) as client:
            answers = await asyncio.gather(*(post(client, value) for value in values))
            batch = await client.post(
                "/v1/classify", content=b"[" + b",".join(values[:5]) + b"]",
                headers=JSON,
            )  # fmt: skip
        await produced
        outputs = await settle(broker.bootstrap_servers, topics.output, len(records))
        status, text = await http_get(metrics_port.result(), "/metrics")
    finally:
        stop.set()
        exit_code = await asyncio.wait_for(service, 60)
    assert exit_code == 0
    assert all(answer.status_code == 200 for answer in answers), answers
    assert [item["article_id"] for item in batch.json()] == [f"both-{i}" for i in range(5)]
    by_article = {json.loads(o.value)["article_id"]: json.loads(o.value) for o in outputs}
    assert len(by_article) == len(records)
    for answer in answers:
        result = answer.json()
        assert result["classification"] == by_article[result["article_id"]]["classification"]
    assert status == 200
    assert 'article_classifier_api_requests_total{code="200"} 61.0' in text
    assert 'article_classifier_api_events_total{outcome="classified"} 65.0' in text


async def test_large_bodies_are_cut_and_rendered_off_the_event_loop() -> None:
    """Work on a body over 32 KiB runs in a worker thread; a small one runs inline."""
    loop_thread = threading.get_ident()
    assert await _off_loop_if_large(100, threading.get_ident) == loop_thread
    assert await _off_loop_if_large(64 * 1024, threading.get_ident) != loop_thread


def test_a_list_is_cut_at_its_own_commas_only() -> None:
    """Commas, brackets, braces and escaped quotes inside strings (and nested values) never
    cut an event: each event comes out as the exact bytes sent."""
    events = [
        b'{"article_id": "a,[{", "title": "say \\"x, y\\" ] } \\\\", "n": [1, {"k": ",]"}]}',
        b'{"article_id": "b", "title": "\\u005d, \\\\\\" ,"}',
        b'{"article_id": "c", "title": "\xc3\xa9t\xc3\xa9, \xe2\x80\xa8"}',
    ]
    body = b"[\n\t" + b" ,\r\n".join(events) + b"\n]"
    assert split_list(body, 256) == events
    parsed = parse_events(body, max_event_bytes=1024, limits=RecordLimits())
    assert isinstance(parsed, Events)
    assert parsed.values == events
