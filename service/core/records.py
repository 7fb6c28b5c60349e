"""The plain record types every part of the service passes around: what goes into a batch,
what comes out of it, and what a model must offer. No behaviour beyond building them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple, Protocol, runtime_checkable

from schemas import ArticleEvent, Classification
from service.core.deadletter import DeadLetterReason
from service.core.headers import Header

if TYPE_CHECKING:
    from model.baseline import TrainingBaseline
    from model.predictor import BatchPrediction


class ArticlePredictor(Protocol):
    """What the service needs of ``model.Predictor``."""

    @property
    def name(self) -> str: ...

    @property
    def version(self) -> str: ...

    def predict(self, articles: Sequence[ArticleEvent]) -> list[Classification]: ...


@runtime_checkable
class ObservedPredictor(ArticlePredictor, Protocol):
    """A predictor that also explains and counts tokens (``model.Predictor``): the service
    asks it for explanations (``--explain``) and for what the drift signals need."""

    @property
    def baselines(self) -> Mapping[str, TrainingBaseline]: ...

    def predict_batch(
        self, articles: Sequence[ArticleEvent], *, explain: int = 0
    ) -> BatchPrediction: ...


class InputRecord(Protocol):
    """The fields of an aiokafka ``ConsumerRecord`` the service reads."""

    @property
    def topic(self) -> str: ...

    @property
    def partition(self) -> int: ...

    @property
    def offset(self) -> int: ...

    @property
    def timestamp(self) -> int: ...

    @property
    def key(self) -> bytes | None: ...

    @property
    def value(self) -> bytes | None: ...

    @property
    def headers(self) -> Sequence[Header]: ...


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One record to produce, and the input record it answers."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[Header]
    source_partition: int
    source_offset: int
    source_timestamp_ms: int
    #: None for a classified article, else the dead-letter reason.
    reason: DeadLetterReason | None = None


#: The model key of the default model (``--model DIR``), as metrics label it.
DEFAULT_MODEL = "default"


class ArticleNotes(NamedTuple):
    """What the predictor said about one article beside its classification: its tokens and
    unknown tokens, the model that answered (a language, or ``default``) and why it went
    to the default model when a language model was expected (``no_model``, ``undetected``)."""

    tokens: int = 0
    unknown_tokens: int = 0
    language: str = DEFAULT_MODEL
    fallback: str | None = None


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the metrics need of one classification (cheap to send between processes).

    ``tokens`` and ``unknown_tokens`` count the tokens of the text the model read and those
    outside its vocabulary (both 0 from a predictor that does not count them).
    ``uncertain``: the section was scored under the model's ``--section-floor``.
    ``language`` names the model that answered and ``fallback`` why an article went to the
    default model (``ArticleNotes``).
    """

    section: str | None
    section_score: float | None
    tag_count: int
    tokens: int = 0
    unknown_tokens: int = 0
    uncertain: bool = False
    language: str = DEFAULT_MODEL
    fallback: str | None = None

    @classmethod
    def of(cls, classification: Classification, notes: ArticleNotes | None = None) -> Verdict:
        section = classification.section
        notes = notes or _NO_NOTES
        return cls(
            section.label if section else None,
            section.score if section else None,
            len(classification.tags),
            notes.tokens,
            notes.unknown_tokens,
            section is not None and section.uncertain is True,
            notes.language,
            notes.fallback,
        )


_NO_NOTES = ArticleNotes()


@dataclass
class BatchResult:
    """What one batch produced, plus what the metrics need to know about it."""

    outgoing: list[Outgoing] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)
    duration_s: float = 0.0
    #: The training baseline of each model that may have classified the batch, by model
    #: key (``Verdict.language``), for drift signals; empty from a predictor without
    #: baselines. References to the models' own objects.
    baselines: Mapping[str, TrainingBaseline] = field(default_factory=dict)
    #: The candidate model's comparison (``--shadow-model``); never published as output.
    shadow: ShadowBatch | None = None


class ShadowScorer(Protocol):
    """Scores a batch's valid articles with a candidate model (``service.core.shadow``):
    ``predictions`` and ``notes`` (which model answered) are the live model's, by
    ``id(event)``."""

    def __call__(
        self,
        valid: Sequence[tuple[InputRecord, ArticleEvent]],
        predictions: dict[int, Classification | Exception],
        notes: Mapping[int, ArticleNotes] | None = None,
    ) -> ShadowBatch: ...


@dataclass(frozen=True, slots=True)
class Topics:
    output: str
    dead_letter: str


@dataclass(frozen=True, slots=True)
class Classified:
    """One article's output record, and what the metrics need of it."""

    value: bytes
    verdict: Verdict


@dataclass(frozen=True, slots=True)
class Refused:
    """Why a record has no output: its dead-letter reason and message (never article text).

    For a ``classification_error``, ``error`` is the exception type and ``trace`` where it
    was raised (code locations only, no values), for the log line.
    """

    reason: DeadLetterReason
    message: str
    article_id: str | None = None
    error: str | None = None
    trace: str | None = None


Outcome = Classified | Refused

#: Failures that say nothing about the record being processed: they propagate.


@dataclass(frozen=True, slots=True)
class ShadowBatch:
    """How the candidate compared with the live model on one batch (cheap to pickle)."""

    model_version: str
    shadow_version: str
    #: Articles both models classified.
    articles: int
    section_agreements: int
    #: Tag agreement of each compared article: |live & candidate| / |live | candidate|
    #: (1.0 when both assign no tag).
    jaccards: tuple[float, ...]
    #: (head, label, ADDED or REMOVED) -> articles where the candidate did that.
    flips: dict[tuple[str, str, str], int]
    #: Articles the candidate failed on (the live output is unaffected).
    failures: int
    duration_s: float
    #: The candidate's output records for ``--shadow-topic`` (empty without it).
    outgoing: tuple[Outgoing, ...] = ()


@dataclass
class Delivery:
    """What a batch finally delivered (rejections replaced by their dead letters)."""

    delivered: list[Outgoing] = field(default_factory=list)
    rejected: int = 0
    values_dropped: int = 0
    given_up: int = 0


class BatchObserver(Protocol):
    """What watches the pipeline's batches (metrics, drift), as Faust's sensors do: called
    on the event loop, after a batch is classified and after it is delivered."""

    def on_classified(self, result: BatchResult) -> None:
        """A batch came back from the model."""

    def on_published(self, delivery: Delivery) -> None:
        """A batch's outputs and dead letters were acknowledged."""
