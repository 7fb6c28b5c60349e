"""Capped exponential backoff with full jitter, reset after a success.

Full jitter (a uniform draw between 0 and the capped exponential step) spreads the retries of
many instances that failed together, so they do not hit a recovering broker in lockstep.
"""

from __future__ import annotations

import random
from collections.abc import Callable


class Backoff:
    """``delay()`` gives the next wait and grows the step; ``reset()`` after a success."""

    def __init__(
        self,
        initial_s: float,
        maximum_s: float,
        *,
        full_jitter: bool = True,
        uniform: Callable[[float, float], float] = random.uniform,
    ) -> None:
        if not 0 < initial_s <= maximum_s:
            raise ValueError(f"need 0 < initial_s <= maximum_s, got {initial_s}, {maximum_s}")
        self._initial_s = initial_s
        self._maximum_s = maximum_s
        self._full_jitter = full_jitter
        self._uniform = uniform
        self._step_s = initial_s

    @property
    def step_s(self) -> float:
        """The cap of the next delay (the un-jittered exponential step)."""
        return self._step_s

    def delay(self) -> float:
        """The next wait, then the step doubles up to the maximum. Full jitter: uniform in
        [0, step]; otherwise ("equal jitter") uniform in [step/2, step], so it surely grows."""
        low = 0.0 if self._full_jitter else self._step_s / 2
        wait = self._uniform(low, self._step_s)
        self._step_s = min(self._step_s * 2, self._maximum_s)
        return wait

    def reset(self) -> None:
        """Back to the initial step (call after a success)."""
        self._step_s = self._initial_s
