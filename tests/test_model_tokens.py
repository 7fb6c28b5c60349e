"""The array tokeniser finds scikit-learn's tokens, and its lookups are exact."""

from __future__ import annotations

import re

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from model.features import TOKEN_PATTERN, CompiledVectorizer, make_vectorizer
from model.tokens import CodePoints, TermIndex, runs, space_table, word_table

#: Letters, digits, marks, spaces, punctuation and lone surrogates, with a bias towards a
#: few words so that texts share terms.
TEXT = st.text(
    alphabet=st.one_of(
        st.sampled_from(list("ab É_1 \n\t.-")),
        st.characters(codec=None, exclude_categories=()),
    ),
    max_size=60,
)


def test_character_tables_agree_with_the_regular_expressions() -> None:
    """Every code point is a word character exactly when ``\\w`` matches it, and a space
    exactly when ``\\s`` matches it (surrogates included)."""
    words, spaces = word_table(), space_table()
    for code in [*range(0, 0x3000), 0xD800, 0xDFFF, 0xFEFF, 0x1D7CE, 0x10FFFF]:
        assert words[code] == (re.fullmatch(r"\w", chr(code)) is not None), hex(code)
        assert spaces[code] == (re.fullmatch(r"\s", chr(code)) is not None), hex(code)


@given(st.lists(TEXT, min_size=1, max_size=6))
@settings(max_examples=200, deadline=None)
def test_tokens_are_the_token_patterns_matches(texts: list[str]) -> None:
    """The runs of two or more word characters of a batch are, text by text, what
    scikit-learn's token pattern finds in the lowercased text."""
    batch = CodePoints.of(texts)
    starts, lengths = runs(word_table()[batch.codes])
    long_enough = lengths >= 2
    starts, lengths = starts[long_enough], lengths[long_enough]
    rows = batch.rows(starts)
    joined = "".join(map(chr, batch.codes.tolist()))
    for row, text in enumerate(texts):
        found = [
            joined[s : s + n]
            for s, n in zip(starts[rows == row], lengths[rows == row], strict=True)
        ]
        assert found == re.findall(TOKEN_PATTERN, text.lower())


@given(st.lists(TEXT, min_size=1, max_size=8), st.lists(TEXT, min_size=1, max_size=4))
@settings(max_examples=150, deadline=None)
def test_compiled_word_features_equal_scikit_learns(seen: list[str], unseen: list[str]) -> None:
    """Fitted on any texts, the compiled vectoriser gives scikit-learn's TF-IDF rows for
    them and for texts it never saw, and counts their tokens."""
    vectorizer = make_vectorizer(ngram_max=2, min_df=1, max_df=1.0)
    try:
        vectorizer.fit(seen)
    except ValueError:  # no token at all: nothing to compare
        return
    compiled = CompiledVectorizer.from_fitted(vectorizer)
    counted = compiled.transform_counted(seen + unseen)
    expected = vectorizer.transform(seen + unseen).toarray()
    np.testing.assert_allclose(counted.matrix.toarray(), expected, atol=1e-6)
    tokens = [len(re.findall(TOKEN_PATTERN, text.lower())) for text in seen + unseen]
    assert counted.tokens.tolist() == tokens
    assert (counted.unknown_tokens[: len(seen)] == 0).all()


def test_a_window_is_found_only_when_every_code_point_matches() -> None:
    """Lookups return the equal term's position, and -1 for a string that differs in one
    code point, in length, or that is a term's prefix."""
    terms = ["shares", "share", "zürich", "ab", "\U0001d7ce\U0001d7cf"]
    index = TermIndex(terms)
    text = "shares sharez share zürich zurich ab abc \U0001d7ce\U0001d7cf"
    batch = CodePoints.of([text])
    words = text.split(" ")
    starts = np.cumsum([0] + [len(w) + 1 for w in words[:-1]]).astype(np.int64)
    lengths = np.array([len(w) for w in words], dtype=np.int64)
    found = index.lookup(batch, index.hasher(batch), starts, lengths)
    assert found.tolist() == [0, -1, 1, 2, -1, 3, -1, 4]


def test_an_index_of_no_terms_finds_nothing() -> None:
    """An empty vocabulary looks every window up as unknown."""
    index = TermIndex([])
    batch = CodePoints.of(["any words"])
    starts, lengths = np.array([0, 4]), np.array([3, 5])
    assert index.lookup(batch, index.hasher(batch), starts, lengths).tolist() == [-1, -1]
