"""Shadow scoring on the event loop: ``ShadowBatch`` comparisons become metrics labelled by
both versions, and the series of a pair of versions are dropped once either model is
swapped (label values come from the two models' label sets, so the series stay bounded)."""

from __future__ import annotations

import contextlib

from service.core.records import ShadowBatch
from service.observe.metrics import ServiceMetrics


class ShadowObserver:
    """Turns ``ShadowBatch`` comparisons into metrics (on the event loop)."""

    def __init__(self, metrics: ServiceMetrics) -> None:
        self._metrics = metrics
        self._pair: tuple[str, str] | None = None
        self._flip_series: set[tuple[str, ...]] = set()

    def observe(self, batch: ShadowBatch) -> None:
        """Count one batch's comparison under its pair of versions."""
        metrics = self._metrics
        metrics.shadow_duration.observe(batch.duration_s)
        if not batch.model_version:  # nothing the live model classified in this batch
            if batch.failures:
                metrics.shadow_failures.labels("", batch.shadow_version).inc(batch.failures)
            return
        pair = (batch.model_version, batch.shadow_version)
        if pair != self._pair:
            self.forget()
            self._pair = pair
        metrics.shadow_articles.labels(*pair).inc(batch.articles)
        metrics.shadow_section_agreements.labels(*pair).inc(batch.section_agreements)
        if batch.failures:
            metrics.shadow_failures.labels(*pair).inc(batch.failures)
        jaccard = metrics.shadow_tag_jaccard.labels(*pair)
        for value in batch.jaccards:
            jaccard.observe(value)
        for (head, label, change), count in batch.flips.items():
            labels = (*pair, head, label, change)
            metrics.shadow_label_flips.labels(*labels).inc(count)
            self._flip_series.add(labels)

    def forget(self) -> None:
        """Drop the series of the current pair of versions (one model was swapped)."""
        if self._pair is None:
            return
        metrics = self._metrics
        for family in (
            metrics.shadow_articles,
            metrics.shadow_section_agreements,
            metrics.shadow_failures,
            metrics.shadow_tag_jaccard,
        ):
            with contextlib.suppress(KeyError):
                family.remove(*self._pair)
        for labels in self._flip_series:
            with contextlib.suppress(KeyError):
                metrics.shadow_label_flips.remove(*labels)
        self._flip_series.clear()
        self._pair = None
