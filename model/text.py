"""How an article becomes the one string the feature pipeline sees."""

from __future__ import annotations

from typing import Protocol


class HasTitleAndBody(Protocol):
    """Anything with a headline and a body; ``schemas.ArticleEvent`` satisfies it."""

    @property
    def title(self) -> str: ...

    @property
    def body(self) -> str: ...


def compose_text(title: str, body: str, title_repeats: int) -> str:
    """Join headline and body, repeating the headline to weight it.

    A headline is the densest summary of an article; repeating it raises its term
    frequencies relative to the body without a second vectoriser (which would double the
    inference cost).
    """
    if title_repeats <= 0 or not title:
        return body
    return "\n".join([title] * title_repeats + [body])
