"""The AsyncAPI 3.0 document of the event contract, generated into ops/asyncapi/asyncapi.json.

The payload schemas come from the pydantic models (schemas/), the dead-letter headers and
reason codes from service/core/deadletter.py, and every example is a real output: the demo
model (trained here from model/samples/demo.jsonl, with a fixed version) classifies the
example input, and the dead-letter example is what the decoder makes of a broken record.
Regenerate with ``python -m ops.asyncapi.generate`` (``make ops-files``); a test fails when
the checked-in file differs, and another validates it with the official AsyncAPI parser.

Adding a channel is one ``Channel`` entry in ``channels()``.
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from model import Predictor, load_labelled, save_artifact, train
from schemas import SCHEMA_VERSION, ArticleEvent, ClassifiedArticleEvent, decode_article
from schemas.decode import DecodeError
from schemas.encode import encode_classified
from schemas.feedback import ArticleFeedback
from service.config.commands import ServeSettings
from service.core.deadletter import (
    MAX_MESSAGE_BYTES,
    VALUE_DROPPED_HEADER,
    DeadLetterReason,
    dead_letter_headers,
)

ROOT = Path(__file__).resolve().parent.parent.parent
DOCUMENT_PATH = Path(__file__).resolve().parent / "asyncapi.json"
DEMO_CORPUS = ROOT / "model" / "samples" / "demo.jsonl"
#: Fixed so that the examples (which name the model) do not change at every generation.
EXAMPLE_MODEL_VERSION = "asyncapi-example"
EXAMPLE_CLASSIFIED_AT = "2026-11-20T12:00:01.250Z"
#: docker-compose.yml creates the topics with this many partitions.
PARTITIONS = 6
_SCHEMA_REF = "#/components/schemas/{model}"
_DEFAULTS = ServeSettings.model_fields

EXAMPLE_INPUT: dict[str, Any] = {
    "article_id": "cms-20261120-0042",
    "event_id": "evt-7f3a9c",
    "title": "Central bank holds interest rates as inflation eases",
    "body": (
        "The central bank kept its main interest rate at 4.25% on Thursday, saying inflation"
        " had fallen faster than expected but wages were still rising quickly. Markets had"
        " priced in a hold; the pound was little changed."
    ),
    "url": "https://news.example.org/business/rates-hold",
    "published_at": "2026-11-20T12:00:00Z",
    "language": "en-GB",
    "source": "newsroom-cms",
    "desk": "economics",
}
#: A record the service refuses: its publication date has no offset.
EXAMPLE_BROKEN = {**EXAMPLE_INPUT, "published_at": "2026-11-20 12:00"}


@dataclass(frozen=True)
class Message:
    """One message of a channel: a payload schema (a pydantic model or a plain schema),
    its key, its headers and examples as (name, summary, key, headers, payload)."""

    name: str
    title: str
    summary: str
    payload: type[BaseModel] | dict[str, Any]
    key: str
    content_type: str = "application/json"
    headers: dict[str, Any] | None = None
    examples: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class Channel:
    """A topic, who does what on it (``receive`` or ``send`` from the service's side)."""

    id: str
    address: str
    description: str
    action: str
    operation: str
    message: Message
    topic_config: dict[str, Any] = field(default_factory=dict)


def _demo_predictor(workdir: Path) -> Predictor:
    trained = train(
        load_labelled([DEMO_CORPUS]).records, name="demo", version=EXAMPLE_MODEL_VERSION
    )
    return Predictor.load(save_artifact(trained, workdir / "demo"))


def _examples(predictor: Predictor) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    raw = json.dumps(EXAMPLE_INPUT).encode()
    event = decode_article(raw)
    assert isinstance(event, ArticleEvent), event
    (classification,) = predictor.predict([event])
    output = json.loads(encode_classified(event, classification, EXAMPLE_CLASSIFIED_AT))
    broken = json.dumps(EXAMPLE_BROKEN).encode()
    error = decode_article(broken)
    assert isinstance(error, DecodeError), error
    headers = dead_letter_headers(
        error.reason, error.message, topic="articles", partition=3, offset=1842
    )
    key = EXAMPLE_INPUT["article_id"]
    article = {
        "name": "economics-article",
        "summary": "A new article from the CMS (key: its article_id).",
        "payload": EXAMPLE_INPUT,
        "headers": {},
        "x-key": key,
    }
    classified = {
        "name": "economics-article-classified",
        "summary": "What the demo model makes of the article above (a real output).",
        "payload": output,
        "x-key": key,
    }
    dead = {
        "name": "published-at-without-offset",
        "summary": "The same article with a date that has no offset: refused, as received.",
        "headers": {name: (value or b"").decode() for name, value in headers},
        "payload": EXAMPLE_BROKEN,
        "x-key": key,
    }
    return article, classified, dead


_KEY = "the article_id as UTF-8 (the record key, kept on every output and dead letter)"


def channels(predictor: Predictor) -> tuple[Channel, ...]:
    """Every channel of the contract, in the order an article travels."""
    article, classified, dead = _examples(predictor)
    reasons = [reason.value for reason in DeadLetterReason]
    dead_letter_headers_schema = {
        "type": "object",
        "required": [
            "error.reason",
            "error.message",
            "source.topic",
            "source.partition",
            "source.offset",
        ],
        "properties": {
            "error.reason": {
                "type": "string",
                "enum": reasons,
                "description": "Why the record was refused (README: the event contract).",
            },
            "error.message": {
                "type": "string",
                "maxLength": MAX_MESSAGE_BYTES,
                "description": "What is wrong, naming the field; never the article text.",
            },
            "source.topic": {"type": "string", "description": "The input topic."},
            "source.partition": {
                "type": "string",
                "pattern": "^[0-9]+$",
                "description": "The input partition, in decimal.",
            },
            "source.offset": {
                "type": "string",
                "pattern": "^[0-9]+$",
                "description": "The input offset, in decimal.",
            },
            VALUE_DROPPED_HEADER: {
                "type": "string",
                "pattern": "^[0-9]+$",
                "description": "Only when the dead letter did not fit the dead-letter topic:"
                " the value is null and this gives its size in bytes.",
            },
        },
    }
    return (
        Channel(
            id="articles",
            address=_DEFAULTS["input_topic"].default,
            description="New articles (ArticleEvent, JSON). Anything may arrive here: whatever"
            " cannot be classified goes to the dead-letter channel, never lost. With"
            " --registry-input the JSON is framed with a Schema Registry schema id (magic byte"
            " 0 and 4 bytes big-endian before it, or the __value_schema_id header).",
            action="receive",
            operation="consumeArticles",
            message=Message(
                name="ArticleEvent",
                title="New article",
                summary="A new or updated article to classify.",
                payload=ArticleEvent,
                key=_KEY,
                examples=(article,),
            ),
            topic_config={"max.message.bytes": 8388608},
        ),
        Channel(
            id="articlesClassified",
            address=_DEFAULTS["output_topic"].default,
            description="Every input field as received, plus classification and classified_at."
            " With --registry-output the JSON is framed with the schema id of the output schema,"
            " registered under <topic>-value (magic byte 0 and 4 bytes big-endian before it).",
            action="send",
            operation="publishClassified",
            message=Message(
                name="ClassifiedArticleEvent",
                title="Classified article",
                summary="The input event with one section and any number of tags.",
                payload=ClassifiedArticleEvent,
                key=_KEY,
                examples=(classified,),
            ),
        ),
        Channel(
            id="articlesDeadLetter",
            address=_DEFAULTS["dead_letter_topic"].default,
            description="Records the service refused: the original key and value bytes,"
            " unchanged, with the reason in the headers.",
            action="send",
            operation="publishDeadLetter",
            message=Message(
                name="DeadLetter",
                title="Dead letter",
                summary="A refused record, as received, with why and where from.",
                payload={
                    "description": "The original record value, byte for byte: it may be any"
                    " bytes (not UTF-8, not JSON), or null when error.value_dropped is set."
                },
                key="the original record key, unchanged (null when the input had none)",
                content_type="application/octet-stream",
                headers=dead_letter_headers_schema,
                examples=(dead,),
            ),
            topic_config={"retention.ms": 1209600000, "max.message.bytes": 8388608},
        ),
        Channel(
            id="articlesFeedback",
            address=_DEFAULTS["feedback_topic"].default,
            description="Editors' corrections (ArticleFeedback, JSON), written by a CMS or by"
            " the editors' desk (`article-classifier desk`, which also reads this topic without"
            " a group to know what was judged), consumed in the group"
            " <group-id>.feedback for the live quality metrics and joined into training data by"
            " `article-classifier dataset`; invalid records go to the dead-letter channel.",
            action="receive",
            operation="consumeFeedback",
            message=Message(
                name="ArticleFeedback",
                title="Editor correction",
                summary="An editor's final section and/or tags for one article, with what the"
                " model had said.",
                payload=ArticleFeedback,
                key=_KEY,
                examples=(_FEEDBACK_EXAMPLE,),
            ),
        ),
    )


_FEEDBACK_EXAMPLE: dict[str, Any] = {
    "name": "editor-adds-a-tag",
    "summary": "An editor kept the section and added a tag to the article above.",
    "payload": {
        "article_id": "cms-20261120-0042",
        "event_id": "evt-7f3a9c",
        "model_version": "20261129.021744-5fe41b4b",
        "predicted_section": "business",
        "predicted_tags": ["interest-rates"],
        "section": "business",
        "tags": ["interest-rates", "inflation"],
        "editor": "ed-17",
        "corrected_at": "2026-11-20T12:30:00Z",
    },
    "x-key": "cms-20261120-0042",
}


def _schema(model: type[BaseModel], schemas: dict[str, Any]) -> dict[str, Any]:
    generated = model.model_json_schema(mode="validation", ref_template=_SCHEMA_REF)
    schemas.update(generated.pop("$defs", {}))
    schemas[model.__name__] = generated
    return {"$ref": _SCHEMA_REF.format(model=model.__name__)}


def _message(message: Message, schemas: dict[str, Any]) -> dict[str, Any]:
    payload = message.payload
    built: dict[str, Any] = {
        "name": message.name,
        "title": message.title,
        "summary": message.summary,
        "contentType": message.content_type,
        "payload": _schema(payload, schemas) if isinstance(payload, type) else payload,
        "bindings": {
            "kafka": {
                "key": {"type": "string", "description": message.key},
                "bindingVersion": "0.5.0",
            }
        },
    }
    if message.headers is not None:
        built["headers"] = message.headers
    keys = [example["x-key"] for example in message.examples if "x-key" in example]
    if keys:
        built["bindings"]["kafka"]["key"]["examples"] = keys
    examples = []
    for example in message.examples:
        shown = {k: v for k, v in example.items() if not k.startswith("x-")}
        if not shown.get("headers"):
            shown.pop("headers", None)
        examples.append(shown)
    built["examples"] = examples
    return built


def _operation(channel: Channel) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "action": channel.action,
        "channel": {"$ref": f"#/channels/{channel.id}"},
        "messages": [{"$ref": f"#/channels/{channel.id}/messages/{channel.message.name}"}],
    }
    if channel.action == "receive":
        group = {"type": "string", "default": _DEFAULTS["group_id"].default}
        operation["bindings"] = {"kafka": {"groupId": group, "bindingVersion": "0.5.0"}}
    return operation


def build(channel_list: Sequence[Channel]) -> dict[str, Any]:
    """The AsyncAPI document for ``channel_list``."""
    schemas: dict[str, Any] = {}
    messages = {c.message.name: _message(c.message, schemas) for c in channel_list}
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "article-classifier",
            "version": f"{SCHEMA_VERSION}.0.0",
            "description": "Gives news articles one section and any number of tags: reads"
            " ArticleEvents, writes ClassifiedArticleEvents, and dead-letters what it cannot"
            " classify, with the reason. Every record yields exactly one output or one dead"
            " letter; see README.md, 'The event contract' and 'Delivery guarantees'.",
            "license": {"name": "Apache-2.0"},
        },
        "defaultContentType": "application/json",
        "servers": {
            "local": {
                "host": "localhost:9094",
                "protocol": "kafka",
                "description": "The compose stack's broker (docker-compose.yml).",
            }
        },
        "channels": {
            c.id: {
                "address": c.address,
                "description": c.description,
                "messages": {c.message.name: {"$ref": f"#/components/messages/{c.message.name}"}},
                "bindings": {
                    "kafka": {
                        "topic": c.address,
                        "partitions": PARTITIONS,
                        "topicConfiguration": c.topic_config,
                        "bindingVersion": "0.5.0",
                    }
                },
            }
            for c in channel_list
        },
        "operations": {c.operation: _operation(c) for c in channel_list},
        "components": {"messages": messages, "schemas": dict(sorted(schemas.items()))},
    }


def render() -> str:
    with tempfile.TemporaryDirectory() as workdir:
        predictor = _demo_predictor(Path(workdir))
        document = build(channels(predictor))
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def main() -> int:
    DOCUMENT_PATH.write_text(render(), encoding="utf-8")
    sys.stdout.write(f"wrote {DOCUMENT_PATH}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
