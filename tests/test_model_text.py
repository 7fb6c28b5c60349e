"""Early views of an article: headline alone; headline + first sentence; full text."""

from __future__ import annotations

from model.text import MAX_LEAD_CHARS, compose_text, first_sentence, later_sentences, view_text


def test_first_sentence_stops_at_the_first_real_sentence_end() -> None:
    """The lead ends at the first full stop that ends a sentence, not at an initial."""
    body = "The U.K. Treasury and F.W. Woolworth said profits rose 5 pct. Shares fell. More."
    assert first_sentence(body) == "The U.K. Treasury and F.W. Woolworth said profits rose 5 pct."


def test_first_sentence_ends_at_a_paragraph_break_and_is_capped() -> None:
    """A first paragraph without a full stop is the lead; a run-on text is cut at the cap."""
    assert first_sentence("Qtly div 12 cts vs 12 cts\n\nPay July 1") == "Qtly div 12 cts vs 12 cts"
    assert len(first_sentence("word " * 500)) == MAX_LEAD_CHARS
    assert first_sentence("  ") == ""


def test_views_are_what_the_service_would_receive_early() -> None:
    """Each view equals the composed text of a headline with the body cut to that view."""
    title, body = "Striker scores twice", "The striker scored twice in the final on Sunday. More."
    lead = "The striker scored twice in the final on Sunday."
    assert view_text(title, body, "full", 2) == compose_text(title, body, 2)
    assert view_text(title, body, "lead", 2) == compose_text(title, lead, 2)
    assert view_text(title, body, "headline", 2) == compose_text(title, "", 2)
    # Without a headline the earliest text is the first sentence.
    assert view_text("", body, "headline", 2) == lead


def test_later_sentences_skip_the_lead_and_fragments() -> None:
    """The sentences after the first come back in order (cut as the lead is cut); a closing
    fragment under 20 characters does not."""
    body = (
        "Shares rose on Monday in early trade in Tokyo. The bank raised its forecast for "
        "the coming year.\n\nOil prices fell sharply overnight\n\nEnd of report."
    )
    assert later_sentences(body, 10) == [
        "The bank raised its forecast for the coming year.",
        "Oil prices fell sharply overnight",
    ]
    assert later_sentences("Only one sentence here, and nothing more after it.", 10) == []
    assert later_sentences("", 10) == []
    assert later_sentences(body, 0) == []


def test_later_sentences_are_spread_over_a_long_article() -> None:
    """Over the limit, the sentences taken are spread evenly from start to end."""
    body = " ".join(f"Sentence number {i:02d} of this rather long story." for i in range(21))
    taken = later_sentences(body, 4)
    assert taken == [f"Sentence number {i:02d} of this rather long story." for i in (1, 6, 11, 16)]
