"""Explanations, token counts and the training baseline, computed by the model package."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import DEMO_CORPUS, demo_texts
from jsonschema import Draft202012Validator

from model import Predictor
from model.baseline import TrainingBaseline
from model.explain import top_terms
from model.features import CompiledVectorizer, make_vectorizer
from schemas import ArticleEvent, Classification, encode_classified
from schemas.generate import render_schemas


def _events(count: int = 40) -> list[ArticleEvent]:
    texts = demo_texts()
    return [
        ArticleEvent(article_id=f"a{i}", title=title, body=body)
        for i, (title, body) in enumerate(texts[:count])
    ]


def _brute_force(
    predictor: Any, event: ArticleEvent, label_column: int, k: int
) -> list[tuple[str, float]]:
    """The top-k positive contributions from the dense row, sorted the documented way."""
    compiled = predictor._compiled
    row = compiled.features([event]).matrix.toarray()[0]
    contributions = row.astype(np.float32) * compiled.weights[:, label_column]
    rounded = [round(float(value), 6) for value in contributions]
    ranked = sorted(
        (column for column, value in enumerate(rounded) if value > 0),
        key=lambda column: (-rounded[column], column),
    )
    vocabulary = compiled.model.vocabulary
    return [(vocabulary[column], rounded[column]) for column in ranked[:k]]


@pytest.mark.parametrize("k", [1, 3, 50])
def test_explanations_equal_the_dense_computation(predictor: Any, k: int) -> None:
    """Each listed term and contribution is tfidf x weight of that label, the k largest first."""
    events = _events()
    classifications = predictor.predict(events, explain=k)
    checked_tags = 0
    for event, classification in zip(events, classifications, strict=True):
        explanations = classification.explanations
        assert explanations is not None
        assert classification.section is not None
        assert explanations.section is not None
        assert explanations.section["label"] == classification.section.label
        column = predictor.sections.index(classification.section.label)
        got = [(t["term"], t["contribution"]) for t in explanations.section["terms"]]
        assert got == _brute_force(predictor, event, column, k)
        assert [e["label"] for e in explanations.tags] == [t.label for t in classification.tags]
        for explained in explanations.tags:
            column = len(predictor.sections) + predictor.tags.index(explained["label"])
            got = [(t["term"], t["contribution"]) for t in explained["terms"]]
            assert got == _brute_force(predictor, event, column, k)
            checked_tags += 1
    assert checked_tags > 10


def test_explaining_changes_nothing_else_and_is_off_by_default(predictor: Any) -> None:
    """Without explain the output has no explanations key; with it, every other byte matches."""
    events = _events(24)
    plain = predictor.predict(events)
    explained = predictor.predict(events, explain=5)
    for event, without, with_terms in zip(events, plain, explained, strict=True):
        assert without.explanations is None
        raw = json.loads(encode_classified(event, without, "2026-11-29T00:00:00Z"))
        assert list(raw["classification"]) == ["section", "tags", "model"]
        extended = json.loads(encode_classified(event, with_terms, "2026-11-29T00:00:00Z"))
        assert list(extended["classification"]) == ["section", "tags", "model", "explanations"]
        del extended["classification"]["explanations"]
        assert extended == raw


def test_explained_output_validates_against_the_checked_in_schema(predictor: Any) -> None:
    """An explained event is valid under the JSON Schema and round-trips through pydantic."""
    validator = Draft202012Validator(
        json.loads(render_schemas()["classified-article-event.v1.json"])
    )
    for event, classification in zip(
        _events(), predictor.predict(_events(), explain=4), strict=True
    ):
        raw = encode_classified(event, classification, "2026-11-29T00:00:00Z")
        validator.validate(json.loads(raw))
        again = Classification.model_validate(json.loads(raw)["classification"])
        assert again == Classification.model_validate(classification.model_dump())


def test_an_article_without_known_terms_has_an_empty_explanation(predictor: Any) -> None:
    """Nothing in the vocabulary: the section is still explained, with no terms."""
    event = ArticleEvent(article_id="x", title="Zqxv wubbly", body="Frobnitz glorp quuxes.")
    (classification,) = predictor.predict([event], explain=3)
    assert classification.explanations is not None
    assert classification.explanations.section is not None
    assert classification.explanations.section["terms"] == []


@pytest.mark.parametrize("explain", [-1, 51])
def test_explain_out_of_range_is_refused(predictor: Any, explain: int) -> None:
    """explain must lie in 0..50 (the contract's limit on terms per label)."""
    with pytest.raises(ValueError, match="explain must be between 0 and 50"):
        predictor.predict(_events(1), explain=explain)


def test_equal_contributions_come_in_column_order() -> None:
    """Ties are broken by the term's column, whatever the order of the sparse entries."""
    # One article with four terms; columns 3 and 1 contribute equally, 0 negatively.
    features = sp.csr_matrix(
        (np.array([0.5, 0.5, 0.5, 0.5], np.float32), np.array([3, 0, 1, 2]), np.array([0, 4])),
        shape=(1, 4),
    )
    weights = np.array([[-1.0], [0.4], [0.2], [0.4]], dtype=np.float32)
    found = top_terms(features, weights, np.array([0]), np.array([0]), k=5)
    assert found.columns.tolist() == [1, 3, 2]
    assert found.contributions.tolist() == [0.2, 0.2, 0.1]
    assert found.starts.tolist() == [0, 3]


def test_pairs_keep_their_order_and_an_article_may_repeat() -> None:
    """Several labels of one article and of several articles come back grouped as asked."""
    features = sp.csr_matrix(np.array([[1.0, 0.0, 2.0], [0.0, 3.0, 1.0]], dtype=np.float32))
    weights = np.array([[1.0, -1.0], [1.0, 1.0], [1.0, 2.0]], dtype=np.float32)
    found = top_terms(features, weights, np.array([1, 0, 0]), np.array([1, 1, 0]), k=1)
    assert found.starts.tolist() == [0, 1, 2, 3]
    assert found.columns.tolist() == [1, 2, 2]
    assert found.contributions.tolist() == [3.0, 4.0, 2.0]


def test_token_counts_name_the_unknown_unigrams() -> None:
    """Counting the terms also counts every token and those outside the vocabulary."""
    vectorizer = make_vectorizer(ngram_max=2, min_df=1, max_df=1.0).fit(
        ["shares rose", "rates fell"]
    )
    compiled = CompiledVectorizer.from_fitted(vectorizer)
    counted = compiled.transform_counted(
        ["shares rose rose", "fell shares zorg", "", "zorg blip", "rates fell shares"]
    )
    assert counted.tokens.tolist() == [3, 3, 0, 2, 3]
    # Only unigrams count: the unseen bigram "fell shares" is no unknown token.
    assert counted.unknown_tokens.tolist() == [0, 1, 0, 2, 0]
    np.testing.assert_array_equal(
        counted.matrix.toarray(),
        compiled.transform(
            ["shares rose rose", "fell shares zorg", "", "zorg blip", "rates fell shares"]
        ).toarray(),
    )


def test_predict_batch_reports_tokens_per_article(predictor: Any) -> None:
    """The predictor's token counts cover the text it reads (the title repeated)."""
    known = _events(1)[0]
    unknown = ArticleEvent(article_id="x", title="Zqxv wubbly", body="Frobnitz glorp quuxes.")
    batch = predictor.predict_batch([known, unknown])
    assert batch.tokens[1] == 2 * 2 + 3
    assert batch.unknown_tokens[1] == batch.tokens[1]
    assert 0 <= batch.unknown_tokens[0] < batch.tokens[0] / 2
    assert [c.model_dump() for c in batch.classifications] == [
        c.model_dump() for c in predictor.predict([known, unknown])
    ]


def test_baseline_is_the_training_label_mix(predictor: Any) -> None:
    """The baseline's prior and tag rate are the demo corpus's section shares and mean tags."""
    rows = [json.loads(line) for line in DEMO_CORPUS.read_text("utf-8").splitlines()]
    sections = Counter(row["section"] for row in rows if row.get("section") is not None)
    tagged = [row["tags"] for row in rows if row.get("tags") is not None]
    baseline = predictor.baseline
    assert isinstance(baseline, TrainingBaseline)
    assert baseline.model_version == predictor.version
    assert baseline.sections == predictor.sections
    total = sum(sections.values())
    assert baseline.section_prior == pytest.approx([sections[s] / total for s in baseline.sections])
    assert baseline.tags_per_article == pytest.approx(sum(map(len, tagged)) / len(tagged))


def test_empty_batch_gives_empty_prediction(predictor: Any) -> None:
    """No articles, no work: empty lists throughout."""
    batch = predictor.predict_batch([], explain=3)
    assert (batch.classifications, batch.tokens, batch.unknown_tokens) == ([], [], [])
    assert isinstance(predictor, Predictor)
