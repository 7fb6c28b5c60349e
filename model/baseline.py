"""What the training data looked like, as drift signals compare live predictions with it.

Everything comes from the manifest's cross-validation counts, so every artifact has it and
nothing new is stored: a section's ``support`` is how many section-labelled training
articles carry it, and a tag's ``support`` how many tag-labelled articles carry that tag.
"""

from __future__ import annotations

from dataclasses import dataclass

from model.manifest import ModelCard


@dataclass(frozen=True, slots=True)
class TrainingBaseline:
    """The training section mix and tag rate of one model version (small; pickles cheaply).

    ``section_prior[i]`` is the share of section-labelled training articles in
    ``sections[i]`` (empty without a section head); ``tags_per_article`` the mean number of
    tags of a tag-labelled training article (None without a tag head).
    """

    model_version: str
    sections: tuple[str, ...]
    section_prior: tuple[float, ...]
    tags_per_article: float | None

    @classmethod
    def from_card(cls, card: ModelCard) -> TrainingBaseline:
        """The baseline of the model ``card`` describes."""
        prior: tuple[float, ...] = ()
        section = card.metrics.section
        if section is not None:
            support = {row.label: row.support for row in section.per_label}
            counts = [support.get(label, 0) for label in card.sections]
            total = sum(counts)
            if total:
                prior = tuple(count / total for count in counts)
        tags_per_article = None
        tags = card.metrics.tags
        if tags is not None and tags.records:
            tags_per_article = sum(row.support for row in tags.per_label) / tags.records
        return cls(card.version, tuple(card.sections), prior, tags_per_article)
