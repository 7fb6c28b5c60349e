"""How an article becomes the one string the feature pipeline sees, and its early views.

A newsroom asks for a classification long before the full text exists: a CMS has a
headline and a standfirst, a wire flash has one or two sentences. Training on *views* of
each article that look like those early texts (``VIEWS``) keeps the model accurate and its
confidence honest on them.
"""

from __future__ import annotations

import re
from typing import Final, Literal, Protocol

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


View = Literal["full", "lead", "headline"]

#: The views, longest first: full text; headline + first sentence (a standfirst or a wire
#: flash); headline alone.
VIEWS: Final[tuple[View, ...]] = ("full", "lead", "headline")

# A sentence ends at . ! or ? (closing quotes or brackets may follow) before whitespace and
# a capital, a digit or an opening quote, or at a paragraph break (group ``para``). A dot
# after a lone capital is an initial ("U.K.", "F.W."), not an end; full stops closer than
# ``_MIN_LEAD_CHARS`` to the start are skipped, which steps over most other abbreviations
# ("Mr.") there.
_SENTENCE_END = re.compile(
    r"(?<!\b[A-Z])[.!?][\"'\u2019\u201d)\]]*(?=\s+[\"'\u2018\u201c(\[]?[A-Z0-9])"
    r"|(?P<para>\n\s*\n)"
)
_MIN_LEAD_CHARS = 40
#: A lead is cut here at the latest (a body without punctuation is still one "sentence").
MAX_LEAD_CHARS: Final = 400


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


def first_sentence(body: str) -> str:
    """The body's first sentence (or first paragraph), at most ``MAX_LEAD_CHARS`` long."""
    text = body.strip()
    for match in _SENTENCE_END.finditer(text, 0, MAX_LEAD_CHARS):
        if match.group("para") or match.end() >= _MIN_LEAD_CHARS:
            return text[: match.end()].strip()
    return text[:MAX_LEAD_CHARS]


#: Body sentences shorter than this are fragments, not examples of their own.
_MIN_SENTENCE_CHARS = 20


def later_sentences(body: str, limit: int) -> list[str]:
    """Up to ``limit`` of the body's sentences after its first, spread evenly over the
    article. They are cut as ``first_sentence`` cuts (a sentence under 40 characters runs
    on into the next); a fragment under 20 characters is left out."""
    rest = body.strip()
    found: list[str] = []
    while rest:
        sentence = first_sentence(rest)
        found.append(sentence)
        rest = rest[len(sentence) :].strip()
    later = [sentence for sentence in found[1:] if len(sentence) >= _MIN_SENTENCE_CHARS]
    if len(later) <= limit:
        return later
    return [later[(i * len(later)) // limit] for i in range(limit)]


def view_text(title: str, body: str, view: View, title_repeats: int) -> str:
    """The vectoriser's string for one view of an article (``compose_text`` of that view)."""
    if view == "full":
        return compose_text(title, body, title_repeats)
    if view == "lead":
        return compose_text(title, first_sentence(body), title_repeats)
    # A headline-less article's earliest text is its first sentence.
    return compose_text(title, "", title_repeats) if title.strip() else first_sentence(body)
