"""The inference API: load an artifact once, classify batches of articles."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray
from pydantic import BaseModel

from model.artifact import load_artifact
from model.baseline import TrainingBaseline
from model.explain import label_explanations, top_terms
from model.inference import CompiledModel, LinearTextModel, ScoredBatch
from model.manifest import ModelCard
from model.text import HasTitleAndBody
from model.training import TrainedModel
from model.trust import ArtifactTrust
from schemas import (
    MAX_EXPLAIN_TERMS,
    Classification,
    Explanations,
    LabelScore,
    ModelRef,
)

# Scores are rounded so that outputs carry no float32 noise digits.
SCORE_DECIMALS = 6


#: The key of the model that answers every article no language model takes: how metrics
#: and ``BatchPrediction.languages`` name it (``model.languages``).
DEFAULT_MODEL_KEY = "default"


@dataclass(frozen=True, slots=True, eq=False)
class BatchPrediction:
    """The classifications of a batch, and what the model made of each article's text.

    ``tokens[i]`` counts the tokens of the text the model read for article ``i`` (the title
    counted as often as the model repeats it) and ``unknown_tokens[i]`` those of them that
    are not in the vocabulary. ``uncertain`` is how many of the articles got a section
    scored below the predictor's section floor (0 without a floor). From a predictor that
    routes by language (``model.languages.RoutedPredictor``), ``languages[i]`` names the
    model that answered article ``i`` (a language, or ``default``) and ``fallbacks[i]`` why
    it went to the default model (None when it did not, or for want of nothing); both are
    empty from a single model.
    """

    classifications: list[Classification]
    tokens: list[int]
    unknown_tokens: list[int]
    uncertain: int = 0
    languages: list[str] = field(default_factory=list)
    fallbacks: list[str | None] = field(default_factory=list)


class Predictor:
    """Classifies articles with a loaded model.

    Everything is computed at construction; ``predict`` only reads shared state, so one
    instance can serve several threads. Section scores are temperature-scaled softmax
    probabilities; tag scores are ``sigmoid(slope * (score - threshold))``, so a tag is
    predicted exactly when its margin is positive (its score is then at least 0.5).

    ``section_floor`` (in [0, 1], or None for none): a section scored below it is marked
    ``uncertain: true`` (and one at or above it ``uncertain: false``), so downstream can
    tell a guess from a classification; without a floor the field is left out.
    """

    __slots__ = (
        "_compiled",
        "_model_ref",
        "_n_sections",
        "_vocabulary",
        "artifact_sha256",
        "baseline",
        "baselines",
        "manifest",
        "section_floor",
        "sections",
        "tags",
    )

    def __init__(
        self,
        manifest: ModelCard,
        model: LinearTextModel,
        artifact_sha256: str | None = None,
        *,
        section_floor: float | None = None,
    ) -> None:
        if section_floor is not None and not 0.0 <= section_floor <= 1.0:
            raise ValueError(f"section_floor must be between 0 and 1, got {section_floor}")
        #: Section scores below this are flagged ``uncertain`` (None: no flag at all).
        self.section_floor = section_floor
        self.manifest = manifest
        #: sha256 of the artifact's model.json (None for a model that was never saved).
        self.artifact_sha256 = artifact_sha256
        self.sections: tuple[str, ...] = tuple(model.sections)
        self.tags: tuple[str, ...] = tuple(model.tags)
        self._compiled = CompiledModel(model)
        self._n_sections = len(self.sections)
        self._model_ref = ModelRef(name=manifest.name, version=manifest.version)
        self._vocabulary = model.feature_names
        #: The training section mix and tag rate, for drift signals.
        self.baseline = TrainingBaseline.from_card(manifest)
        #: The baseline of every model behind this predictor, by model key: one model,
        #: so ``default`` (``model.languages.RoutedPredictor`` has one per language).
        self.baselines: Mapping[str, TrainingBaseline] = {DEFAULT_MODEL_KEY: self.baseline}

    @classmethod
    def load(
        cls,
        directory: Path,
        trust: ArtifactTrust | None = None,
        *,
        section_floor: float | None = None,
    ) -> Predictor:
        """Load and verify the artifact in ``directory`` (raises ``ArtifactError``, and
        ``ArtifactTrustError`` when ``trust`` asks for a digest or signature it lacks)."""
        loaded = load_artifact(directory, trust)
        return cls(loaded.manifest, loaded.model, loaded.sha256, section_floor=section_floor)

    @classmethod
    def from_trained(
        cls, trained: TrainedModel, *, section_floor: float | None = None
    ) -> Predictor:
        """A predictor for a model still in memory (no artifact round-trip)."""
        return cls(trained.manifest, trained.model, section_floor=section_floor)

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

    def predict(
        self, articles: Sequence[HasTitleAndBody], *, explain: int = 0
    ) -> list[Classification]:
        """One classification per article, in order. Text = headline (weighted) + body.

        ``explain`` > 0 adds ``explanations``: the ``explain`` terms that raised the score
        of the section and of each predicted tag the most (``model.explain``).
        """
        return self.predict_batch(articles, explain=explain).classifications

    def predict_batch(
        self, articles: Sequence[HasTitleAndBody], *, explain: int = 0
    ) -> BatchPrediction:
        """``predict``, plus each article's token and unknown-token counts."""
        if not 0 <= explain <= MAX_EXPLAIN_TERMS:
            raise ValueError(f"explain must be between 0 and {MAX_EXPLAIN_TERMS}, got {explain}")
        if not articles:
            return BatchPrediction([], [], [])
        features = self._compiled.features(articles)
        batch = self._compiled.score_features(features)
        sections, best, uncertain = self._sections(batch)
        tags, tag_columns = self._tags(batch, len(articles))
        ref = self._model_ref
        if explain:
            explained = self._explain(
                features.matrix,
                best=best,
                tag_columns=tag_columns,
                predicted=(sections, tags),
                k=explain,
            )
            # Valid by construction, as below.
            classifications = [
                Classification.model_construct(
                    section=section, tags=labels, model=ref, explanations=explanation
                )
                for section, labels, explanation in zip(sections, tags, explained, strict=True)
            ]
        else:
            # The values are valid by construction, so the per-object validation is skipped:
            # it would cost more than the whole linear model.
            classifications = [
                _built(
                    Classification,
                    {"section": section, "tags": labels, "model": ref, "explanations": None},
                )
                for section, labels in zip(sections, tags, strict=True)
            ]
        return BatchPrediction(
            classifications,
            features.tokens.tolist(),
            features.unknown_tokens.tolist(),
            uncertain,
        )

    def _explain(
        self,
        matrix: sp.csr_matrix,
        *,
        best: NDArray[np.intp] | None,
        tag_columns: list[list[int]],
        predicted: tuple[list[LabelScore | None], list[list[LabelScore]]],
        k: int,
    ) -> list[Explanations]:
        """Each article's explanations: its section first, then its tags in output order."""
        sections, tags = predicted
        rows: list[int] = []
        labels: list[int] = []
        names: list[str] = []
        for row, (section, columns, scored) in enumerate(
            zip(sections, tag_columns, tags, strict=True)
        ):
            if best is not None and section is not None:
                rows.append(row)
                labels.append(int(best[row]))
                names.append(section.label)
            rows.extend([row] * len(columns))
            labels.extend(self._n_sections + column for column in columns)
            names.extend(tag.label for tag in scored)
        found = top_terms(
            matrix,
            self._compiled.weights,
            np.asarray(rows, dtype=np.intp),
            np.asarray(labels, dtype=np.intp),
            k,
        )
        pairs = iter(label_explanations(found, names, self._vocabulary))
        return [
            Explanations.model_construct(
                section=next(pairs) if section is not None else None,
                tags=[next(pairs) for _ in columns],
            )
            for section, columns in zip(sections, tag_columns, strict=True)
        ]

    def _sections(
        self, batch: ScoredBatch
    ) -> tuple[list[LabelScore | None], NDArray[np.intp] | None, int]:
        """Each article's section, the section columns, and how many are uncertain."""
        if not self._n_sections:
            return [None] * batch.tag_scores.shape[0], None, 0
        probabilities = batch.section_probabilities
        best = probabilities.argmax(axis=1)
        scores = np.round(
            probabilities[np.arange(best.size), best].astype(np.float64), SCORE_DECIMALS
        )
        names = self.sections
        floor = self.section_floor
        if floor is None:
            labels: list[LabelScore | None] = [
                _built(LabelScore, {"label": names[index], "score": score, "uncertain": None})
                for index, score in zip(best.tolist(), scores.tolist(), strict=True)
            ]
            return labels, best, 0
        # Compared on the rounded score, the one the output carries, so that an output's
        # score and its flag always agree.
        below = scores < floor
        labels = [
            _built(LabelScore, {"label": names[index], "score": score, "uncertain": flag})
            for index, score, flag in zip(
                best.tolist(), scores.tolist(), below.tolist(), strict=True
            )
        ]
        return labels, best, int(below.sum())

    def _tags(
        self, batch: ScoredBatch, n_articles: int
    ) -> tuple[list[list[LabelScore]], list[list[int]]]:
        """Each article's predicted tags, and their columns, highest score first."""
        result: list[list[LabelScore]] = [[] for _ in range(n_articles)]
        tag_columns: list[list[int]] = [[] for _ in range(n_articles)]
        rows, columns = np.nonzero(batch.tag_decisions)
        if rows.size == 0:
            return result, tag_columns
        scores = batch.tag_scores[rows, columns].astype(np.float64)
        # Highest score first within each article; ties broken by tag order, for stability.
        order = np.lexsort((columns, -scores, rows))
        names = self.tags
        rounded = np.round(scores[order], SCORE_DECIMALS).tolist()
        for row, column, score in zip(
            rows[order].tolist(), columns[order].tolist(), rounded, strict=True
        ):
            result[row].append(
                _built(LabelScore, {"label": names[column], "score": score, "uncertain": None})
            )
            tag_columns[row].append(column)
        return result, tag_columns


_Built = TypeVar("_Built", bound=BaseModel)
_new = object.__new__
_set = object.__setattr__


def _built(cls: type[_Built], fields: dict[str, Any]) -> _Built:
    """``cls.model_construct(**fields)`` for a model without extras or private attributes,
    given every field: what ``model_construct`` does, without looking up each field's
    default (a third of the output objects' cost). ``fields`` must name every field."""
    built = _new(cls)
    _set(built, "__dict__", fields)
    _set(built, "__pydantic_fields_set__", set(fields))
    _set(built, "__pydantic_extra__", None)
    _set(built, "__pydantic_private__", None)
    return built
