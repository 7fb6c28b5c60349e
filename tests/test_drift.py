"""Drift signals: the window arithmetic, the divergence, and the tracker's gauges."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from scipy.spatial.distance import jensenshannon

from model.baseline import TrainingBaseline
from service.core.records import Verdict
from service.observe.drift import DriftTracker, DriftWindow, js_divergence
from service.observe.metrics import ServiceMetrics

SECTIONS = ("business", "politics", "sport")
PRIOR = (0.5, 0.3, 0.2)


def _verdict(
    section: str | None = "sport",
    score: float | None = 0.9,
    tags: int = 1,
    tokens: int = 10,
    unknown: int = 1,
    language: str = "default",
) -> Verdict:
    return Verdict(section, score, tags, tokens, unknown, language=language)


verdicts = st.builds(
    _verdict,
    section=st.sampled_from([*SECTIONS, None, "not-a-section"]),
    score=st.one_of(st.none(), st.integers(0, 1_000_000).map(lambda micro: micro / 1_000_000)),
    tags=st.integers(0, 6),
    tokens=st.integers(0, 500),
    unknown=st.integers(0, 500),
)


def _brute_force(window: list[Verdict]) -> dict[str, float | None]:
    """The signals recomputed from scratch over exactly these articles."""
    known = [v.section for v in window if v.section in SECTIONS]
    scores = [v.section_score for v in window if v.section_score is not None]
    tokens = sum(v.tokens for v in window)
    mix = [known.count(label) / len(known) for label in SECTIONS] if known else None
    return {
        "articles": len(window),
        "section_divergence": jensenshannon(mix, PRIOR, base=2) ** 2 if mix else None,
        "unknown_token_share": sum(v.unknown_tokens for v in window) / tokens if tokens else None,
        "mean_section_score": sum(scores) / len(scores) if scores else None,
        "mean_tags": sum(v.tag_count for v in window) / len(window) if window else None,
    }


@given(
    size=st.integers(1, 30),
    batches=st.lists(st.lists(verdicts, max_size=12), max_size=12),
)
def test_the_window_holds_exactly_the_last_articles(
    size: int, batches: list[list[Verdict]]
) -> None:
    """After any sequence of batches the signals equal a recomputation over the last ``size``."""
    window = DriftWindow(size, SECTIONS, PRIOR)
    seen: list[Verdict] = []
    for batch in batches:
        window.add(batch)
        seen.extend(batch)
        found = window.snapshot()
        expected = _brute_force(seen[-size:])
        assert len(window) == found.articles == expected["articles"]
        for name in (
            "section_divergence",
            "unknown_token_share",
            "mean_section_score",
            "mean_tags",
        ):
            value, wanted = getattr(found, name), expected[name]
            if wanted is None:
                assert value is None, name
            else:
                assert value == pytest.approx(wanted, abs=1e-9), name


def test_divergence_is_zero_on_the_prior_and_one_on_a_disjoint_mix() -> None:
    """0 bits for the training mix itself, 1 bit for a mix sharing no section with it."""
    assert js_divergence(PRIOR, PRIOR) == 0.0
    assert js_divergence([0.0, 0.0, 1.0], [0.5, 0.5, 0.0]) == 1.0
    assert js_divergence([1.0, 0.0], [0.5, 0.5]) == pytest.approx(
        jensenshannon([1.0, 0.0], [0.5, 0.5], base=2) ** 2
    )


def test_an_empty_window_has_no_signals() -> None:
    """Nothing seen, nothing computed: every signal is None, not zero."""
    found = DriftWindow(10, SECTIONS, PRIOR).snapshot()
    assert found.articles == 0
    assert found.section_divergence is None
    assert found.unknown_token_share is None
    assert found.mean_section_score is None
    assert found.mean_tags is None


def test_a_model_without_sections_has_no_divergence() -> None:
    """Without a section head (no prior) the divergence stays None; the rest is computed."""
    window = DriftWindow(10, (), ())
    window.add([_verdict(section=None, score=None, tags=2)])
    found = window.snapshot()
    assert found.section_divergence is None
    assert found.mean_section_score is None
    assert found.mean_tags == 2.0


def test_the_window_refuses_sizes_and_priors_that_cannot_work() -> None:
    """A window of no articles, or a prior not matching the sections, is a programming error."""
    with pytest.raises(ValueError, match="at least 1 article"):
        DriftWindow(0, SECTIONS, PRIOR)
    with pytest.raises(ValueError, match="2 prior shares for 3 sections"):
        DriftWindow(5, SECTIONS, (0.5, 0.5))


def _gauges(registry: CollectorRegistry, model: str = "default") -> dict[str, float]:
    names = (
        "section_divergence",
        "unknown_token_share",
        "mean_section_score",
        "mean_tags_per_article",
        "training_tags_per_article",
        "window_articles",
    )
    values = {}
    for name in names:
        value = registry.get_sample_value(f"article_classifier_drift_{name}", {"language": model})
        assert value is not None, name
        values[name] = value
    return values


def test_the_tracker_sets_the_gauges_and_restarts_for_another_model() -> None:
    """Gauges start as NaN, follow the window, and a new model version starts a new window."""
    registry = CollectorRegistry()
    tracker = DriftTracker(ServiceMetrics(registry).drift_gauges)
    before = _gauges(registry)
    assert math.isnan(before["section_divergence"])
    assert math.isnan(before["training_tags_per_article"])

    old = TrainingBaseline("v1", SECTIONS, PRIOR, 1.5)
    tracker.observe([_verdict("sport", 0.8, 2, 10, 5)] * 4, {"default": old}, 100)
    after = _gauges(registry)
    assert after["window_articles"] == 4
    assert after["unknown_token_share"] == 0.5
    assert after["mean_section_score"] == pytest.approx(0.8)
    assert after["mean_tags_per_article"] == 2.0
    assert after["training_tags_per_article"] == 1.5
    assert after["section_divergence"] == pytest.approx(
        jensenshannon([0, 0, 1], PRIOR, base=2) ** 2
    )

    new = TrainingBaseline("v2", SECTIONS, PRIOR, None)
    tracker.observe([_verdict("business", 0.6, 0, 10, 0)], {"default": new}, 100)
    swapped = _gauges(registry)
    assert swapped["window_articles"] == 1
    assert swapped["unknown_token_share"] == 0.0
    assert swapped["mean_section_score"] == pytest.approx(0.6)
    assert math.isnan(swapped["training_tags_per_article"])


def test_the_tracker_ignores_empty_batches_and_works_without_a_baseline() -> None:
    """A batch of only dead letters changes nothing; a predictor without a baseline still
    gives the token, score and tag signals."""
    registry = CollectorRegistry()
    tracker = DriftTracker(ServiceMetrics(registry).drift_gauges)
    tracker.observe([], {}, 100)
    window = "article_classifier_drift_window_articles"
    assert registry.get_sample_value(window, {"language": "default"}) == 0
    tracker.observe([_verdict("sport", 0.7, 1, 4, 1)], {}, 100)
    values = _gauges(registry)
    assert values["window_articles"] == 1
    assert values["unknown_token_share"] == 0.25
    assert math.isnan(values["section_divergence"])


def test_each_language_model_has_its_own_window_against_its_own_baseline() -> None:
    """With one model per language, each model's articles fill its own window and are
    compared with its own training mix; a swap of one model restarts only its window."""
    registry = CollectorRegistry()
    tracker = DriftTracker(ServiceMetrics(registry).drift_gauges)
    english = TrainingBaseline("en-1", SECTIONS, PRIOR, 1.0)
    german = TrainingBaseline("de-1", ("politik", "sport"), (0.5, 0.5), 3.0)
    baselines = {"default": english, "en": english, "de": german}
    batch = [_verdict("sport", 0.8, language="en")] * 3 + [
        _verdict("politik", 0.6, tags=3, language="de")
    ] * 2
    tracker.observe(batch, baselines, 100)
    en, de = _gauges(registry, "en"), _gauges(registry, "de")
    assert (en["window_articles"], de["window_articles"]) == (3, 2)
    assert en["section_divergence"] == pytest.approx(jensenshannon([0, 0, 1], PRIOR, base=2) ** 2)
    assert de["section_divergence"] == pytest.approx(jensenshannon([1, 0], (0.5, 0.5), base=2) ** 2)
    assert (en["training_tags_per_article"], de["training_tags_per_article"]) == (1.0, 3.0)
    assert de["mean_tags_per_article"] == 3.0
    assert _gauges(registry)["window_articles"] == 0

    swapped = {**baselines, "de": TrainingBaseline("de-2", ("politik", "sport"), (0.5, 0.5), 2.0)}
    tracker.observe([_verdict("sport", 0.9, language="de")], swapped, 100)
    assert _gauges(registry, "de")["window_articles"] == 1
    assert _gauges(registry, "de")["training_tags_per_article"] == 2.0
    assert _gauges(registry, "en")["window_articles"] == 3
