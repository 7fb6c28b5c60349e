"""A fault-injection TCP proxy for putting network trouble between Kafka clients and a broker.

``FaultProxy`` listens on 127.0.0.1 and forwards every connection to the broker. Faults are
switched on and off at any moment:

- ``partition()``: every connection is cut at once and new ones are closed as soon as they
  are accepted, until ``restore()``; the clients see connection errors, as when a network
  link goes down.
- ``blackhole()``: half-open: connections stay open (new ones are accepted and kept) but no
  byte is forwarded either way, as when a peer vanishes without a FIN or RST; the clients
  notice only through their request timeouts. ``restore()`` resumes forwarding.
- ``strand()``: the connections open now go silent for good (bytes dropped, nothing
  closed) while new connections work: a client recovers only once its own request
  timeouts make it reconnect.
- ``latency_s``: every chunk is delivered that much later, in each direction, without
  limiting throughput (chunks are queued with their due time, order kept).

With ``scope``, only the connections whose Kafka client id it accepts (read from the first
request's header) suffer faults; the others are forwarded untouched. The tests use that to
cut the service off while their own producer and checker keep a clean path. The broker must
advertise the proxy's address (``EmbeddedBroker(advertised_port=proxy.port)``), or clients
reconnect straight to the broker after their first metadata request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from types import TracebackType

logger = logging.getLogger(__name__)

_HOST = "127.0.0.1"
_CHUNK_BYTES = 64 * 1024
#: size (int32), api_key (int16), api_version (int16), correlation_id (int32), then the
#: client id as a nullable int16-length string: the same in every request header version.
_HEADER = struct.Struct(">ihhih")
_IDENTIFY_TIMEOUT_S = 10.0


class Fault(StrEnum):
    """What the proxy does to the connections in its scope."""

    NONE = "none"
    PARTITION = "partition"
    BLACKHOLE = "blackhole"
    STRANDED = "stranded"  # counted only: it applies to connections, not to the proxy


@dataclass
class ProxyStats:
    """Counters of what the proxy did, for test assertions and the soak's report."""

    accepted: int = 0
    refused: int = 0
    cut: int = 0
    faults: dict[str, int] = field(default_factory=dict)


@dataclass(eq=False)
class _Link:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter
    in_scope: bool
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    #: Stranded: every byte either way is dropped from now on (the peer is gone for good).
    stranded: bool = False

    def abort(self) -> None:
        for writer in (self.client, self.upstream):
            writer.transport.abort()
        for task in self.tasks:
            task.cancel()


class FaultProxy:
    """``async with FaultProxy(broker_port) as proxy:`` a proxy on ``proxy.port``."""

    def __init__(
        self,
        target_port: int,
        *,
        port: int = 0,
        target_host: str = _HOST,
        scope: Callable[[str | None], bool] | None = None,
    ) -> None:
        self.port = port
        self._target = (target_host, target_port)
        self._scope = scope
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self._fault = Fault.NONE
        self._flowing = asyncio.Event()
        self._flowing.set()
        self.latency_s = 0.0
        self.stats = ProxyStats()

    @property
    def address(self) -> str:
        """``host:port`` to give clients (or the broker to advertise)."""
        return f"{_HOST}:{self.port}"

    @property
    def fault(self) -> Fault:
        """The fault in force."""
        return self._fault

    @property
    def connections(self) -> int:
        """Open connections in scope."""
        return sum(link.in_scope for link in self._links)

    async def start(self) -> None:
        """Listen; with ``port=0``, ``self.port`` becomes the port the system chose."""
        if self._server is not None:
            raise RuntimeError("proxy already started")
        self._server = await asyncio.start_server(self._accept, _HOST, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        logger.info("proxy listening", extra={"port": self.port, "target": self._target})

    async def close(self) -> None:
        """Stop listening and cut every connection; safe to call twice."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for link in list(self._links):
            link.abort()
        handlers = list(self._handlers)
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    async def __aenter__(self) -> FaultProxy:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    # -- faults ------------------------------------------------------------------------

    def partition(self) -> None:
        """Cut every connection in scope now and close new ones until ``restore()``."""
        self._set(Fault.PARTITION)
        self._flowing.set()
        for link in [link for link in self._links if link.in_scope]:
            self.stats.cut += 1
            link.abort()
            self._links.discard(link)

    def blackhole(self) -> None:
        """Keep connections open but forward nothing until ``restore()`` (half-open)."""
        self._set(Fault.BLACKHOLE)
        self._flowing.clear()

    def strand(self) -> None:
        """The connections in scope open now go silent for good: every byte either way is
        dropped, nothing is closed (a NAT or firewall that forgot them). New connections
        work normally, so a client that times out and reconnects recovers by itself."""
        self._count(Fault.STRANDED)
        logger.info("proxy strands connections", extra={"connections": self.connections})
        for link in self._links:
            if link.in_scope:
                link.stranded = True

    def restore(self) -> None:
        """End a partition or a blackhole: connections forward again (latency stays)."""
        if self._fault is not Fault.NONE:
            logger.info("proxy restored", extra={"fault": self._fault.value})
        self._fault = Fault.NONE
        self._flowing.set()

    def _set(self, fault: Fault) -> None:
        self._fault = fault
        self._count(fault)

    def _count(self, fault: Fault) -> None:
        self.stats.faults[fault.value] = self.stats.faults.get(fault.value, 0) + 1
        logger.info("proxy fault", extra={"fault": fault.value, "connections": self.connections})

    # -- forwarding --------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await self._serve(reader, writer)
        except (OSError, asyncio.IncompleteReadError, TimeoutError):
            writer.transport.abort()
        finally:
            self._handlers.discard(task)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.stats.accepted += 1
        head = b""
        in_scope = True
        if self._scope is not None:
            head, client_id = await asyncio.wait_for(_read_client_id(reader), _IDENTIFY_TIMEOUT_S)
            in_scope = self._scope(client_id)
        if in_scope and self._fault is Fault.PARTITION:
            self.stats.refused += 1
            writer.transport.abort()
            return
        up_reader, up_writer = await asyncio.open_connection(*self._target)
        link = _Link(writer, up_writer, in_scope)
        if in_scope and self._fault is Fault.PARTITION:  # began while connecting
            self.stats.refused += 1
            link.abort()
            return
        self._links.add(link)
        if head:
            up_writer.write(head)
        link.tasks = [*self._pipe(reader, up_writer, link), *self._pipe(up_reader, writer, link)]
        try:
            writers = link.tasks[1::2]
            await asyncio.wait(writers, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._links.discard(link)
            link.abort()
            await asyncio.gather(*link.tasks, return_exceptions=True)

    def _pipe(
        self,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        link: _Link,
    ) -> list[asyncio.Task[None]]:
        """Two tasks: one reads chunks and stamps them with their due time, the other (the
        second) writes them when due and ends after the last one or on an error."""
        chunks: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        gate = self._flowing if link.in_scope else None

        async def read() -> None:
            try:
                while data := await _gated_read(source, gate):
                    if link.stranded:
                        continue
                    delay = self.latency_s if link.in_scope else 0.0
                    chunks.put_nowait((time.monotonic() + delay, data))
            finally:
                chunks.put_nowait((0.0, b""))  # end of stream: the writer stops after the rest

        async def write() -> None:
            while True:
                due, data = await chunks.get()
                if not data:
                    return
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                if gate is not None:
                    await gate.wait()
                if link.stranded:
                    continue
                sink.write(data)
                await sink.drain()

        return [asyncio.create_task(read()), asyncio.create_task(write())]


async def _gated_read(source: asyncio.StreamReader, gate: asyncio.Event | None) -> bytes:
    if gate is not None:
        await gate.wait()
    return await source.read(_CHUNK_BYTES)


async def _read_client_id(reader: asyncio.StreamReader) -> tuple[bytes, str | None]:
    """The bytes read and the client id of a connection's first Kafka request."""
    head = await reader.readexactly(_HEADER.size)
    length = _HEADER.unpack(head)[4]
    if length < 0:
        return head, None
    raw = await reader.readexactly(length)
    with contextlib.suppress(UnicodeDecodeError):
        return head + raw, raw.decode()
    return head + raw, None


def client_id_prefix(prefix: str) -> Callable[[str | None], bool]:
    """A ``scope`` for the connections of clients whose id starts with ``prefix``."""
    return lambda client_id: client_id is not None and client_id.startswith(prefix)
