"""The metrics port: ``/metrics``, ``/healthz`` and ``/readyz``.

``HealthServer`` serves them. Answering at all proves the loop is responsive
(classification runs in a worker process or thread and never blocks it); ``/healthz``
answers 503 with the reason when the watchdog found a batch stuck past
``--batch-timeout-s``, so an orchestrator restarts the process. GET and HEAD only (405
otherwise), 404 for any other path, and every response closes its connection, as probes
and scrapers expect of this port. The server itself is ``service.web.server.HttpServer``.
"""

from __future__ import annotations

import json

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

from service.observe.health import Health
from service.web.server import CloseConnection, HttpServer

__all__ = ["CloseConnection", "HealthServer", "HttpServer", "health_app"]


def health_app(registry: CollectorRegistry, health: Health) -> ASGIApp:
    """The metrics port's app: ``/metrics``, ``/healthz`` and ``/readyz`` (GET and HEAD)."""

    async def metrics(_: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    async def healthz(_: Request) -> Response:
        return _json(200 if health.is_alive() else 503, health.liveness())

    async def readyz(_: Request) -> Response:
        return _json(200 if health.is_ready() else 503, health.report())

    app = Starlette(
        routes=[
            Route("/metrics", metrics, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
        ]
    )
    # "/metrics/" is another, unknown path (404), not a redirect.
    app.router.redirect_slashes = False
    return CloseConnection(app)


def _json(status: int, body: dict[str, object]) -> Response:
    return Response(json.dumps(body).encode() + b"\n", status, media_type="application/json")


class HealthServer(HttpServer):
    """Serves the three endpoints of the metrics port; ``async with`` starts and stops it."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        registry: CollectorRegistry,
        health: Health,
    ) -> None:
        super().__init__(health_app(registry, health), host, port, name="metrics")
