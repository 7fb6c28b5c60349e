"""The pipeline's batches as metrics: what the model said, what was delivered, how late."""

from __future__ import annotations

import time
from collections import Counter

from service.core.records import BatchResult, Delivery
from service.observe.metrics import ServiceMetrics


class BatchMetrics:
    """Counts every classified and every delivered batch (a ``BatchObserver``)."""

    def __init__(self, metrics: ServiceMetrics, low_confidence_threshold: float) -> None:
        self._metrics = metrics
        self._threshold = low_confidence_threshold

    def on_classified(self, result: BatchResult) -> None:
        """Duration, articles, predicted sections, tags per article, low confidence and
        sections under the floor."""
        metrics = self._metrics
        metrics.classification_duration.observe(result.duration_s)
        metrics.articles_classified.inc(len(result.verdicts))
        sections: Counter[tuple[str, str]] = Counter()
        uncertain: Counter[tuple[str, str]] = Counter()
        fallbacks: Counter[str] = Counter()
        low = 0
        for verdict in result.verdicts:
            key = (verdict.section or "none", verdict.language)
            sections[key] += 1
            if verdict.uncertain:
                uncertain[key] += 1
            if verdict.fallback is not None:
                fallbacks[verdict.fallback] += 1
            metrics.tags_per_article.observe(verdict.tag_count)
            low += verdict.section_score is not None and verdict.section_score < self._threshold
        for (label, language), count in sections.items():
            metrics.predictions.labels(label, language).inc(count)
        for (label, language), count in uncertain.items():
            metrics.uncertain_sections.labels(label, language).inc(count)
        for reason, count in fallbacks.items():
            metrics.language_fallbacks.labels(reason).inc(count)
        if low:
            metrics.low_confidence.inc(low)

    def on_published(self, delivery: Delivery) -> None:
        """Articles published with their end-to-end latency; dead letters by reason."""
        now_ms = time.time() * 1000
        published = 0
        reasons: Counter[str] = Counter()
        for item in delivery.delivered:
            if item.reason is None:
                published += 1
                latency = (now_ms - item.source_timestamp_ms) / 1000
                self._metrics.end_to_end_latency.observe(max(0.0, latency))
            else:
                reasons[item.reason.value] += 1
        self._metrics.articles_published.inc(published)
        for reason, count in reasons.items():
            self._metrics.dead_letters.labels(reason).inc(count)
