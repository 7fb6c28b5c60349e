"""--explain and --drift-window: the options, the offline command and the per-record checks."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from conftest import serve_settings

from schemas import (
    ArticleEvent,
    Classification,
    Explanations,
    LabelExplanation,
    LabelScore,
    ModelRef,
    TermContribution,
)
from service.commands.cli import main
from service.config.commands import ConfigError
from service.core.classify import classify_batch, classify_values
from service.core.deadletter import DeadLetterReason
from service.core.records import Classified, Refused, Topics

SAMPLES = Path(__file__).resolve().parent.parent / "model" / "samples" / "articles.jsonl"


def _serve(*argv: str) -> Any:
    return serve_settings("--model", "m", *argv)


def test_serve_options_default_to_off_and_a_thousand_articles() -> None:
    """Explanations are off and the drift window holds 1,000 articles unless configured."""
    settings = _serve()
    assert settings.explain == 0
    assert settings.drift_window == 1000
    configured = _serve("--explain", "5", "--drift-window", "250")
    assert (configured.explain, configured.drift_window) == (5, 250)


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--explain", "51"], "--explain='51'"),
        (["--explain", "-1"], "--explain='-1'"),
        (["--explain", "some"], "--explain='some'"),
        (["--drift-window", "99"], "--drift-window='99'"),
    ],
)
def test_bad_serve_values_name_the_option(argv: list[str], named: str) -> None:
    """Out-of-range values are refused with the option and the value named."""
    with pytest.raises(ConfigError, match=named):
        _serve(*argv)


def _classify(model_dir: Path, tmp_path: Path, *extra: str) -> list[dict[str, Any]]:
    out = tmp_path / f"out{len(list(tmp_path.iterdir()))}.jsonl"
    argv = ["classify", "--model", str(model_dir), "--input", str(SAMPLES), "--output", str(out)]
    assert main([*argv, *extra]) == 0
    return [json.loads(line) for line in out.read_text("utf-8").splitlines()]


def test_offline_classify_explains_on_request(
    model_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """classify --explain K (or its variable) adds at most K terms per label; default: none."""
    plain = _classify(model_dir, tmp_path)
    explained = _classify(model_dir, tmp_path, "--explain", "2")
    monkeypatch.setenv("ARTICLE_CLASSIFIER_EXPLAIN", "2")
    from_env = _classify(model_dir, tmp_path)
    assert "classified 24 article(s)" in capsys.readouterr().err
    assert from_env == [
        {**row, "classified_at": other["classified_at"]}
        for row, other in zip(explained, from_env, strict=True)
    ]
    assert len(plain) == len(explained) == 24
    for without, with_terms in zip(plain, explained, strict=True):
        assert "explanations" not in without["classification"]
        explanations = with_terms["classification"].pop("explanations")
        assert explanations["section"]["label"] == without["classification"]["section"]["label"]
        assert 0 < len(explanations["section"]["terms"]) <= 2
        assert [e["label"] for e in explanations["tags"]] == [
            t["label"] for t in without["classification"]["tags"]
        ]
        del with_terms["classified_at"], without["classified_at"]
        assert with_terms == without


@pytest.mark.parametrize("value", ["51", "-1", "x"])
def test_offline_classify_refuses_a_bad_explain(
    model_dir: Path, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """An out-of-range --explain is a usage error (exit status 2) naming the option."""
    assert main(["classify", "--model", str(model_dir), "--explain", value]) == 2
    assert f"--explain='{value}'" in capsys.readouterr().err


class _Explaining:
    """A model whose explanations carry a contribution no JSON output may hold."""

    name = "faulty"
    version = "1"

    def predict(self, articles: Sequence[ArticleEvent]) -> list[Classification]:
        bad = LabelExplanation(
            label="sport", terms=[TermContribution(term="goal", contribution=float("nan"))]
        )
        return [
            Classification.model_construct(
                section=LabelScore(label="sport", score=0.9),
                tags=[],
                model=ModelRef(name="faulty", version="1"),
                explanations=Explanations.model_construct(section=bad, tags=[]),
            )
            for _ in articles
        ]


def test_a_faulty_explanation_is_a_classification_error() -> None:
    """A non-finite contribution is caught before encoding, like an out-of-range score."""
    value = json.dumps({"article_id": "a", "title": "Cup final"}).encode()
    (outcome,) = classify_values([value], _Explaining(), max_event_bytes=10_000)
    assert isinstance(outcome, Refused)
    assert outcome.reason is DeadLetterReason.CLASSIFICATION_ERROR
    assert outcome.message == "the model's result failed on this article (ValueError)"


class _Record:
    topic = "articles"
    partition = 0
    timestamp = 0
    key = None
    headers = ()

    def __init__(self, offset: int, value: bytes) -> None:
        self.offset = offset
        self.value = value


def test_verdicts_carry_token_counts_and_the_batch_its_baseline(predictor: Any) -> None:
    """The real model fills the per-article token counts and names its training baseline."""
    known = json.dumps({"article_id": "a", "title": "Striker scores twice in cup final"})
    unknown = json.dumps({"article_id": "b", "title": "Zqxv wubbly", "body": "Frobnitz glorp."})
    records = [_Record(0, known.encode()), _Record(1, unknown.encode()), _Record(2, b"{")]
    result = classify_batch(
        records, predictor, topics=Topics("out", "dlq"), max_event_bytes=10_000, explain=1
    )
    assert result.baselines["default"] is predictor.baseline
    first, second = result.verdicts
    assert first.tokens == 2 * 6
    assert first.unknown_tokens < first.tokens
    assert second.tokens == second.unknown_tokens == 2 * 2 + 2
    outcome = classify_values([known.encode()], predictor, max_event_bytes=10_000, explain=1)[0]
    assert isinstance(outcome, Classified)
    assert b'"explanations"' in outcome.value
