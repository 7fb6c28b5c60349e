"""Character n-gram features: exact compiled transform, data-only artifacts, and the
feature set chosen by cross-validation."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model import ArtifactError, Predictor, TrainingError, load_labelled, save_artifact, train
from model.char_features import CompiledCharVectorizer, make_char_vectorizer
from model.feature_sets import FEATURE_SETS, CompiledFeatures, TextFeatures
from model.tokens import CharGrams, CodePoints
from model.training import (
    AUTO_TOLERANCE,
    CHOSEN_BY_CALLER,
    CHOSEN_BY_SECTIONS_ONLY,
    CHOSEN_BY_TAGS,
    ParamValue,
)

DEMO = Path(__file__).resolve().parent.parent / "model" / "samples" / "demo.jsonl"

TEXT = st.text(
    alphabet=st.one_of(
        st.sampled_from(list("ab É_1 \n\t\u2003.-")),
        st.characters(codec=None, exclude_categories=()),
    ),
    max_size=40,
)


def _char_wb(text: str, low: int, high: int) -> list[str]:
    vectorizer = make_char_vectorizer(ngram_min=low, ngram_max=high, min_df=1, max_df=1.0)
    grams: list[str] = vectorizer.build_analyzer()(text)
    return grams


@given(TEXT, st.integers(1, 4), st.integers(0, 3))
@settings(max_examples=200, deadline=None)
def test_char_grams_are_scikit_learns_char_wb_grams(text: str, low: int, extra: int) -> None:
    """The windows of a text are, as a multiset, the n-grams scikit-learn's ``char_wb``
    analyser makes of it, for any range of lengths."""
    batch = CodePoints.of([text, "filler"])
    grams = CharGrams.of(batch, low, low + extra)
    chars = "".join(map(chr, grams.codes.tolist()))
    found = [
        chars[start : start + length]
        for start, length, row in zip(grams.starts, grams.lengths, grams.rows, strict=True)
        if row == 0
    ]
    assert sorted(found) == sorted(_char_wb(text, low, low + extra))


@given(st.lists(TEXT, min_size=1, max_size=6), st.lists(TEXT, min_size=1, max_size=3))
@settings(max_examples=120, deadline=None)
def test_compiled_char_features_equal_scikit_learns(seen: list[str], unseen: list[str]) -> None:
    """Fitted on any texts, the compiled character vectoriser gives scikit-learn's TF-IDF
    rows for them and for texts it never saw."""
    vectorizer = make_char_vectorizer(ngram_min=2, ngram_max=4, min_df=1, max_df=1.0)
    try:
        vectorizer.fit(seen)
    except ValueError:  # no n-gram at all: nothing to compare
        return
    compiled = CompiledCharVectorizer.from_fitted(vectorizer)
    expected = vectorizer.transform(seen + unseen).toarray()
    np.testing.assert_allclose(compiled.transform(seen + unseen).toarray(), expected, atol=1e-6)


@pytest.mark.parametrize("features", FEATURE_SETS)
def test_compiled_feature_sets_equal_the_training_features(features: str) -> None:
    """For every feature set, the plain data the training side exports transforms texts
    into the training side's rows, column for column."""
    texts = [f"{a.title}\n{a.body}" for a in load_labelled([DEMO]).records]
    training = TextFeatures(
        features,  # type: ignore[arg-type]
        ngram_max=2,
        min_df=2,
        max_df=1.0,
        char_ngram_min=2,
        char_ngram_max=5,
        char_min_df=2,
    )
    expected = training.fit_transform(texts[:40])
    words, idf, ngram_max, grams, low, high = training.export()
    compiled = CompiledFeatures(
        features,  # type: ignore[arg-type]
        vocabulary=words,
        idf=idf,
        ngram_max=ngram_max,
        char_vocabulary=grams,
        char_ngram_min=low,
        char_ngram_max=high,
    )
    assert compiled.n_features == expected.shape[1]
    np.testing.assert_allclose(
        compiled.transform(texts[:40]).toarray(), expected.toarray(), atol=1e-6
    )
    unseen = training.transform(texts[40:])
    np.testing.assert_allclose(
        compiled.transform(texts[40:]).toarray(), unseen.toarray(), atol=1e-6
    )


@pytest.mark.parametrize("features", ["char", "word+char"])
def test_a_char_model_round_trips_through_a_data_only_artifact(
    features: str, tmp_path: Path
) -> None:
    """A model with character n-grams saves as arrays.npz + params.json (no pickle) and
    loads to the same classifications and explanations as the model in memory."""
    records = load_labelled([DEMO]).records
    trained = train(records, name="chars", version="1", features=features)
    directory = save_artifact(trained, tmp_path / "model")
    assert sorted(p.name for p in directory.iterdir()) == [
        "arrays.npz",
        "model.json",
        "params.json",
    ]
    assert trained.manifest.params["features_chosen_by"] == CHOSEN_BY_CALLER
    params = json.loads((directory / "params.json").read_text())
    assert params["features"] == features
    assert params["char_ngram_min"] == 2
    assert params["char_ngram_max"] == 5
    loaded = Predictor.load(directory)
    assert loaded.predict(records[:8], explain=3) == Predictor.from_trained(trained).predict(
        records[:8], explain=3
    )


def test_a_word_model_artifact_leaves_the_char_fields_out(tmp_path: Path) -> None:
    """A model of words alone writes params.json without any character n-gram field, as
    before they existed, so older versions still load it. Without a feature set, records
    that carry tags train on words (the tags head would otherwise hold n-gram weights for
    every tag), and the manifest says why."""
    trained = train(load_labelled([DEMO]).records, name="words", version="1")
    assert trained.manifest.params["features"] == "word"
    assert trained.manifest.params["features_chosen_by"] == CHOSEN_BY_TAGS
    params = json.loads((save_artifact(trained, tmp_path / "m") / "params.json").read_text())
    assert not {"features", "char_vocabulary", "char_ngram_min", "char_ngram_max"} & set(params)


def test_by_default_section_labels_alone_train_on_words_and_char_ngrams() -> None:
    """Without a feature set, records with section labels and no tags (a section archive
    such as bbc-news) train on words and character n-grams, the best cross-validated
    section model, with the section head's C for n-grams; the manifest says why."""
    records = [r.model_copy(update={"tags": None}) for r in load_labelled([DEMO]).records[::2]]
    trained = train(records, name="sections", version="1", cv_folds=3)
    assert trained.model.features == trained.manifest.params["features"] == "word+char"
    assert trained.manifest.params["features_chosen_by"] == CHOSEN_BY_SECTIONS_ONLY
    assert trained.model.char_vocabulary
    assert trained.manifest.tags == []


def test_char_fields_on_a_word_model_are_refused(tmp_path: Path) -> None:
    """A params.json that says ``word`` but lists character n-grams is refused on load."""
    trained = train(load_labelled([DEMO]).records, name="words", version="1")
    directory = save_artifact(trained, tmp_path / "m")
    params = json.loads((directory / "params.json").read_text())
    params["char_vocabulary"] = ["ab"]
    raw = json.dumps(params).encode()
    manifest = json.loads((directory / "model.json").read_text())

    manifest["files"]["params.json"] = {
        "bytes": len(raw),
        "sha256": hashlib.sha256(raw).hexdigest(),
    }
    (directory / "params.json").write_bytes(raw)
    (directory / "model.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="words alone has no character n-grams"):
        Predictor.load(directory)


def test_auto_keeps_the_cheapest_feature_set_near_the_best_score() -> None:
    """``features="auto"`` fits every feature set, records each one's score in the
    manifest and keeps the first (cheapest) within AUTO_TOLERANCE of the best."""
    trained = train(load_labelled([DEMO]).records, name="auto", version="1", features="auto")
    params = trained.manifest.params
    scores = {name: float(params[f"cv_score_{name}"] or 0.0) for name in FEATURE_SETS}
    top = max(scores.values())
    chosen = next(name for name in FEATURE_SETS if scores[name] >= top - AUTO_TOLERANCE)
    assert params["features"] == chosen == trained.model.features
    assert params["features_chosen_by"] == "cross-validation"


def test_an_unknown_feature_set_is_refused() -> None:
    """A feature set that is not word, char, word+char or auto is a TrainingError."""
    with pytest.raises(TrainingError, match="features must be one of"):
        train(load_labelled([DEMO]).records, name="x", version="1", features="bytes")


@pytest.mark.parametrize(
    ("features", "c", "headline_weight"), [("word", 0.5, 0.1), ("word+char", 2.0, 0.2)]
)
def test_the_section_head_defaults_follow_the_feature_set(
    features: str, c: float, headline_weight: float
) -> None:
    """Left unset, the section head's C and headline-view weight are those cross-validation
    chose for the feature set (C 2 and weight 0.2 with n-grams: more headline accuracy
    at the same full-text accuracy), and the model equals one trained with them given."""
    records = [r.model_copy(update={"tags": None}) for r in load_labelled([DEMO]).records[::3]]
    given: dict[str, ParamValue] = {
        "features": features,
        "section_c": c,
        "section_headline_weight": headline_weight,
    }
    default = train(records, name="d", version="1", cv_folds=2, params={"features": features})
    explicit = train(records, name="d", version="1", cv_folds=2, params=given)
    np.testing.assert_array_equal(default.model.weights, explicit.model.weights)
    np.testing.assert_array_equal(default.model.bias, explicit.model.bias)
    assert default.model.section_temperature == explicit.model.section_temperature
