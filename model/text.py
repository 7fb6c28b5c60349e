"""How an article becomes the one string the feature pipeline sees."""

from __future__ import annotations

from typing import Protocol

#: The model reads at most this much of a body. The longest article in the research
#: corpora has 25,452 characters, so no training text and no normal article is cut, and
#: their predictions are unchanged; a 1 MB body would otherwise cost 65-75 ms of
#: tokenising with the research model (a batch of 256 such bodies, 18 s), for no better
#: classification. Capped, it costs 2 ms.
MAX_BODY_CHARS = 50_000


class HasTitleAndBody(Protocol):
    """Anything with a headline and a body; ``schemas.ArticleEvent`` satisfies it."""

    @property
    def title(self) -> str: ...

    @property
    def body(self) -> str: ...


def compose_text(title: str, body: str, title_repeats: int) -> str:
    """Join headline and body (its first ``MAX_BODY_CHARS`` characters), repeating the
    headline to weight it.

    A headline is the densest summary of an article; repeating it raises its term
    frequencies relative to the body without a second vectoriser (which would double the
    inference cost). Training and inference both compose text here, so the body cap is
    part of what the model sees, not a service setting.
    """
    body = body[:MAX_BODY_CHARS]
    if title_repeats <= 0 or not title:
        return body
    return "\n".join([title] * title_repeats + [body])
