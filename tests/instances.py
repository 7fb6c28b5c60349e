"""Service instances as subprocesses, watched over HTTP: for the fault and churn tests."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from conftest import http_get, spawn_service, stop_process, wait_for

from service.config.commands import ServeSettings


@dataclass
class Instance:
    """One ``article-classifier serve`` subprocess with its metrics port and log file."""

    name: str
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    async def readyz(self) -> int:
        """The ``/readyz`` status, or 0 when the HTTP server does not answer."""
        with contextlib.suppress(OSError, TimeoutError, ValueError, IndexError):
            return (await http_get(self.port, "/readyz"))[0]
        return 0

    async def metric(self, name: str) -> float:
        """The sum of a metric's samples on ``/metrics`` (0 when absent or unreachable)."""
        try:
            status, body = await http_get(self.port, "/metrics")
        except (OSError, TimeoutError, ValueError, IndexError):
            return 0.0
        total = 0.0
        for line in body.splitlines():
            sample, _, value = line.rpartition(" ")
            if sample == name or sample.startswith(name + "{"):
                total += float(value)
        return total if status == 200 else 0.0

    async def owned_partitions(self) -> set[str]:
        """The input partitions this instance reports lag for: the ones it owns (a revoked
        partition's series goes at the next assignment)."""
        try:
            status, body = await http_get(self.port, "/metrics")
        except (OSError, TimeoutError, ValueError, IndexError):
            return set()
        owned: set[str] = set()
        for line in body.splitlines():
            if status == 200 and line.startswith("article_classifier_consumer_lag{"):
                owned.add(line.split('partition="', 1)[1].split('"', 1)[0])
        return owned

    def alive(self) -> bool:
        return self.process.poll() is None

    def tail(self, chars: int = 4000) -> str:
        """The end of the instance's log, for failure messages."""
        return f"--- {self.name} ---\n" + self.log.read_text(errors="replace")[-chars:]

    async def stop(self, sig: int = signal.SIGTERM) -> int:
        """Send ``sig`` and wait (bounded) for the exit status."""
        return await asyncio.to_thread(stop_process, self.process, sig)


def spawn_instance(settings: ServeSettings, log_dir: Path, name: str) -> Instance:
    """Start one instance on a fixed metrics port (``settings.metrics_port`` must not be 0)."""
    assert settings.metrics_port, "a subprocess needs a known metrics port"
    log = log_dir / f"{name}.log"
    return Instance(name, spawn_service(settings, log), settings.metrics_port, log)


async def wait_until_status(instance: Instance, status: int, *, timeout_s: float) -> float:
    """Seconds until ``/readyz`` answers ``status``; fails with the log at the deadline or
    when the process exits."""
    started = time.monotonic()

    async def reached() -> bool:
        assert instance.alive(), f"{instance.name} exited:\n{instance.tail()}"
        return await instance.readyz() == status

    try:
        await wait_for(reached, timeout_s=timeout_s, interval_s=0.25)
    except AssertionError as error:
        raise AssertionError(f"/readyz never {status}: {error}\n{instance.tail()}") from None
    return time.monotonic() - started


async def wait_until_consumed(instance: Instance, records: float, *, timeout_s: float) -> None:
    """Wait until the instance has consumed ``records`` records."""
    name = "article_classifier_records_consumed_total"

    async def reached() -> bool:
        assert instance.alive(), f"{instance.name} exited:\n{instance.tail()}"
        return await instance.metric(name) >= records

    try:
        await wait_for(reached, timeout_s=timeout_s, interval_s=0.25)
    except AssertionError as error:
        raise AssertionError(f"{error}\n{instance.tail()}") from None


async def wait_until_settled(
    instances: list[Instance], partitions: int, *, timeout_s: float
) -> None:
    """Wait until the live ``instances`` between them own each of ``partitions`` input
    partitions exactly once: the group's rebalance has completed."""

    owners: dict[str, set[str]] = {}

    async def settled() -> bool:
        owners.clear()
        for instance in instances:
            if instance.alive():
                owners[instance.name] = await instance.owned_partitions()
        everyone = [partition for each in owners.values() for partition in each]
        return sorted(everyone) == [str(partition) for partition in range(partitions)]

    try:
        await wait_for(settled, timeout_s=timeout_s, interval_s=0.25)
    except AssertionError as error:
        tails = "\n".join(instance.tail(1500) for instance in instances)
        raise AssertionError(f"the group never settled ({owners}): {error}\n{tails}") from None
