"""Network faults between the service and its broker: a partition, latency, a half-open link.

The service runs as a subprocess (so "the same process carries on" is its pid never
exiting) behind ``chaos.proxy.FaultProxy``; the broker advertises the proxy's address. The
faults hit only the service's connections (client id ``article-classifier*``): the test's
own producer and checker keep a clean path, so input keeps flowing during a fault.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import Topics, make_settings, wait_for
from instances import Instance, spawn_instance, wait_until_status

from chaos.ledger import Audit, Feeder, await_delivery, count_records
from chaos.proxy import Fault, FaultProxy, client_id_prefix
from devtools.tansu import EmbeddedBroker, ensure_topics, free_port

CONSUMED = "article_classifier_records_consumed_total"
#: Long enough for the group session (6 s in the tests) and every request timeout to expire.
PARTITION_S = 22.0


# -- the proxy on its own (no broker) ---------------------------------------------------


@contextlib.asynccontextmanager
async def echo_server() -> AsyncIterator[int]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(1024):
                writer.write(data)
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


async def closed(reader: asyncio.StreamReader) -> bool:
    """True when the peer closed or reset the connection (within a few seconds)."""
    try:
        return await asyncio.wait_for(reader.read(), 5) == b""
    except ConnectionResetError:
        return True


async def roundtrip(
    writer: asyncio.StreamWriter, reader: asyncio.StreamReader, data: bytes
) -> bytes:
    writer.write(data)
    await writer.drain()
    return await asyncio.wait_for(reader.readexactly(len(data)), 5)


async def test_proxy_partition_cuts_connections_and_refuses_new_ones_until_restored() -> None:
    """A partition closes open connections, closes new ones at once, and restore ends it."""
    async with echo_server() as port, FaultProxy(port) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        assert await roundtrip(writer, reader, b"ping") == b"ping"
        proxy.partition()
        assert await closed(reader)
        reader2, writer2 = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer2.write(b"x")
        assert await closed(reader2)
        assert proxy.stats.cut == 1
        await wait_for(lambda: proxy.stats.refused == 1, timeout_s=5)
        proxy.restore()
        reader3, writer3 = await asyncio.open_connection("127.0.0.1", proxy.port)
        assert await roundtrip(writer3, reader3, b"back") == b"back"
        for w in (writer, writer2, writer3):
            w.close()


async def test_proxy_blackhole_holds_bytes_until_restored() -> None:
    """Half-open: the connection stays open but nothing is forwarded until restore."""
    async with echo_server() as port, FaultProxy(port) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        assert await roundtrip(writer, reader, b"one") == b"one"
        proxy.blackhole()
        writer.write(b"two")
        await writer.drain()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.readexactly(3), 0.5)
        assert proxy.connections == 1
        proxy.restore()
        assert await asyncio.wait_for(reader.readexactly(3), 5) == b"two"
        writer.close()


async def test_proxy_strand_silences_open_connections_but_not_new_ones() -> None:
    """Stranded connections stay open and drop every byte; a new connection works."""
    async with echo_server() as port, FaultProxy(port) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        assert await roundtrip(writer, reader, b"one") == b"one"
        proxy.strand()
        writer.write(b"two")
        await writer.drain()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.readexactly(3), 0.5)
        assert proxy.connections == 1
        reader2, writer2 = await asyncio.open_connection("127.0.0.1", proxy.port)
        assert await roundtrip(writer2, reader2, b"new") == b"new"
        for w in (writer, writer2):
            w.close()


async def test_proxy_latency_delays_each_chunk_and_keeps_order() -> None:
    """Every chunk arrives at least ``latency_s`` later in each direction, in order."""
    async with echo_server() as port, FaultProxy(port) as proxy:
        proxy.latency_s = 0.2
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        started = time.monotonic()
        for part in (b"a", b"b", b"c"):
            writer.write(part)
            await writer.drain()
        assert await asyncio.wait_for(reader.readexactly(3), 5) == b"abc"
        assert time.monotonic() - started >= 0.4  # one way out, one way back
        writer.close()


async def test_proxy_scope_spares_other_clients() -> None:
    """With a client-id scope, a partition cuts only the matching Kafka clients."""
    async with echo_server() as port, FaultProxy(port, scope=client_id_prefix("svc")) as proxy:

        def request(client_id: bytes) -> bytes:  # a Kafka request header, then a body
            header = b"\x00\x12\x00\x00\x00\x00\x00\x01" + len(client_id).to_bytes(2, "big")
            body = header + client_id + b"body"
            return len(body).to_bytes(4, "big") + body

        svc_reader, svc_writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        other_reader, other_writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        svc = request(b"svc-consumer")
        other = request(b"checker")
        assert await roundtrip(svc_writer, svc_reader, svc) == svc
        assert await roundtrip(other_writer, other_reader, other) == other
        proxy.partition()
        assert await closed(svc_reader)
        assert await roundtrip(other_writer, other_reader, b"still") == b"still"
        assert proxy.fault is Fault.PARTITION
        for w in (svc_writer, other_writer):
            w.close()


# -- the service behind the proxy -------------------------------------------------------


@dataclass
class Proxied:
    broker: EmbeddedBroker
    proxy: FaultProxy
    topics: Topics


@pytest.fixture
async def proxied(tmp_path: Path) -> AsyncIterator[Proxied]:
    """A fresh broker advertising a proxy that faults only the service's connections."""
    broker_port = free_port()
    async with FaultProxy(broker_port, scope=client_id_prefix("article-classifier")) as proxy:
        broker = EmbeddedBroker(
            broker_port, advertised_port=proxy.port, log_file=tmp_path / "tansu.log"
        )
        # In a thread: the proxy runs on this event loop and the probe goes through it.
        await asyncio.to_thread(broker.start)
        try:
            tag = uuid.uuid4().hex[:8]
            topics = Topics(f"in-{tag}", f"out-{tag}", f"dlq-{tag}", f"group-{tag}")
            await ensure_topics(
                broker.bootstrap_servers, {topics.input: 3, topics.output: 3, topics.dead_letter: 1}
            )
            yield Proxied(broker, proxy, topics)
        finally:
            await asyncio.to_thread(broker.stop)


@contextlib.asynccontextmanager
async def service_behind(setup: Proxied, model_dir: Path, logs: Path) -> AsyncIterator[Instance]:
    """The service as a subprocess, bootstrapping through the proxy; SIGTERM on exit."""
    settings = make_settings(setup.proxy.address, setup.topics, model_dir, metrics_port=free_port())
    service = spawn_instance(settings, logs, "service")
    try:
        await wait_until_status(service, 200, timeout_s=60)
        yield service
    finally:
        await service.stop(signal.SIGTERM)


async def outputs_grow(setup: Proxied, by: int, *, timeout_s: float = 60) -> None:
    """Wait until the output and dead-letter topics hold ``by`` more records than now."""
    bootstrap = setup.broker.bootstrap_servers
    topics = [setup.topics.output, setup.topics.dead_letter]
    start = await count_records(bootstrap, topics)

    async def grown() -> bool:
        return await count_records(bootstrap, topics) >= start + by

    await wait_for(grown, timeout_s=timeout_s, interval_s=0.5)


def feeder_for(
    setup: Proxied,
    *,
    chunk: int,
    poison_every: int,
    pause_s: float = 0.05,
    total: int | None = None,
) -> Feeder:
    return Feeder(
        setup.broker.bootstrap_servers,
        setup.topics.input,
        total=total,
        chunk=chunk,
        pause_s=pause_s,
        poison_every=poison_every,
    )


async def delivered(setup: Proxied, *, timeout_s: float = 90) -> Audit:
    t = setup.topics
    return await await_delivery(
        setup.broker.bootstrap_servers, t.input, t.output, t.dead_letter, timeout_s=timeout_s
    )


@contextlib.asynccontextmanager
async def feeding(feeder: Feeder) -> AsyncIterator[Feeder]:
    """Run ``feeder`` in the background; stop it (and wait for its last chunk) on exit."""
    task = asyncio.create_task(feeder.run())
    try:
        yield feeder
    finally:
        feeder.stop()
        await asyncio.wait_for(task, 60)


@pytest.mark.kafka
async def test_partition_mid_run_goes_not_ready_recovers_in_process_and_loses_nothing(
    proxied: Proxied, model_dir: Path, tmp_path: Path
) -> None:
    """Every connection cut for 22 s mid-stream: /readyz 503 during the cut, 200 after, the
    same process carries on and every input reaches the output or dead-letter topic."""
    async with service_behind(proxied, model_dir, tmp_path) as service:
        async with feeding(feeder_for(proxied, chunk=50, pause_s=0.1, poison_every=25)) as feeder:
            await outputs_grow(proxied, 200)
            consumed_before = await service.metric(CONSUMED)
            proxied.proxy.partition()
            cut_at = time.monotonic()
            to_not_ready = await wait_until_status(service, 503, timeout_s=PARTITION_S - 2)
            acked_at_cut = feeder.acked
            during = []
            while time.monotonic() - cut_at < PARTITION_S:
                during.append(await service.readyz())
                await asyncio.sleep(0.5)
            assert set(during) == {503}, f"/readyz during the cut: {during}"
            assert feeder.acked > acked_at_cut, "input kept flowing during the cut"
            proxied.proxy.restore()
            to_ready = await wait_until_status(service, 200, timeout_s=60)
            await outputs_grow(proxied, 200)
        result = await delivered(proxied)
        # Never exited, and its counters carried on (a restarted process starts them at 0).
        assert service.alive()
        assert await service.metric(CONSUMED) > consumed_before > 0
    print(f"partition: not ready after {to_not_ready:.1f} s, ready {to_ready:.1f} s after restore")
    assert proxied.proxy.stats.cut > 0
    assert result.ok, result.summary()
    assert result.inputs == feeder.acked
    assert service.process.returncode == 0, service.tail()


@pytest.mark.kafka
async def test_latency_on_every_chunk_loses_nothing(
    proxied: Proxied, model_dir: Path, tmp_path: Path
) -> None:
    """200 ms added to every chunk each way: the service stays ready and loses nothing."""
    async with service_behind(proxied, model_dir, tmp_path) as service:
        proxied.proxy.latency_s = 0.2
        async with feeding(feeder_for(proxied, total=600, chunk=50, poison_every=50)):
            await outputs_grow(proxied, 300)
        result = await delivered(proxied)
        assert await service.readyz() == 200
        assert service.process.poll() is None
    assert result.ok, result.summary()
    assert result.inputs == 600


@pytest.mark.kafka
async def test_half_open_connection_goes_not_ready_and_recovers(
    proxied: Proxied, model_dir: Path, tmp_path: Path
) -> None:
    """A blackholed link (open, silent) is noticed through request timeouts: /readyz 503,
    then 200 once restored, in the same process, with nothing lost."""
    async with service_behind(proxied, model_dir, tmp_path) as service:
        async with feeding(feeder_for(proxied, chunk=50, pause_s=0.1, poison_every=25)):
            await outputs_grow(proxied, 200)
            consumed_before = await service.metric(CONSUMED)
            proxied.proxy.blackhole()
            to_not_ready = await wait_until_status(service, 503, timeout_s=30)
            assert proxied.proxy.connections > 0, "the connections were held open"
            # Held a while, then resumed: the requests held meanwhile are answered late,
            # within the clients' request timeouts (the stranded test covers those).
            await asyncio.sleep(5)
            proxied.proxy.restore()
            to_ready = await wait_until_status(service, 200, timeout_s=90)
            await outputs_grow(proxied, 200, timeout_s=90)
        result = await delivered(proxied)
        # Never exited, and its counters carried on (a restarted process starts them at 0).
        assert service.alive()
        assert await service.metric(CONSUMED) > consumed_before > 0
    print(f"half-open: not ready after {to_not_ready:.1f} s, ready {to_ready:.1f} s after restore")
    assert result.ok, result.summary()
    assert service.process.returncode == 0, service.tail()


@pytest.mark.kafka
async def test_stranded_connections_are_noticed_and_replaced_without_help(
    proxied: Proxied, model_dir: Path, tmp_path: Path
) -> None:
    """The service's open connections go silent for good (new ones would work): it goes
    not-ready, then its request timeouts make it reconnect and it recovers by itself, in
    the same process, with nothing lost."""
    async with service_behind(proxied, model_dir, tmp_path) as service:
        async with feeding(feeder_for(proxied, chunk=50, pause_s=0.1, poison_every=25)):
            await outputs_grow(proxied, 200)
            consumed_before = await service.metric(CONSUMED)
            proxied.proxy.strand()
            to_not_ready = await wait_until_status(service, 503, timeout_s=30)
            to_ready = await wait_until_status(service, 200, timeout_s=120)
            await outputs_grow(proxied, 200, timeout_s=90)
        result = await delivered(proxied)
        assert service.alive()
        assert await service.metric(CONSUMED) > consumed_before > 0
    print(f"stranded: not ready after {to_not_ready:.1f} s, ready again {to_ready:.1f} s later")
    assert result.ok, result.summary()
    assert service.process.returncode == 0, service.tail()
