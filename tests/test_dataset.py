"""The dataset command: corrections joined with article text into LabelledArticle JSONL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import DEMO_CORPUS, ROOT, Topics, produce

from devtools.tansu import EmbeddedBroker, ensure_topics
from model import Predictor, load_labelled, train
from schemas import ArticleEvent, LabelledArticle
from service.feedback.dataset import DatasetError, Source, build_dataset, resolve_source

SAMPLES = ROOT / "model" / "samples" / "articles.jsonl"


def _verdict(article_id: str, at: str, **fields: Any) -> dict[str, Any]:
    return {"article_id": article_id, "corrected_at": at, **fields}


def _article(article_id: str, title: str, **fields: Any) -> dict[str, Any]:
    return {"article_id": article_id, "title": title, "body": f"Body of {title}.", **fields}


def _classified(article: dict[str, Any]) -> dict[str, Any]:
    return {
        **article,
        "classification": {
            "section": {"label": "business", "score": 0.9},
            "tags": [],
            "model": {"name": "demo", "version": "v1"},
        },
        "classified_at": "2026-11-20T08:00:00Z",
    }


def _jsonl(path: Path, rows: list[Any]) -> Path:
    lines = [row if isinstance(row, str) else json.dumps(row) for row in rows]
    path.write_text("\n".join(lines) + "\n", "utf-8")
    return path


FEEDBACK = [
    _verdict("a1", "2026-11-20T09:00:00Z", section="politics", event_id="e1"),
    _verdict("a1", "2026-11-20T10:00:00+01:00", tags=["uk"]),  # 09:00Z, same instant, later
    _verdict("a1", "2026-11-20T11:00:00Z", section="world", event_id="e1"),
    _verdict("a1", "2026-11-20T08:00:00Z", section="sport"),  # older: loses, still a conflict
    _verdict("a2", "2026-11-20T09:00:00Z", section="sport", tags=["football", "uk"]),
    _verdict("a2", "2026-11-20T09:05:00Z", section="sport", tags=["uk", "football"]),
    _verdict("a3", "2026-11-20T09:00:00Z", tags=[]),
    '{"article_id": "broken"',
    _verdict("a4", "2026-11-20T09:00:00Z"),  # no label: invalid
]
ARTICLES = [
    _classified(_article("a1", "First version", event_id="e1")),
    _classified(_article("a1", "Second version", event_id="e2")),
    _article("a2", "Cup final", section="cms-own-section", desk="sport"),
    _article("a2", "Cup final, updated"),
    _article("other", "Never corrected"),
    "not json at all",
    {"article_id": "a2", "title": " ", "body": ""},  # unreadable: blank title and body
]


async def test_files_join_latest_verdict_per_head_with_counts(tmp_path: Path) -> None:
    """Per article and head the latest verdict wins (corrected_at, then order); the text is
    the version the winning verdict names, else the last; counts say what happened."""
    feedback = _jsonl(tmp_path / "feedback.jsonl", FEEDBACK)
    articles = _jsonl(tmp_path / "articles.jsonl", ARTICLES)
    out = tmp_path / "out" / "labelled.jsonl"
    report = await build_dataset([Source(path=feedback)], [Source(path=articles)], out)
    rows = [LabelledArticle.model_validate_json(line) for line in out.read_text().splitlines()]
    assert [row.article_id for row in rows] == ["a1", "a2"]
    first, second = rows
    assert (first.title, first.event_id, first.section, first.tags) == (
        "First version",
        "e1",
        "world",
        ["uk"],
    )
    assert (second.title, second.section, second.tags) == (
        "Cup final, updated",
        "sport",
        [
            "football",
            "uk",
        ],
    )
    assert second.model_extra == {}, "unknown article fields (a CMS's 'section') are not kept"
    assert "classification" not in out.read_text()
    assert (report.feedback_records, report.feedback_invalid) == (9, 2)
    assert (report.corrected_articles, report.conflicting) == (3, 1)
    assert (report.article_records, report.article_unreadable) == (7, 2)
    assert (report.joined, report.unmatched) == (2, 1)
    assert any("feedback.jsonl:8: invalid_json" in problem for problem in report.problems)
    assert any("articles.jsonl:6: not JSON" in problem for problem in report.problems)


def test_a_source_is_a_file_or_else_a_topic_on_a_given_broker(tmp_path: Path) -> None:
    """An existing file is read as JSONL; another name is a topic only with a broker given."""
    existing = _jsonl(tmp_path / "f.jsonl", [])
    assert resolve_source(str(existing), None) == Source(path=existing)
    assert resolve_source(str(existing), "127.0.0.1:9") == Source(path=existing)
    assert resolve_source("articles.classified", "127.0.0.1:9") == Source(
        topic="articles.classified"
    )
    with pytest.raises(DatasetError, match="no such file"):
        resolve_source("missing.jsonl", None)


def test_the_command_prints_the_counts_and_refuses_a_missing_source(tmp_path: Path) -> None:
    """`article-classifier dataset` prints joined, unmatched and conflicting counts and the
    skipped lines; a source that is neither a file nor a topic exits 1 with a message."""
    feedback = _jsonl(tmp_path / "feedback.jsonl", FEEDBACK)
    articles = _jsonl(tmp_path / "articles.jsonl", ARTICLES)
    out = tmp_path / "labelled.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARTICLE_CLASSIFIER_")}
    command = [sys.executable, "-m", "service", "dataset", "--feedback", str(feedback)]
    command += ["--articles", str(articles), "--out", str(out)]
    done = subprocess.run(command, capture_output=True, env=env, cwd=ROOT, timeout=120, check=False)
    assert done.returncode == 0, done.stderr.decode()
    stdout = done.stdout.decode()
    assert "joined 2, unmatched 1 (no article text found)" in stdout
    assert "corrections for 3 article(s), 1 conflicting (the latest verdict won)" in stdout
    assert "skipped" in done.stderr.decode()
    assert len(out.read_text().splitlines()) == 2
    command[command.index(str(articles))] = str(tmp_path / "nope.jsonl")
    missing = subprocess.run(
        command, capture_output=True, env=env, cwd=ROOT, timeout=120, check=False
    )
    assert missing.returncode == 1
    assert "nope.jsonl: no such file" in missing.stderr.decode()


@pytest.mark.kafka
async def test_topics_join_like_files(
    broker: EmbeddedBroker, topics: Topics, tmp_path: Path
) -> None:
    """Feedback and classified topics, read from the beginning to their end offsets, give the
    same dataset as the files; a missing topic is a clear error."""
    feedback_topic = f"fb-{topics.input}"
    await ensure_topics(broker.bootstrap_servers, {feedback_topic: 2})
    encoded = [(b"k", (r if isinstance(r, str) else json.dumps(r)).encode()) for r in FEEDBACK]
    await produce(broker.bootstrap_servers, feedback_topic, encoded)
    classified = [(b"k", (r if isinstance(r, str) else json.dumps(r)).encode()) for r in ARTICLES]
    await produce(broker.bootstrap_servers, topics.output, classified)
    out = tmp_path / "from-topics.jsonl"
    report = await build_dataset(
        [Source(topic=feedback_topic)],
        [Source(topic=topics.output)],
        out,
        bootstrap_servers=broker.bootstrap_servers,
    )
    files = tmp_path / "from-files.jsonl"
    await build_dataset(
        [Source(path=_jsonl(tmp_path / "f.jsonl", FEEDBACK))],
        [Source(path=_jsonl(tmp_path / "a.jsonl", ARTICLES))],
        files,
    )
    assert out.read_text() == files.read_text()
    assert (report.joined, report.unmatched, report.conflicting) == (2, 1, 1)
    assert report.article_records == len(ARTICLES)
    with pytest.raises(DatasetError, match="no such topic"):
        await build_dataset(
            [Source(topic=f"missing-{topics.input}")],
            [],
            tmp_path / "none.jsonl",
            bootstrap_servers=broker.bootstrap_servers,
            timeout_s=10,
        )


async def test_retraining_on_corrections_learns_the_corrected_labels(
    tmp_path: Path, predictor: Any
) -> None:
    """Editors move every technology article to a new section "science" and add a new tag
    "gadgets"; a model retrained on the demo corpus with the joined corrections predicts both
    for the unseen sample articles the old model called technology."""
    corpus = load_labelled([DEMO_CORPUS]).records
    technology = [record for record in corpus if record.section == "technology"]
    verdicts = [
        _verdict(
            record.article_id,
            "2026-11-20T09:00:00Z",
            model_version=predictor.version,
            predicted_section="technology",
            section="science",
            tags=sorted({*(record.tags or []), "gadgets"}),
        )
        for record in technology
    ]
    out = tmp_path / "corrections.jsonl"
    report = await build_dataset(
        [Source(path=_jsonl(tmp_path / "feedback.jsonl", verdicts))],
        [Source(path=DEMO_CORPUS)],
        out,
    )
    assert report.joined == len(technology) == 50
    corrected_ids = {record.article_id for record in technology}
    corrections = load_labelled([out]).records
    kept = [record for record in corpus if record.article_id not in corrected_ids]
    retrained = Predictor.from_trained(train([*kept, *corrections], name="retrained", cv_folds=3))
    assert "science" in retrained.sections
    assert "technology" not in retrained.sections
    samples = [ArticleEvent.model_validate_json(line) for line in SAMPLES.read_text().splitlines()]
    before = predictor.predict(samples)
    unseen = [s for s, c in zip(samples, before, strict=True) if c.section.label == "technology"]
    assert unseen, "the sample articles include technology stories"
    for classification in retrained.predict(unseen):
        assert classification.section is not None
        assert classification.section.label == "science"
        assert "gadgets" in {tag.label for tag in classification.tags}
