"""A circuit breaker over a sliding window of model outcomes.

Each article the model was asked about is one outcome: classified, or a
``classification_error`` dead letter. When the failure share of the last ``window``
outcomes reaches ``threshold`` (and the window holds at least ``min_records``), the
breaker trips: the service stops publishing, closes its session and retries later instead
of dead-lettering the whole stream. One poison article is one failure in the window, far
under any sensible threshold.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable


class CircuitBreaker:
    """Counts outcomes; ``record`` says whether this batch tripped it."""

    def __init__(self, *, window: int, threshold: float, min_records: int) -> None:
        if window < 1 or not 0 < threshold <= 1 or min_records < 1:
            raise ValueError("window >= 1, 0 < threshold <= 1 and min_records >= 1")
        self._threshold = threshold
        self._min_records = min(min_records, window)
        self._outcomes: deque[bool] = deque(maxlen=window)
        self._failures = 0

    @property
    def failure_share(self) -> float:
        """Failures over outcomes in the window (0 when empty)."""
        return self._failures / len(self._outcomes) if self._outcomes else 0.0

    @property
    def outcomes(self) -> int:
        """How many outcomes the window holds."""
        return len(self._outcomes)

    def record(self, failed: Iterable[bool]) -> bool:
        """Add outcomes in order (True = the model failed on it); True when tripped."""
        window = self._outcomes
        for outcome in failed:
            if window.maxlen is not None and len(window) == window.maxlen:
                self._failures -= window[0]
            window.append(outcome)
            self._failures += outcome
        return self.tripped()

    def tripped(self) -> bool:
        """The failure share has reached the threshold over enough outcomes."""
        return len(self._outcomes) >= self._min_records and self.failure_share >= self._threshold

    def reset(self) -> None:
        """Forget every outcome (a new session re-tests from scratch)."""
        self._outcomes.clear()
        self._failures = 0
