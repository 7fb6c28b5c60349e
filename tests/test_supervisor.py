"""The one restart loop of the service's sessions (``service.kafka.supervisor``)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import pytest

from service.core.backoff import Backoff
from service.kafka.supervisor import Restart, Supervisor


class BrokerDownError(Exception):
    """A failure the restarts cover."""


class MisconfiguredError(Exception):
    """A failure that must end the loop."""


def _no_wait() -> Backoff:
    return Backoff(0.01, 0.01, uniform=lambda low, high: 0.0)


def _failing(
    failures: list[Exception], result: str = "done"
) -> tuple[list[int], Callable[[], Awaitable[str]]]:
    calls: list[int] = []

    async def session() -> str:
        calls.append(1)
        if failures:
            raise failures.pop(0)
        return result

    return calls, session


async def test_a_covered_failure_is_counted_logged_and_retried(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Two broker failures: two restarts counted under their cause, then the result."""
    counted: list[str] = []
    calls, session = _failing([BrokerDownError("a"), BrokerDownError("b")])
    supervisor = Supervisor(
        [Restart((BrokerDownError,), "broker", _no_wait(), message="broker session failed")],
        stop=asyncio.Event(),
        count=counted.append,
        context={"topic": "articles"},
    )
    with caplog.at_level(logging.WARNING, logger="service.kafka.supervisor"):
        assert await supervisor.run(session) == "done"
    assert counted == ["broker", "broker"]
    assert len(calls) == 3
    records = [r for r in caplog.records if r.getMessage() == "broker session failed"]
    assert [r.__dict__["error"] for r in records] == [
        "BrokerDownError('a')",
        "BrokerDownError('b')",
    ]
    assert all(r.__dict__["topic"] == "articles" for r in records)


async def test_the_first_matching_restart_applies_and_its_side_effect_runs() -> None:
    """Restarts are tried in order; the matching one's ``then`` sees the error."""
    seen: list[str] = []
    counted: list[str] = []
    _, session = _failing([MisconfiguredError("topic missing")])
    supervisor = Supervisor(
        [
            Restart(
                (MisconfiguredError,),
                "missing_topic",
                _no_wait(),
                message=str,
                then=lambda error: seen.append(str(error)),
            ),
            Restart((Exception,), "error", _no_wait(), message="anything", traceback=True),
        ],
        stop=asyncio.Event(),
        count=counted.append,
    )
    assert await supervisor.run(session) == "done"
    assert (seen, counted) == (["topic missing"], ["missing_topic"])


async def test_uncovered_and_fatal_errors_propagate() -> None:
    """An error no restart covers ends the loop, and so does a fatal one, even with a
    catch-all restart."""
    _, session = _failing([MisconfiguredError("x")])
    only_broker = Supervisor(
        [Restart((BrokerDownError,), "broker", _no_wait(), message="m")],
        stop=asyncio.Event(),
        count=lambda _: None,
    )
    with pytest.raises(MisconfiguredError):
        await only_broker.run(session)
    _, session = _failing([MisconfiguredError("y")])
    catch_all = Supervisor(
        [Restart((Exception,), "error", _no_wait(), message="m")],
        stop=asyncio.Event(),
        count=lambda _: None,
        fatal=(MisconfiguredError,),
    )
    with pytest.raises(MisconfiguredError):
        await catch_all.run(session)


async def test_stop_cuts_the_wait_short() -> None:
    """A stop during a long backoff ends the loop at once, with no result."""
    stop = asyncio.Event()
    _, session = _failing([BrokerDownError("down")] * 5)
    supervisor = Supervisor(
        [Restart((BrokerDownError,), "broker", Backoff(60, 60, full_jitter=False), message="m")],
        stop=stop,
        count=lambda _: None,
    )
    running = asyncio.create_task(supervisor.run(session))
    await asyncio.sleep(0.05)
    started = time.monotonic()
    stop.set()
    assert await asyncio.wait_for(running, 5) is None
    assert time.monotonic() - started < 5


async def test_until_ends_the_loop_after_a_failure_without_waiting() -> None:
    """Once ``until`` holds (a replay's range is done), a failure is not retried."""
    calls, session = _failing([BrokerDownError("late")])
    supervisor = Supervisor(
        [Restart((BrokerDownError,), "broker", Backoff(60, 60, full_jitter=False), message="m")],
        stop=asyncio.Event(),
        count=lambda _: None,
    )
    assert await asyncio.wait_for(supervisor.run(session, until=lambda: bool(calls)), 5) is None
    assert len(calls) == 1


async def test_a_normal_state_is_said_once_then_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``quiet_after_first``: the first failure logs a warning, the next ones debug."""
    _, session = _failing([BrokerDownError("1"), BrokerDownError("2"), BrokerDownError("3")])
    supervisor = Supervisor(
        [
            Restart(
                (BrokerDownError,), "missing", _no_wait(), message="missing", quiet_after_first=True
            )
        ],
        stop=asyncio.Event(),
        count=lambda _: None,
    )
    with caplog.at_level(logging.DEBUG, logger="service.kafka.supervisor"):
        await supervisor.run(session)
    levels = [r.levelno for r in caplog.records if r.getMessage() == "missing"]
    assert levels == [logging.WARNING, logging.DEBUG, logging.DEBUG]
