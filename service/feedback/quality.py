"""Live quality metrics from editor feedback, in bounded memory.

Each ``ArticleFeedback`` carries the labels the model gave (as the editor saw them) next to
the editor's final ones, so a verdict is scored on its own: no per-article state. Series
are labelled by model version; only the ``max_versions`` most recently seen versions keep
series (the oldest one's are removed when another arrives), and section and tag labels
outside the label sets of the models loaded since the start (the default model and each
language's, and every model swapped in) count as ``_other``. So the number of series is at
most ``max_versions x (sections x 2 + tags x 3 + a few)`` whatever the volume.

PromQL: section agreement is ``agreed / (agreed + corrected)`` of ``feedback_section_total``;
a tag's precision ``tp / (tp + fp)`` and recall ``tp / (tp + fn)`` of ``feedback_tag_total``;
corrections per hour ``rate(corrections_total[1h]) * 3600``.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path

from schemas import ArticleFeedback
from service.core.verdicts import (
    AGREED,
    CORRECTED,
    FALSE_NEGATIVE,
    FALSE_POSITIVE,
    NO_VERSION,
    TRUE_POSITIVE,
    score_verdict,
)
from service.observe.metrics import ServiceMetrics

logger = logging.getLogger(__name__)

OTHER_LABEL = "_other"
DEFAULT_MAX_VERSIONS = 5
__all__ = [
    "AGREED",
    "CORRECTED",
    "FALSE_NEGATIVE",
    "FALSE_POSITIVE",
    "NO_VERSION",
    "TRUE_POSITIVE",
    "QualityTracker",
    "manifest_labels",
]


class QualityTracker:
    """Turns verdicts into counters; ``record`` is cheap enough for the event loop."""

    def __init__(
        self,
        metrics: ServiceMetrics,
        *,
        sections: Iterable[str] = (),
        tags: Iterable[str] = (),
        max_versions: int = DEFAULT_MAX_VERSIONS,
    ) -> None:
        if max_versions < 1:
            raise ValueError(f"max_versions must be at least 1, got {max_versions}")
        self._metrics = metrics
        self._max_versions = max_versions
        self._sections: frozenset[str] = frozenset()
        self._tags: frozenset[str] = frozenset()
        self.set_labels(sections, tags)
        # version -> the (label, outcome) pairs it has series for, to remove them on eviction.
        self._versions: OrderedDict[str, tuple[set[tuple[str, str]], set[tuple[str, str]]]] = (
            OrderedDict()
        )

    def set_labels(self, sections: Iterable[str], tags: Iterable[str]) -> None:
        """The loaded models' label set."""
        self._sections = frozenset(sections)
        self._tags = frozenset(tags)

    def add_labels(self, sections: Iterable[str], tags: Iterable[str]) -> None:
        """Labels of a model loaded since (a swap): counted under their own names from now
        on. The set only grows, as older versions' series stay until they are evicted."""
        self._sections |= frozenset(sections)
        self._tags |= frozenset(tags)

    @property
    def versions(self) -> list[str]:
        """Versions that have series, least recently seen first."""
        return list(self._versions)

    def record(self, feedback: ArticleFeedback) -> None:
        """Count one verdict under the model version the editor saw."""
        scored = score_verdict(feedback)
        version = scored.version
        section_series, tag_series = self._touch(version)
        self._metrics.corrections.labels(version).inc()
        if scored.section is not None:
            predicted, outcome = scored.section
            label = predicted if predicted in self._sections else OTHER_LABEL
            section_series.add((label, outcome))
            self._metrics.feedback_sections.labels(version, label, outcome).inc()
        for tag, outcome in scored.tags:
            label = tag if tag in self._tags else OTHER_LABEL
            tag_series.add((label, outcome))
            self._metrics.feedback_tags.labels(version, label, outcome).inc()

    def _touch(self, version: str) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
        series = self._versions.get(version)
        if series is not None:
            self._versions.move_to_end(version)
            return series
        while len(self._versions) >= self._max_versions:
            self._evict(*self._versions.popitem(last=False))
        series = (set(), set())
        self._versions[version] = series
        return series

    def _evict(
        self, version: str, series: tuple[set[tuple[str, str]], set[tuple[str, str]]]
    ) -> None:
        self._metrics.corrections.remove(version)
        for label, outcome in series[0]:
            self._metrics.feedback_sections.remove(version, label, outcome)
        for label, outcome in series[1]:
            self._metrics.feedback_tags.remove(version, label, outcome)
        logger.info(
            "feedback series of an older model version removed",
            extra={"model_version": version, "max_versions": self._max_versions},
        )


def serving_labels(model_dirs: Iterable[Path]) -> tuple[list[str], list[str]]:
    """The sections and tags of every artifact in ``model_dirs`` (the default model and
    each language's), in order of first appearance."""
    sections: dict[str, None] = {}
    tags: dict[str, None] = {}
    for model_dir in model_dirs:
        more_sections, more_tags = manifest_labels(model_dir)
        sections.update(dict.fromkeys(more_sections))
        tags.update(dict.fromkeys(more_tags))
    return list(sections), list(tags)


def manifest_labels(model_dir: Path) -> tuple[list[str], list[str]]:
    """The sections and tags listed in an artifact's ``model.json``; empty if unreadable.

    Read without loading the model (which may live in a worker process). Unreadable, every
    label counts as ``_other``: the metrics lose detail, never the service its feedback.
    """
    path = model_dir / "model.json"
    try:
        manifest = json.loads(path.read_bytes())
        sections = [str(label) for label in manifest.get("sections") or ()]
        tags = [str(label) for label in manifest.get("tags") or ()]
    except (OSError, ValueError, AttributeError, TypeError) as error:
        logger.warning(
            "model label set unreadable; feedback metrics count every label as _other",
            extra={"path": str(path), "error": repr(error)},
        )
        return [], []
    return sections, tags
