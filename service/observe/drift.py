"""Drift signals: the last N classified articles compared with what the model was trained on.

Four gauges over a sliding window of articles (``--drift-window``):

- the section mix against the training prior: Jensen-Shannon divergence, base 2, so 0 is
  the training mix and 1 is a mix with no section in common with it;
- the share of tokens the vocabulary does not know (token-weighted over the window);
- the mean score of the chosen section;
- the mean number of tags per article (the training mean is exported beside it).

Each article's numbers travel in its ``Verdict``; the window keeps exact integer running
sums (scores in millionths: they are rounded to 6 decimals), so adding an article and
dropping the oldest costs O(1) and a batch O(batch) whatever the window size. A model
swap starts a new window: a new model's predictions are not comparable with the old
model's baseline. With one model per language (``model.languages``) each model has its own
window and its own series (label ``language``: a configured language, or ``default``),
against its own training baseline.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from service.core.records import DEFAULT_MODEL, BatchResult, Delivery, Verdict
from service.observe.metrics import DriftGauges

if TYPE_CHECKING:
    from model.baseline import TrainingBaseline

logger = logging.getLogger(__name__)

_MICRO = 1_000_000


class _Entry(NamedTuple):
    section: int  # index into the baseline's sections, -1 when none or unknown
    score: int  # the section score in millionths, -1 when there is none
    tags: int
    tokens: int
    unknown_tokens: int


@dataclass(frozen=True, slots=True)
class DriftSnapshot:
    """The window's signals; None where the window holds nothing to compute one from."""

    articles: int
    section_divergence: float | None
    unknown_token_share: float | None
    mean_section_score: float | None
    mean_tags: float | None


class DriftWindow:
    """The last ``size`` articles' verdicts as running sums, against one model's baseline.

    ``sections`` and ``prior`` are the model's sections and their training shares (empty
    for a model without a section head: no divergence then).
    """

    def __init__(self, size: int, sections: Sequence[str], prior: Sequence[float]) -> None:
        if size < 1:
            raise ValueError(f"the drift window needs at least 1 article, got {size}")
        if prior and len(prior) != len(sections):
            raise ValueError(f"{len(prior)} prior shares for {len(sections)} sections")
        self.size = size
        self._index = {label: index for index, label in enumerate(sections)}
        self._prior = tuple(prior)
        self._entries: deque[_Entry] = deque()
        self._section_counts = [0] * len(sections)
        self._sectioned = 0  # articles with a known section
        self._score_sum = 0
        self._scored = 0
        self._tags = 0
        self._tokens = 0
        self._unknown = 0

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, verdicts: Iterable[Verdict]) -> None:
        """Add articles in order, dropping the oldest beyond ``size``."""
        entries = self._entries
        index = self._index
        for verdict in verdicts:
            if len(entries) == self.size:
                self._account(entries.popleft(), -1)
            score = verdict.section_score
            entry = _Entry(
                -1 if verdict.section is None else index.get(verdict.section, -1),
                -1 if score is None else round(score * _MICRO),
                verdict.tag_count,
                verdict.tokens,
                verdict.unknown_tokens,
            )
            entries.append(entry)
            self._account(entry, 1)

    def _account(self, entry: _Entry, sign: int) -> None:
        if entry.section >= 0:
            self._section_counts[entry.section] += sign
            self._sectioned += sign
        if entry.score >= 0:
            self._score_sum += sign * entry.score
            self._scored += sign
        self._tags += sign * entry.tags
        self._tokens += sign * entry.tokens
        self._unknown += sign * entry.unknown_tokens

    def snapshot(self) -> DriftSnapshot:
        """The signals of the articles in the window now (O(sections))."""
        articles = len(self._entries)
        divergence = None
        if self._prior and self._sectioned:
            mix = [count / self._sectioned for count in self._section_counts]
            divergence = js_divergence(mix, self._prior)
        return DriftSnapshot(
            articles=articles,
            section_divergence=divergence,
            unknown_token_share=self._unknown / self._tokens if self._tokens else None,
            mean_section_score=self._score_sum / self._scored / _MICRO if self._scored else None,
            mean_tags=self._tags / articles if articles else None,
        )


def js_divergence(p: Sequence[float], q: Sequence[float]) -> float:
    """Jensen-Shannon divergence of two distributions over the same labels, base 2: in
    [0, 1], symmetric, and finite when one gives a label no weight at all."""
    total = 0.0
    for pi, qi in zip(p, q, strict=True):
        middle = (pi + qi) / 2
        if pi > 0:
            total += pi * math.log2(pi / middle)
        if qi > 0:
            total += qi * math.log2(qi / middle)
    # Rounding can leave a hair below 0 or above 1.
    return min(1.0, max(0.0, total / 2))


class _ModelWindow(NamedTuple):
    """The window of one model (by key) and the baseline version it was started for."""

    window: DriftWindow
    version: str | None


class DriftTracker:
    """Feeds each batch's verdicts into the window of the model that answered each article
    (its ``Verdict.language``: a configured language, or ``default``) and sets that
    model's gauges; lives as long as the process (sessions come and go)."""

    def __init__(self, gauges: DriftGauges) -> None:
        self._gauges = gauges
        self._windows: dict[str, _ModelWindow] = {}
        self._unset(DEFAULT_MODEL)

    def _unset(self, key: str) -> None:
        gauges = self._gauges
        for gauge in (
            gauges.section_divergence,
            gauges.unknown_token_share,
            gauges.mean_section_score,
            gauges.mean_tags,
            gauges.training_tags,
        ):
            gauge.labels(key).set(math.nan)
        gauges.window_articles.labels(key).set(0)

    def observe(
        self,
        verdicts: Sequence[Verdict],
        baselines: Mapping[str, TrainingBaseline],
        size: int,
    ) -> None:
        """Add one batch's verdicts, each to its model's window; a model of another version
        (a swap) or another window size restarts that model's window with its baseline."""
        if not verdicts:
            return
        if len(baselines) <= 1:
            # One model answered every article: no need to look at each.
            key = next(iter(baselines), DEFAULT_MODEL)
            self._observe(key, verdicts, baselines.get(key), size)
            return
        groups: dict[str, list[Verdict]] = {}
        for verdict in verdicts:
            groups.setdefault(verdict.language, []).append(verdict)
        for key, group in groups.items():
            self._observe(key, group, baselines.get(key), size)

    def _observe(
        self,
        key: str,
        verdicts: Sequence[Verdict],
        baseline: TrainingBaseline | None,
        size: int,
    ) -> None:
        version = baseline.model_version if baseline is not None else None
        current = self._windows.get(key)
        if current is None or current.version != version or current.window.size != size:
            window = self._start(key, baseline, size, restart=current is not None)
        else:
            window = current.window
        window.add(verdicts)
        found = window.snapshot()
        gauges = self._gauges
        gauges.window_articles.labels(key).set(found.articles)
        gauges.section_divergence.labels(key).set(_or_nan(found.section_divergence))
        gauges.unknown_token_share.labels(key).set(_or_nan(found.unknown_token_share))
        gauges.mean_section_score.labels(key).set(_or_nan(found.mean_section_score))
        gauges.mean_tags.labels(key).set(_or_nan(found.mean_tags))

    def _start(
        self, key: str, baseline: TrainingBaseline | None, size: int, *, restart: bool
    ) -> DriftWindow:
        if baseline is None:
            window = DriftWindow(size, (), ())
            training_tags = None
        else:
            window = DriftWindow(size, baseline.sections, baseline.section_prior)
            training_tags = baseline.tags_per_article
        if restart:
            logger.info(
                "drift window restarted for another model",
                extra={
                    "language": key,
                    "model_version": baseline.model_version if baseline else None,
                },
            )
        version = baseline.model_version if baseline is not None else None
        self._windows[key] = _ModelWindow(window, version)
        self._gauges.training_tags.labels(key).set(_or_nan(training_tags))
        return window


def _or_nan(value: float | None) -> float:
    return math.nan if value is None else value


class DriftObserver:
    """Feeds every classified batch into the drift window of ``window`` articles."""

    def __init__(self, tracker: DriftTracker, window: int) -> None:
        self._tracker = tracker
        self._window = window

    def on_classified(self, result: BatchResult) -> None:
        """Add the batch's verdicts to the window."""
        self._tracker.observe(result.verdicts, result.baselines, self._window)

    def on_published(self, delivery: Delivery) -> None:
        """Nothing: drift is about what the model said, not what was delivered."""
