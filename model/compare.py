"""Two models on the same articles: where they agree, what flips, and which scores better.

``compare(a, b, articles)`` streams the articles once, in batches, through both models
(the articles are parsed once and each batch goes to A then B while it is in memory), and
keeps only counts, the labels of labelled records and the top section flips, so 100,000
articles need no more memory than their labels. A feature pass is not shared between the
models: each artifact carries its own vocabulary and weights, and a retrained model's
vocabulary differs from the old one's.

Per head: sections, the share of articles given the same section and the A -> B flips per
pair of sections; tags, the mean Jaccard similarity of the two tag sets (1 when both are
empty), the share of identical sets, and per tag how often B adds it (B has it, A not) or
removes it. Where records carry labels (``LabelledArticle``), both models' metrics come
from ``model.evaluation`` over the same predictions, side by side with the difference.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from model.evaluation import EvaluationReport, score_predictions
from model.predictor import Predictor
from schemas import ArticleEvent, Classification

BATCH_SIZE = 512
DEFAULT_TOP = 10
_NO_SECTION = "(none)"
_TITLE_CHARS = 80


@dataclass(frozen=True, slots=True)
class SectionFlip:
    """One article whose section differs between A and B, with both models' scores."""

    article_id: str
    title: str
    section_a: str
    score_a: float
    section_b: str
    score_b: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {
            "article_id": self.article_id,
            "title": self.title,
            "a": {"section": self.section_a, "score": self.score_a},
            "b": {"section": self.section_b, "score": self.score_b},
        }


@dataclass(frozen=True, slots=True)
class TagChange:
    """How often A and B predicted one tag, and how often B added or removed it."""

    tag: str
    predicted_a: int
    predicted_b: int
    added: int
    removed: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {
            "tag": self.tag,
            "predicted_a": self.predicted_a,
            "predicted_b": self.predicted_b,
            "added": self.added,
            "removed": self.removed,
        }


@dataclass(frozen=True, slots=True)
class Comparison:
    """Everything ``compare`` found; render it as text or JSON."""

    model_a: tuple[str, str]
    model_b: tuple[str, str]
    articles: int
    section_agreement: float
    section_flips: tuple[tuple[str, str, int], ...]
    tag_jaccard: float
    tag_exact_agreement: float
    tag_changes: tuple[TagChange, ...]
    top_flips: tuple[SectionFlip, ...]
    evaluation_a: EvaluationReport | None
    evaluation_b: EvaluationReport | None

    @property
    def flipped_sections(self) -> int:
        """Articles whose section differs."""
        return sum(count for _, _, count in self.section_flips)

    def metric_differences(self) -> list[tuple[str, float, float, float]]:
        """(metric, A, B, B - A) for every summary metric both evaluations have."""
        return _metric_rows(self.evaluation_a, self.evaluation_b)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        labelled = None
        if self.evaluation_a is not None and self.evaluation_b is not None:
            labelled = {
                "a": self.evaluation_a.to_dict(),
                "b": self.evaluation_b.to_dict(),
                "difference": {name: diff for name, _, _, diff in self.metric_differences()},
            }
        return {
            "model_a": {"name": self.model_a[0], "version": self.model_a[1]},
            "model_b": {"name": self.model_b[0], "version": self.model_b[1]},
            "articles": self.articles,
            "sections": {
                "agreement": self.section_agreement,
                "flipped": self.flipped_sections,
                "flips": [
                    {"from": a, "to": b, "count": count} for a, b, count in self.section_flips
                ],
            },
            "tags": {
                "mean_jaccard": self.tag_jaccard,
                "exact_agreement": self.tag_exact_agreement,
                "changes": [change.to_dict() for change in self.tag_changes],
            },
            "top_section_flips": [flip.to_dict() for flip in self.top_flips],
            "labelled": labelled,
        }

    def render_text(self) -> str:
        """A human-readable report."""
        a_name, b_name = "/".join(self.model_a), "/".join(self.model_b)
        lines = [f"A = {a_name}", f"B = {b_name}", f"{self.articles} article(s)", ""]
        lines.append(
            f"sections: agreement {self.section_agreement:.4f} ({self.flipped_sections} flipped)"
        )
        for a, b, count in self.section_flips:
            lines.append(f"  {a} -> {b}: {count}")
        lines.append("")
        lines.append(
            f"tags: mean Jaccard {self.tag_jaccard:.4f},"
            f" identical sets {self.tag_exact_agreement:.4f}"
        )
        changed = [c for c in self.tag_changes if c.added or c.removed]
        if changed:
            width = max(len("tag"), *(len(c.tag) for c in changed))
            lines.append(f"  {'tag':<{width}}        A        B    added  removed")
            lines.extend(
                f"  {c.tag:<{width}}  {c.predicted_a:7d}  {c.predicted_b:7d}"
                f"  {c.added:7d}  {c.removed:7d}"
                for c in changed
            )
        report_a, report_b = self.evaluation_a, self.evaluation_b
        if report_a is not None and report_b is not None and self.metric_differences():
            lines.append("")
            lines.append(f"labelled records: {report_a.records}  (metric, A, B, B - A)")
            lines.extend(
                f"  {name:<24} {a:.4f}  {b:.4f}  {diff:+.4f}"
                for name, a, b, diff in self.metric_differences()
            )
            lines.extend(_label_f1_changes(report_a, report_b))
        if self.top_flips:
            lines.append("")
            lines.append(f"top {len(self.top_flips)} section flip(s), both models most sure first:")
            lines.extend(
                f"  {f.article_id}: {f.section_a} {f.score_a:.2f} -> {f.section_b}"
                f" {f.score_b:.2f}  | {f.title}"
                for f in self.top_flips
            )
        return "\n".join(lines)


@dataclass
class _Labelled:
    section: str | None
    tags: list[str] | None


@dataclass
class _Tally:
    articles: int = 0
    same_section: int = 0
    flips: Counter[tuple[str, str]] = field(default_factory=Counter)
    jaccard_sum: float = 0.0
    same_tags: int = 0
    tags_a: Counter[str] = field(default_factory=Counter)
    tags_b: Counter[str] = field(default_factory=Counter)
    added: Counter[str] = field(default_factory=Counter)
    removed: Counter[str] = field(default_factory=Counter)
    # A min-heap of (min(score_a, score_b), -order, flip): the N surest flips survive.
    top: list[tuple[float, int, SectionFlip]] = field(default_factory=list)
    labels: list[_Labelled] = field(default_factory=list)
    labelled_a: list[Classification] = field(default_factory=list)
    labelled_b: list[Classification] = field(default_factory=list)


def compare(
    a: Predictor,
    b: Predictor,
    articles: Iterable[ArticleEvent],
    *,
    top: int = DEFAULT_TOP,
    batch_size: int = BATCH_SIZE,
) -> Comparison:
    """Classify ``articles`` with both models and compare the results (see the module doc).

    An article that carries ``section`` or ``tags`` labels (a ``LabelledArticle``) also
    counts in the side-by-side metrics; other articles only in the agreement figures.
    """
    if top < 0:
        raise ValueError(f"top must be at least 0, got {top}")
    tally = _Tally()
    iterator = iter(articles)
    while batch := list(islice(iterator, batch_size)):
        _add_batch(tally, batch, a.predict(batch), b.predict(batch), top)
    evaluation_a = evaluation_b = None
    if tally.labels:
        evaluation_a = score_predictions(a, tally.labels, tally.labelled_a)
        evaluation_b = score_predictions(b, tally.labels, tally.labelled_b)
    n = tally.articles
    changes = [
        TagChange(tag, tally.tags_a[tag], tally.tags_b[tag], tally.added[tag], tally.removed[tag])
        for tag in sorted(set(tally.tags_a) | set(tally.tags_b))
    ]
    changes.sort(key=lambda c: (-(c.added + c.removed), c.tag))
    flips = sorted(tally.flips.items(), key=lambda item: (-item[1], item[0]))
    return Comparison(
        model_a=(a.name, a.version),
        model_b=(b.name, b.version),
        articles=n,
        section_agreement=tally.same_section / n if n else 1.0,
        section_flips=tuple((x, y, count) for (x, y), count in flips),
        tag_jaccard=tally.jaccard_sum / n if n else 1.0,
        tag_exact_agreement=tally.same_tags / n if n else 1.0,
        tag_changes=tuple(changes),
        top_flips=tuple(flip for *_, flip in sorted(tally.top, reverse=True)),
        evaluation_a=evaluation_a,
        evaluation_b=evaluation_b,
    )


def _add_batch(
    tally: _Tally,
    batch: Sequence[ArticleEvent],
    predicted_a: Sequence[Classification],
    predicted_b: Sequence[Classification],
    top: int,
) -> None:
    for article, pa, pb in zip(batch, predicted_a, predicted_b, strict=True):
        order = tally.articles
        tally.articles += 1
        section_a = pa.section.label if pa.section is not None else _NO_SECTION
        section_b = pb.section.label if pb.section is not None else _NO_SECTION
        if section_a == section_b:
            tally.same_section += 1
        else:
            tally.flips[(section_a, section_b)] += 1
            if top:
                score_a = pa.section.score if pa.section is not None else 0.0
                score_b = pb.section.score if pb.section is not None else 0.0
                flip = SectionFlip(
                    article.article_id,
                    _short(article.title or article.body),
                    section_a,
                    score_a,
                    section_b,
                    score_b,
                )
                entry = (min(score_a, score_b), -order, flip)
                if len(tally.top) < top:
                    heapq.heappush(tally.top, entry)
                elif entry[:2] > tally.top[0][:2]:
                    heapq.heapreplace(tally.top, entry)
        tags_a = {score.label for score in pa.tags}
        tags_b = {score.label for score in pb.tags}
        union = tags_a | tags_b
        tally.jaccard_sum += len(tags_a & tags_b) / len(union) if union else 1.0
        tally.same_tags += tags_a == tags_b
        tally.tags_a.update(tags_a)
        tally.tags_b.update(tags_b)
        tally.added.update(tags_b - tags_a)
        tally.removed.update(tags_a - tags_b)
        section = getattr(article, "section", None)
        tags = getattr(article, "tags", None)
        if section is not None or tags is not None:
            tally.labels.append(_Labelled(section, tags))
            tally.labelled_a.append(pa)
            tally.labelled_b.append(pb)


def _short(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= _TITLE_CHARS else flat[: _TITLE_CHARS - 3] + "..."


def _metric_rows(
    a: EvaluationReport | None, b: EvaluationReport | None
) -> list[tuple[str, float, float, float]]:
    if a is None or b is None:
        return []
    pairs: list[tuple[str, float, float]] = []
    if a.sections is not None and b.sections is not None:
        pairs.append(("section_accuracy", a.sections.accuracy, b.sections.accuracy))
        pairs.append(("section_macro_f1", a.sections.macro_f1, b.sections.macro_f1))
    if a.tags is not None and b.tags is not None:
        pairs.append(("tag_micro_precision", a.tags.micro_precision, b.tags.micro_precision))
        pairs.append(("tag_micro_recall", a.tags.micro_recall, b.tags.micro_recall))
        pairs.append(("tag_micro_f1", a.tags.micro_f1, b.tags.micro_f1))
        pairs.append(("tag_macro_f1", a.tags.macro_f1, b.tags.macro_f1))
    return [(name, x, y, y - x) for name, x, y in pairs]


_LABEL_ROWS_SHOWN = 15


def _label_f1_changes(a: EvaluationReport, b: EvaluationReport) -> list[str]:
    """The labels whose F1 moved most, A -> B (at most ``_LABEL_ROWS_SHOWN`` rows)."""
    rows: list[tuple[float, str, float, float]] = []
    for head_a, head_b in ((a.sections, b.sections), (a.tags, b.tags)):
        if head_a is None or head_b is None:
            continue
        f1_a = {row.label: row.f1 for row in head_a.per_label}
        f1_b = {row.label: row.f1 for row in head_b.per_label}
        for label in f1_a.keys() | f1_b.keys():
            x, y = f1_a.get(label, 0.0), f1_b.get(label, 0.0)
            if x != y:
                rows.append((abs(y - x), label, x, y))
    if not rows:
        return []
    rows.sort(key=lambda row: (-row[0], row[1]))
    shown = rows[:_LABEL_ROWS_SHOWN]
    lines = [f"  F1 per label, largest changes first ({len(shown)} of {len(rows)} changed):"]
    lines.extend(f"    {label:<22} {x:.4f}  {y:.4f}  {y - x:+.4f}" for _, label, x, y in shown)
    return lines
