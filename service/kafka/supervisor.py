"""One supervisor for the broker-connection restart loops (as mode's supervisors do it).

A command gives the supervisor its session (connect, consume, return) and one ``Restart`` per
kind of failure: which errors it covers, the cause it is counted under, the backoff that
spaces the retries, what to log and what to change on the way (health, flags). The
supervisor runs the session until it returns or ``stop`` is set; a failure the restarts
cover is counted, logged and retried after its backoff's next delay (cut short by ``stop``);
any other error, and every error in ``fatal``, propagates. Its log lines go to the logger
of the command that owns the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from service.core.backoff import Backoff

logger = logging.getLogger(__name__)

_T = TypeVar("_T")


@dataclass
class Restart:
    """How the supervisor handles a session that failed with one of ``errors``."""

    errors: tuple[type[Exception], ...]
    #: The cause the restart is counted under (``session_restarts_total{cause}``).
    cause: str
    backoff: Backoff
    #: The log line; a callable makes it from the error.
    message: str | Callable[[Exception], str]
    #: Log with the traceback (an error nobody expected).
    traceback: bool = False
    #: After the first time, log at DEBUG only (a state that is normal while it lasts).
    quiet_after_first: bool = False
    #: Changes to make on the way (health, flags), given the error.
    then: Callable[[Exception], None] | None = None
    #: Extra log fields, given the error.
    details: Callable[[Exception], Mapping[str, Any]] | None = None
    #: A failure this long after the previous one of its kind starts the delays over (for
    #: a backoff no session start resets).
    quiet_reset_s: float | None = None
    _said: bool = field(default=False, init=False, repr=False)
    _last_s: float | None = field(default=None, init=False, repr=False)

    def next_delay(self, now_s: float) -> float:
        """The wait before the next session; the backoff starts over after a quiet spell."""
        quiet = self.quiet_reset_s
        if quiet is not None and self._last_s is not None and now_s - self._last_s > quiet:
            self.backoff.reset()
        self._last_s = now_s
        return self.backoff.delay()

    def log(self, log: logging.Logger, error: Exception, fields: Mapping[str, Any]) -> None:
        """One log line for this failure."""
        message = self.message(error) if callable(self.message) else self.message
        level = logging.DEBUG if self.quiet_after_first and self._said else logging.WARNING
        self._said = True
        extra = {**fields, **(self.details(error) if self.details else {})}
        if self.traceback:
            log.log(logging.ERROR, message, extra=extra, exc_info=error)
        else:
            log.log(level, message, extra=extra)


class Supervisor:
    """Runs a session again after each failure its restarts cover, until it returns."""

    def __init__(
        self,
        restarts: Sequence[Restart],
        *,
        stop: asyncio.Event,
        count: Callable[[str], None],
        fatal: tuple[type[Exception], ...] = (),
        context: Mapping[str, Any] | None = None,
        log: logging.Logger = logger,
    ) -> None:
        self._restarts = restarts
        self._log = log
        self._stop = stop
        self._count = count
        self._fatal = fatal
        self._context = dict(context or {})

    async def run(
        self,
        session: Callable[[], Awaitable[_T]],
        *,
        until: Callable[[], bool] | None = None,
    ) -> _T | None:
        """The session's result once it returns; None when ``stop`` is set (or ``until``
        holds) before a session returned."""
        while not self._stop.is_set() and not (until is not None and until()):
            try:
                return await session()
            except self._fatal:
                raise
            except Exception as error:
                restart = self._restart_for(error)
                if restart is None:
                    raise
                delay = restart.next_delay(time.monotonic())
                self._count(restart.cause)
                if restart.then is not None:
                    restart.then(error)
                restart.log(
                    self._log,
                    error,
                    {**self._context, "error": repr(error), "retry_in_s": round(delay, 2)},
                )
            if until is not None and until():
                return None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)
        return None

    def _restart_for(self, error: Exception) -> Restart | None:
        for restart in self._restarts:
            if isinstance(error, restart.errors):
                return restart
        return None
