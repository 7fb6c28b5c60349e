"""The inference API: load an artifact once, classify batches of articles."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from model.artifact import load_artifact
from model.inference import CompiledModel, LinearTextModel, ScoredBatch
from model.manifest import ModelCard
from model.text import HasTitleAndBody
from model.training import TrainedModel
from model.trust import ArtifactTrust
from schemas import Classification, LabelScore, ModelRef

# Scores are rounded so that outputs carry no float32 noise digits.
SCORE_DECIMALS = 6


class Predictor:
    """Classifies articles with a loaded model.

    Everything is computed at construction; ``predict`` only reads shared state, so one
    instance can serve several threads. Section scores are temperature-scaled softmax
    probabilities; tag scores are ``sigmoid(slope * (score - threshold))``, so a tag is
    predicted exactly when its margin is positive (its score is then at least 0.5).
    """

    __slots__ = (
        "_compiled",
        "_model_ref",
        "_n_sections",
        "artifact_sha256",
        "manifest",
        "sections",
        "tags",
    )

    def __init__(
        self, manifest: ModelCard, model: LinearTextModel, artifact_sha256: str | None = None
    ) -> None:
        self.manifest = manifest
        #: sha256 of the artifact's model.json (None for a model that was never saved).
        self.artifact_sha256 = artifact_sha256
        self.sections: tuple[str, ...] = tuple(model.sections)
        self.tags: tuple[str, ...] = tuple(model.tags)
        self._compiled = CompiledModel(model)
        self._n_sections = len(self.sections)
        self._model_ref = ModelRef(name=manifest.name, version=manifest.version)

    @classmethod
    def load(cls, directory: Path, trust: ArtifactTrust | None = None) -> Predictor:
        """Load and verify the artifact in ``directory`` (raises ``ArtifactError``, and
        ``ArtifactTrustError`` when ``trust`` asks for a digest or signature it lacks)."""
        loaded = load_artifact(directory, trust)
        return cls(loaded.manifest, loaded.model, loaded.sha256)

    @classmethod
    def from_trained(cls, trained: TrainedModel) -> Predictor:
        """A predictor for a model still in memory (no artifact round-trip)."""
        return cls(trained.manifest, trained.model)

    @property
    def name(self) -> str:
        """Model name from the manifest."""
        return self.manifest.name

    @property
    def version(self) -> str:
        """Model version from the manifest."""
        return self.manifest.version

    def score(self, articles: Sequence[HasTitleAndBody]) -> ScoredBatch:
        """Raw score matrices of a batch (section probabilities, tag scores and decisions)."""
        return self._compiled.score(articles)

    def predict(self, articles: Sequence[HasTitleAndBody]) -> list[Classification]:
        """One classification per article, in order. Text = headline (weighted) + body."""
        if not articles:
            return []
        batch = self._compiled.score(articles)
        sections = self._sections(batch)
        tags = self._tags(batch, len(articles))
        ref = self._model_ref
        # The values are valid by construction, so the per-object validation is skipped:
        # it would cost more than the whole linear model.
        return [
            Classification.model_construct(section=section, tags=labels, model=ref)
            for section, labels in zip(sections, tags, strict=True)
        ]

    def _sections(self, batch: ScoredBatch) -> list[LabelScore | None]:
        if not self._n_sections:
            return [None] * batch.tag_scores.shape[0]
        probabilities = batch.section_probabilities
        best = probabilities.argmax(axis=1)
        scores = np.round(
            probabilities[np.arange(best.size), best].astype(np.float64), SCORE_DECIMALS
        )
        names = self.sections
        return [
            LabelScore.model_construct(label=names[index], score=score)
            for index, score in zip(best.tolist(), scores.tolist(), strict=True)
        ]

    def _tags(self, batch: ScoredBatch, n_articles: int) -> list[list[LabelScore]]:
        result: list[list[LabelScore]] = [[] for _ in range(n_articles)]
        rows, columns = np.nonzero(batch.tag_decisions)
        if rows.size == 0:
            return result
        scores = batch.tag_scores[rows, columns].astype(np.float64)
        # Highest score first within each article; ties broken by tag order, for stability.
        order = np.lexsort((columns, -scores, rows))
        names = self.tags
        rounded = np.round(scores[order], SCORE_DECIMALS).tolist()
        for row, column, score in zip(
            rows[order].tolist(), columns[order].tolist(), rounded, strict=True
        ):
            result[row].append(LabelScore.model_construct(label=names[column], score=score))
        return result
