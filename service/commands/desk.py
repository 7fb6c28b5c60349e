"""``article-classifier desk``: the editors' web desk as a process of its own.

It needs a broker and its two topics, nothing else: no model, no state of the service. It
reads the classified topic (the live feed, the review queue) and the feedback topic (what
was judged, the quality view), and writes one ``ArticleFeedback`` per verdict.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from prometheus_client import CollectorRegistry

from schemas import ArticleFeedback
from service.config.commands import DeskSettings
from service.desk.app import DeskApp, make_auth
from service.desk.feeds import DeskReader, VerdictPublisher
from service.desk.state import DeskState
from service.observe.logs import configure_logging
from service.web.server import HttpServer

logger = logging.getLogger(__name__)

_GRACEFUL_STOP_S = 5.0
_MAX_CONNECTIONS = 256


async def run_desk(
    settings: DeskSettings,
    *,
    stop: asyncio.Event,
    registry: CollectorRegistry | None = None,
    port: asyncio.Future[int] | None = None,
) -> int:
    """Serve the desk until ``stop`` is set; ``port`` receives the bound port."""
    state = DeskState(
        max_articles=settings.desk_max_articles, max_verdicts=settings.desk_max_verdicts
    )
    auth = make_auth(
        settings.api_tokens_file,
        settings.desk_user_header,
        secure_cookie=settings.desk_secure_cookie,
    )
    reader = DeskReader(settings, state)
    publisher = _LazyPublisher(settings)
    desk = DeskApp(
        state,
        auth,
        publisher.publish,
        registry=registry or CollectorRegistry(),
        ready=lambda: reader.running,
    )
    reading = asyncio.create_task(reader.run(stop), name="desk-reader")
    try:
        async with HttpServer(
            desk.app(),
            settings.desk_host,
            settings.desk_port,
            name="desk",
            graceful_timeout_s=_GRACEFUL_STOP_S,
            max_connections=_MAX_CONNECTIONS,
        ) as server:
            if port is not None and not port.done():
                port.set_result(server.port)
            await stop.wait()
            # The live feeds are endless responses: end them first, or the server's
            # graceful stop would wait for them.
            desk.close()
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(reading, 15.0)
        await publisher.stop()
    return 0


class _LazyPublisher:
    """The verdict producer, started at the first verdict (the desk serves its pages while
    the broker is away) and again after a failure."""

    def __init__(self, settings: DeskSettings) -> None:
        self._settings = settings
        self._publisher: VerdictPublisher | None = None
        self._lock = asyncio.Lock()

    async def publish(self, feedback: ArticleFeedback) -> None:
        async with self._lock:
            if self._publisher is None:
                publisher = VerdictPublisher(self._settings)
                await publisher.start()
                self._publisher = publisher
            publisher = self._publisher
        try:
            await publisher.publish(feedback)
        except Exception:
            await self.stop()
            raise

    async def stop(self) -> None:
        publisher, self._publisher = self._publisher, None
        if publisher is not None:
            with contextlib.suppress(Exception):
                await publisher.stop()


def desk(settings: DeskSettings) -> int:
    """Run the desk until SIGTERM or SIGINT; return the exit status."""
    configure_logging(settings.log_level.value)
    return asyncio.run(_desk(settings))


async def _desk(settings: DeskSettings) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        return await run_desk(settings, stop=stop)
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
