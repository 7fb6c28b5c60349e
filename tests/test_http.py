"""The metrics port on uvicorn + Starlette: exact endpoints, methods, lifecycle (no broker)."""

from __future__ import annotations

import asyncio
import json
import signal
import socket

import httpx
import pytest
from conftest import http_get, wait_for
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from service.http.server import HealthServer, HttpServer
from service.observe.health import Assignment, Health


def _ready_health() -> Health:
    return Health(model_loaded=True, broker_reachable=True, assignment=Assignment.ASSIGNED)


async def test_metrics_health_and_readiness_answer_as_before() -> None:
    """/metrics is the Prometheus text of the registry; /healthz and /readyz are the JSON
    reports with 200 or 503; every response closes its connection."""
    registry = CollectorRegistry()
    Counter("probe_total", "A probe counter.", registry=registry).inc(3)
    health = Health()
    async with HealthServer("127.0.0.1", 0, registry=registry, health=health) as server:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
            metrics = await client.get("/metrics")
            assert metrics.status_code == 200
            assert metrics.headers["content-type"] == CONTENT_TYPE_LATEST
            assert "probe_total 3.0" in metrics.text
            assert metrics.headers["connection"] == "close"
            ready = await client.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["failing"] == [
                "model_loaded",
                "broker_reachable",
                "consumer_in_group",
            ]
            assert ready.text.endswith("}\n")
            assert ready.headers["content-type"] == "application/json"
            alive = await client.get("/healthz")
            assert (alive.status_code, alive.json()) == (200, {"alive": True, "reason": None})
        health.model_loaded = health.broker_reachable = True
        health.assignment = Assignment.ASSIGNED
        status, body = await http_get(server.port, "/readyz?verbose=1")
        assert status == 200
        assert json.loads(body)["ready"] is True


async def test_head_unknown_paths_and_wrong_methods() -> None:
    """HEAD answers like GET without a body; unknown paths (a trailing slash included) are
    404; any method but GET and HEAD is 405 and names the allowed ones."""
    registry = CollectorRegistry()
    Counter("probe_total", "A probe counter.", registry=registry).inc()
    async with HealthServer("127.0.0.1", 0, registry=registry, health=_ready_health()) as server:  # noqa: SIM117 - the client needs the port
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
            for path in ("/metrics", "/healthz", "/readyz"):
                head = await client.head(path)
                assert head.status_code == 200, path
                assert head.content == b""
                assert int(head.headers["content-length"]) > 0
            for path in ("/nope", "/metrics/", "/", "/healthz/x"):
                assert (await client.get(path)).status_code == 404, path
            for method in ("POST", "PUT", "DELETE", "PATCH"):
                response = await client.request(method, "/metrics")
                assert response.status_code == 405, method
                assert "GET" in response.headers["allow"]


async def test_a_garbage_request_gets_400_and_the_server_keeps_serving() -> None:
    """Bytes that are not HTTP are answered 400 by the HTTP stack, not by our code, and the
    next request is served."""
    async with HealthServer(
        "127.0.0.1", 0, registry=CollectorRegistry(), health=_ready_health()
    ) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"\x00\x01 not http at all\r\n\r\n")
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        await writer.wait_closed()
        assert raw.startswith(b"HTTP/1.1 400")
        assert (await http_get(server.port, "/healthz"))[0] == 200


async def test_a_port_in_use_fails_at_start_with_oserror() -> None:
    """Binding a taken port raises OSError from ``async with`` (no SystemExit from inside
    the HTTP stack), so the service fails at start with a clear error."""
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        server = HealthServer("127.0.0.1", port, registry=CollectorRegistry(), health=Health())
        with pytest.raises(OSError, match="in use"):
            async with server:
                pass


async def test_the_servers_leave_the_services_signal_handlers_alone() -> None:
    """Starting and stopping a server neither replaces nor restores SIGTERM/SIGINT handlers:
    the service's own stop request must keep working."""
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    async with HealthServer(
        "127.0.0.1", 0, registry=CollectorRegistry(), health=Health()
    ) as server:
        during = {sig: signal.getsignal(sig) for sig in before}
        assert (await http_get(server.port, "/healthz"))[0] == 200
    assert during == before
    assert {sig: signal.getsignal(sig) for sig in before} == before


async def test_stopping_lets_an_in_flight_request_finish_and_refuses_new_connections() -> None:
    """A graceful stop closes the port at once but still answers the request in flight."""
    entered = asyncio.Event()
    release = asyncio.Event()

    async def slow(_: Request) -> Response:
        entered.set()
        await release.wait()
        return Response(b"done")

    server = HttpServer(Starlette(routes=[Route("/slow", slow)]), "127.0.0.1", 0, name="test")
    await server.__aenter__()
    port = server.port
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        request = asyncio.create_task(client.get("/slow"))
        await asyncio.wait_for(entered.wait(), 10)
        stopping = asyncio.create_task(server.__aexit__(None, None, None))

        async def refused() -> bool:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                return True
            writer.close()
            return False

        await wait_for(refused, timeout_s=10)
        assert not request.done()
        release.set()
        response = await asyncio.wait_for(request, 10)
        await asyncio.wait_for(stopping, 15)
    assert (response.status_code, response.text) == (200, "done")
