"""How one editor's verdict is scored against the model: the one rule of the service's
live quality metrics (``service.feedback.quality``) and the desk's quality view.

A verdict is scored on its own, from the labels it carries: the section as ``agreed`` or
``corrected`` when it has both the predicted and the final section; each tag as
``true_positive`` (given and kept), ``false_positive`` (given, removed) or
``false_negative`` (added) when it has both tag lists.
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas import ArticleFeedback

NO_VERSION = "none"
AGREED, CORRECTED = "agreed", "corrected"
TRUE_POSITIVE, FALSE_POSITIVE, FALSE_NEGATIVE = "true_positive", "false_positive", "false_negative"


@dataclass(frozen=True, slots=True)
class Scored:
    """One verdict scored: the model version, the section's outcome (predicted label,
    outcome) if any, and one (tag, outcome) per tag involved."""

    version: str
    section: tuple[str, str] | None
    tags: tuple[tuple[str, str], ...]


def score_verdict(feedback: ArticleFeedback) -> Scored:
    """The outcomes one verdict counts, under the model version the editor saw."""
    section: tuple[str, str] | None = None
    predicted, final = feedback.predicted_section, feedback.section
    if predicted is not None and final is not None:
        section = (predicted, AGREED if predicted == final else CORRECTED)
    tags: list[tuple[str, str]] = []
    if feedback.predicted_tags is not None and feedback.tags is not None:
        given, kept = set(feedback.predicted_tags), set(feedback.tags)
        for chosen, outcome in (
            (given & kept, TRUE_POSITIVE),
            (given - kept, FALSE_POSITIVE),
            (kept - given, FALSE_NEGATIVE),
        ):
            tags.extend((tag, outcome) for tag in sorted(chosen))
    return Scored(feedback.model_version or NO_VERSION, section, tuple(tags))
