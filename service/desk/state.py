"""What the desk knows, in bounded memory: the last N classified articles, which articles
editors have judged, the recent verdicts, and the open live feeds.

Everything here runs on the event loop and costs a few dictionary operations per record;
``benchmarks/bench_desk.py`` measures it. The review order uses only what a classified
record carries: the top section's score (the runner-up is not published, but with the
sections' softmax it is at most ``1 - score``, so ``2 * score - 1`` is the smallest margin
the record allows) and each predicted tag's score (0.5 is the tag's own threshold).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import Counter, OrderedDict, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from schemas import ArticleFeedback, ClassifiedArticleEvent
from service.core.verdicts import (
    AGREED,
    CORRECTED,
    FALSE_NEGATIVE,
    FALSE_POSITIVE,
    TRUE_POSITIVE,
    Scored,
    score_verdict,
)

#: The model reads no more of a body than this (model/text.py); the desk keeps as much.
MAX_BODY_CHARS = 50_000
#: Labels remembered for completion, at most.
_MAX_LABELS = 5_000
#: A live feed that falls this far behind is dropped (its browser reconnects).
_FEED_BACKLOG = 256
#: Blocks of the quality trend.
_TREND_BLOCKS = 8


@dataclass(frozen=True, slots=True)
class DeskArticle:
    """One classified article as the desk shows it."""

    seq: int
    article_id: str
    event_id: str | None
    title: str
    body: str
    section: str | None
    section_score: float | None
    uncertain: bool
    tags: tuple[tuple[str, float], ...]
    model_name: str
    model_version: str
    classified_at: str
    #: ``classification.explanations`` as published, or None when the service sent none.
    explanations: dict[str, Any] | None
    #: How sure the model is at its least sure label: smaller is reviewed first.
    doubt: float

    @property
    def tag_labels(self) -> list[str]:
        return [label for label, _ in self.tags]


def doubt(section_score: float | None, uncertain: bool, tags: Iterable[float]) -> float:
    """The smallest margin a classified record allows, over its section and tags, in [0, 1].

    The section: at least ``2 * score - 1`` ahead of the runner-up (0 when the service
    flagged it ``uncertain``); a tag: ``2 * |score - 0.5|`` from its threshold.
    """
    margins = [abs(score - 0.5) * 2 for score in tags]
    if section_score is not None:
        margins.append(0.0 if uncertain else max(0.0, 2 * section_score - 1))
    return round(min(margins, default=1.0), 6)


def to_desk_article(event: ClassifiedArticleEvent, seq: int) -> DeskArticle:
    """The desk's view of a classified event."""
    classification = event.classification
    section = classification.section
    tags = tuple((tag.label, tag.score) for tag in classification.tags)
    explanations = classification.explanations
    return DeskArticle(
        seq=seq,
        article_id=event.article_id,
        event_id=event.event_id,
        title=event.title or "",
        body=(event.body or "")[:MAX_BODY_CHARS],
        section=section.label if section else None,
        section_score=section.score if section else None,
        uncertain=bool(section and section.uncertain),
        tags=tags,
        model_name=classification.model.name,
        model_version=classification.model.version,
        classified_at=event.classified_at,
        explanations=explanations.model_dump(mode="json") if explanations else None,
        doubt=doubt(
            section.score if section else None,
            bool(section and section.uncertain),
            (score for _, score in tags),
        ),
    )


@dataclass(frozen=True, slots=True)
class Filters:
    """The feed's filters; empty ones match everything."""

    section: str = ""
    tag: str = ""
    model: str = ""
    min_score: float | None = None
    max_score: float | None = None
    query: str = ""

    def matches(self, article: DeskArticle) -> bool:
        score = article.section_score if article.section_score is not None else 0.0
        if (
            (self.section and article.section != self.section)
            or (self.tag and self.tag not in article.tag_labels)
            or (self.model and article.model_version != self.model)
            or (self.min_score is not None and score < self.min_score)
            or (self.max_score is not None and score > self.max_score)
        ):
            return False
        text = self.query.strip()
        if not text or text == article.article_id:
            return True
        title = article.title.lower()
        return all(word in title for word in text.lower().split())


@dataclass(slots=True)
class Verdict:
    """One verdict seen on the feedback topic, scored once."""

    scored: Scored
    final_section: str | None
    predicted_section: str | None


@dataclass
class LabelQuality:
    """Counts of one label over the recent verdicts."""

    label: str
    counts: Counter[str] = field(default_factory=Counter)

    @property
    def agreement(self) -> float | None:
        """Sections: agreed / judged. Tags: kept / (kept + removed + added)."""
        if AGREED in self.counts or CORRECTED in self.counts:
            total = self.counts[AGREED] + self.counts[CORRECTED]
            return self.counts[AGREED] / total if total else None
        total = sum(self.counts[o] for o in (TRUE_POSITIVE, FALSE_POSITIVE, FALSE_NEGATIVE))
        return self.counts[TRUE_POSITIVE] / total if total else None


@dataclass(frozen=True, slots=True)
class Quality:
    """The quality view: per label agreement, a trend, and what editors add."""

    verdicts: int
    section_agreement: float | None
    sections: list[LabelQuality]
    tags: list[LabelQuality]
    #: Section agreement of consecutive blocks of verdicts, oldest first.
    trend: list[tuple[int, float | None]]
    added_tags: list[tuple[str, int]]
    moved_to: list[tuple[str, int]]


class DeskState:
    """The desk's memory: articles, judged ids, verdicts, labels and live feeds."""

    def __init__(self, *, max_articles: int, max_verdicts: int) -> None:
        self.max_articles = max_articles
        self.max_verdicts = max_verdicts
        self._articles: OrderedDict[str, DeskArticle] = OrderedDict()
        self._judged: OrderedDict[str, str] = OrderedDict()
        self._verdicts: deque[Verdict] = deque(maxlen=max_verdicts)
        self._sections: dict[str, None] = {}
        self._tags: dict[str, None] = {}
        self._versions: dict[str, None] = {}
        self._seq = itertools.count()
        self._feeds: set[asyncio.Queue[DeskArticle | None]] = set()

    # -- articles ---------------------------------------------------------------------

    def add_article(self, event: ClassifiedArticleEvent) -> DeskArticle:
        """Keep a classified article (the newest N), and push it to the live feeds."""
        article = to_desk_article(event, next(self._seq))
        self._articles.pop(article.article_id, None)
        self._articles[article.article_id] = article
        while len(self._articles) > self.max_articles:
            self._articles.popitem(last=False)
        if article.section:
            _remember(self._sections, article.section)
        for label in article.tag_labels:
            _remember(self._tags, label)
        _remember(self._versions, article.model_version)
        for feed in list(self._feeds):
            try:
                feed.put_nowait(article)
            except asyncio.QueueFull:
                self._feeds.discard(feed)
        return article

    def article(self, article_id: str) -> DeskArticle | None:
        return self._articles.get(article_id)

    def __len__(self) -> int:
        return len(self._articles)

    def feed(self, filters: Filters, limit: int = 200) -> list[DeskArticle]:
        """The newest matching articles, newest first."""
        found: list[DeskArticle] = []
        for article in reversed(self._articles.values()):
            if filters.matches(article):
                found.append(article)
                if len(found) >= limit:
                    break
        return found

    def queue(self) -> list[DeskArticle]:
        """Articles nobody has judged, the least sure first (then the newest)."""
        waiting = [a for a in self._articles.values() if a.article_id not in self._judged]
        waiting.sort(key=lambda a: (a.doubt, -a.seq))
        return waiting

    def waiting(self) -> int:
        """How many articles the queue holds (without sorting them)."""
        return sum(1 for article_id in self._articles if article_id not in self._judged)

    def judged_by(self, article_id: str) -> str | None:
        """Who judged the article last (``""`` when the verdict named nobody)."""
        return self._judged.get(article_id)

    # -- verdicts ---------------------------------------------------------------------

    def add_verdict(self, feedback: ArticleFeedback) -> None:
        """An article judged: it leaves the queue, and the verdict counts for quality."""
        self._judged.pop(feedback.article_id, None)
        self._judged[feedback.article_id] = feedback.editor or ""
        while len(self._judged) > self.max_verdicts + self.max_articles:
            self._judged.popitem(last=False)
        self._verdicts.append(
            Verdict(score_verdict(feedback), feedback.section, feedback.predicted_section)
        )
        if feedback.section:
            _remember(self._sections, feedback.section)
        for label in feedback.tags or ():
            _remember(self._tags, label)

    def labels(self) -> tuple[list[str], list[str], list[str]]:
        """Known sections, tags and model versions (for completion and the filters)."""
        return sorted(self._sections), sorted(self._tags), list(reversed(self._versions))

    def quality(self) -> Quality:
        """Agreement over the recent verdicts, scored as the service's live metrics are."""
        sections: dict[str, LabelQuality] = {}
        tags: dict[str, LabelQuality] = {}
        added: Counter[str] = Counter()
        moved: Counter[str] = Counter()
        for verdict in self._verdicts:
            scored = verdict.scored
            if scored.section is not None:
                label, outcome = scored.section
                sections.setdefault(label, LabelQuality(label)).counts[outcome] += 1
                if outcome == CORRECTED and verdict.final_section:
                    moved[verdict.final_section] += 1
            for label, outcome in scored.tags:
                tags.setdefault(label, LabelQuality(label)).counts[outcome] += 1
                if outcome == FALSE_NEGATIVE:
                    added[label] += 1
        agreed = sum(q.counts[AGREED] for q in sections.values())
        judged = agreed + sum(q.counts[CORRECTED] for q in sections.values())
        return Quality(
            verdicts=len(self._verdicts),
            section_agreement=agreed / judged if judged else None,
            sections=sorted(sections.values(), key=lambda q: q.label),
            tags=sorted(tags.values(), key=lambda q: q.label),
            trend=_trend(self._verdicts),
            added_tags=added.most_common(10),
            moved_to=moved.most_common(10),
        )

    # -- live feeds -------------------------------------------------------------------

    def subscribe(self) -> asyncio.Queue[DeskArticle | None]:
        """A queue receiving every new article (None: the desk is closing)."""
        feed: asyncio.Queue[DeskArticle | None] = asyncio.Queue(_FEED_BACKLOG)
        self._feeds.add(feed)
        return feed

    def unsubscribe(self, feed: asyncio.Queue[DeskArticle | None]) -> None:
        self._feeds.discard(feed)

    @property
    def feeds(self) -> int:
        return len(self._feeds)

    def close_feeds(self) -> None:
        """Tell every live feed to end (at shutdown)."""
        for feed in list(self._feeds):
            with contextlib.suppress(asyncio.QueueFull):
                feed.put_nowait(None)
        self._feeds.clear()


def _remember(labels: dict[str, None], label: str) -> None:
    if label not in labels and len(labels) < _MAX_LABELS:
        labels[label] = None


def _trend(verdicts: deque[Verdict]) -> list[tuple[int, float | None]]:
    """Section agreement of up to ``_TREND_BLOCKS`` equal blocks of verdicts, oldest first."""
    judged = [v.scored.section[1] for v in verdicts if v.scored.section is not None]
    if not judged:
        return []
    size = max(1, -(-len(judged) // _TREND_BLOCKS))
    return [(len(block), block.count(AGREED) / len(block)) for block in _blocks(judged, size)]


def _blocks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
