"""The AsyncAPI document: generated from the models, valid for the official parser, true.

The parser runs on Node.js (tools/validate-asyncapi.mjs, @asyncapi/parser pinned in
tools/package-lock.json): skipped without Node or `npm ci --prefix tools`, unless
REQUIRE_OPS_TOOLS=1 (CI).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from ops.asyncapi import generate
from schemas.feedback import ArticleFeedback
from service.core.deadletter import DeadLetterReason

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ROOT / "tools"
SCHEMA_DIR = ROOT / "schemas" / "json"
REQUIRED = os.environ.get("REQUIRE_OPS_TOOLS") == "1"


def _document() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(generate.DOCUMENT_PATH.read_text("utf-8"))
    return loaded


def _parse(path: Path) -> subprocess.CompletedProcess[str]:
    node = shutil.which("node")
    if node is None or not (TOOLS / "node_modules" / "@asyncapi" / "parser").is_dir():
        message = "Node.js with `npm ci --prefix tools` needed for the AsyncAPI parser"
        if REQUIRED:
            pytest.fail(message)
        pytest.skip(message)
    return subprocess.run(
        [node, str(TOOLS / "validate-asyncapi.mjs"), "--strict", str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def test_checked_in_document_matches_the_models() -> None:
    """ops/asyncapi/asyncapi.json is exactly what the generator makes of the pydantic models,
    the dead-letter reasons and the demo model's outputs (run `make ops-files`)."""
    assert generate.DOCUMENT_PATH.read_text("utf-8") == generate.render()


def test_the_official_parser_accepts_the_document() -> None:
    """@asyncapi/parser finds no error and no warning, and sees the three topics."""
    parsed = _parse(generate.DOCUMENT_PATH)
    assert parsed.returncode == 0, parsed.stdout + parsed.stderr
    assert "channels articles, articles.classified, articles.dead-letter" in parsed.stdout


def test_the_parser_check_refuses_a_broken_document(tmp_path: Path) -> None:
    """The parser check is not a rubber stamp: an operation with an AsyncAPI 2 action and a
    reference to a missing message fail it."""
    broken = _document()
    operation = broken["operations"]["consumeArticles"]
    operation["action"] = "subscribe"
    operation["messages"] = [{"$ref": "#/channels/articles/messages/Missing"}]
    path = tmp_path / "asyncapi.json"
    path.write_text(json.dumps(broken))
    parsed = _parse(path)
    assert parsed.returncode == 1, parsed.stdout
    assert "error" in parsed.stdout


def test_channels_name_the_topics_keys_and_dead_letter_reasons() -> None:
    """Input, output, dead-letter and feedback channels carry the default topics; each
    message says what its key is; the dead-letter headers list every reason code the service
    uses."""
    document = _document()
    addresses = {c["address"] for c in document["channels"].values()}
    assert addresses == {
        "articles",
        "articles.classified",
        "articles.dead-letter",
        "articles.feedback",
    }
    messages = document["components"]["messages"]
    for message in messages.values():
        assert message["bindings"]["kafka"]["key"]["description"], message["name"]
    headers = messages["DeadLetter"]["headers"]
    assert headers["properties"]["error.reason"]["enum"] == [r.value for r in DeadLetterReason]
    assert set(headers["required"]) <= set(headers["properties"])
    actions = {op["action"] for op in document["operations"].values()}
    assert actions == {"receive", "send"}
    example = messages["ArticleFeedback"]["examples"][0]["payload"]
    assert ArticleFeedback.model_validate(example).tags == ["interest-rates", "inflation"]


def test_examples_are_valid_events_and_real_outputs() -> None:
    """The input and output examples validate against the checked-in JSON Schema files; the
    output is the demo model's classification of the input; the dead letter carries the
    broken input unchanged with a reason the service uses."""
    messages = _document()["components"]["messages"]
    (article,) = messages["ArticleEvent"]["examples"]
    (classified,) = messages["ClassifiedArticleEvent"]["examples"]
    (dead,) = messages["DeadLetter"]["examples"]
    input_schema = json.loads((SCHEMA_DIR / "article-event.v1.json").read_text())
    output_schema = json.loads((SCHEMA_DIR / "classified-article-event.v1.json").read_text())
    jsonschema.validate(article["payload"], input_schema)
    jsonschema.validate(classified["payload"], output_schema)
    output = classified["payload"]
    assert output["article_id"] == article["payload"]["article_id"]
    assert output["classification"]["model"] == {
        "name": "demo",
        "version": generate.EXAMPLE_MODEL_VERSION,
    }
    assert output["classification"]["section"]["label"] == "business"
    assert dead["payload"] == generate.EXAMPLE_BROKEN
    assert dead["headers"]["error.reason"] in {r.value for r in DeadLetterReason}
    assert "published_at" in dead["headers"]["error.message"]
