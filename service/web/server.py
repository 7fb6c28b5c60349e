"""HTTP on the event loop: uvicorn serving an ASGI app, for every port of every command.

``HttpServer`` runs one uvicorn server as a task of the running loop, on a socket it binds
itself (a port in use fails at start with ``OSError``, never a ``SystemExit`` from inside
uvicorn), without signal handlers of its own (the service owns SIGTERM and SIGINT), and
stops gracefully: it stops accepting, lets in-flight requests finish within a bound, then
closes what is left.

``CloseConnection`` makes every response of an app close its connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Iterator

import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger(__name__)
_START_TIMEOUT_S = 10.0
_START_POLL_S = 0.005
#: Idle keep-alive connections are closed after this long.
_KEEP_ALIVE_S = 5.0
_BACKLOG = 512


class _Server(uvicorn.Server):
    """uvicorn's server without its signal handlers: ``serve`` must not replace the
    service's own SIGTERM/SIGINT handling (it would swallow the stop request)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class HttpServer:
    """One ASGI app served by uvicorn on ``host:port``; ``async with`` starts and stops it."""

    def __init__(
        self,
        app: ASGIApp,
        host: str,
        port: int,
        *,
        name: str,
        graceful_timeout_s: float = 5.0,
        max_connections: int | None = None,
    ) -> None:
        self._app = app
        self._host = host
        self._port = port
        self._name = name
        self._graceful_timeout_s = graceful_timeout_s
        self._max_connections = max_connections
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._bound_port: int | None = None

    @property
    def port(self) -> int:
        """The bound port (useful when configured with 0)."""
        if self._bound_port is None:
            raise RuntimeError("server not started")
        return self._bound_port

    async def __aenter__(self) -> HttpServer:
        if self._task is not None:
            raise RuntimeError(f"{self._name} http server already started")
        sock = _bind(self._host, self._port)
        self._bound_port = sock.getsockname()[1]
        config = uvicorn.Config(
            self._app,
            http="h11",
            ws="none",
            lifespan="off",
            interface="asgi3",
            log_config=None,
            # uvicorn's own start/stop lines are noise beside the service's; warnings
            # (invalid requests, application errors) still reach the service's log.
            log_level=logging.WARNING,
            access_log=False,
            server_header=False,
            proxy_headers=False,
            timeout_keep_alive=int(_KEEP_ALIVE_S),
            timeout_graceful_shutdown=int(max(1, self._graceful_timeout_s)),
            limit_concurrency=self._max_connections,
            backlog=_BACKLOG,
        )
        self._server = _Server(config)
        self._task = asyncio.create_task(
            self._server.serve(sockets=[sock]), name=f"http-{self._name}"
        )
        try:
            await _started(self._server, self._task, self._name)
        except BaseException:
            await self._stop()
            raise
        logger.info(
            "http server listening",
            extra={"server": self._name, "host": self._host, "port": self._bound_port},
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._stop()

    async def _stop(self) -> None:
        """Stop accepting, let in-flight requests finish (bounded), close the rest."""
        server, task = self._server, self._task
        if server is None or task is None:
            return
        server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(task), self._graceful_timeout_s + 2.0)
        except TimeoutError:
            logger.warning("http server did not stop in time", extra={"server": self._name})
            server.force_exit = True
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        except Exception:
            logger.exception("http server failed", extra={"server": self._name})
        finally:
            self._server = None
            self._task = None


async def _started(server: uvicorn.Server, task: asyncio.Task[None], name: str) -> None:
    """Wait (bounded) until ``server`` listens; raise if its task ended instead."""
    deadline = time.monotonic() + _START_TIMEOUT_S
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError(f"{name} http server stopped while starting")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} http server did not start in time")
        await asyncio.sleep(_START_POLL_S)


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (a name resolves to its first address)."""
    family, _, _, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.create_server(address[:2], family=family, backlog=_BACKLOG)
    sock.setblocking(False)
    return sock


class CloseConnection:
    """ASGI middleware: every response says ``Connection: close`` (and the server closes)."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return

        async def send_closing(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (name, value)
                    for name, value in message.get("headers", [])
                    if name.lower() != b"connection"
                ]
                message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        await self._app(scope, receive, send_closing)
