"""The suggest API's OpenAPI 3.1 document, generated from the pydantic models.

``schemas/openapi/classify-api.v1.json`` is the checked-in copy for the CMS developers; a
test fails when it drifts from what this module renders (``make schemas`` rewrites it), and
the running API serves the same text at ``GET /openapi.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from schemas.api import MAX_EVENTS_PER_REQUEST, MAX_EXPLAIN, ApiError, ClassifyResult
from schemas.article import ArticleEvent

CLASSIFY_PATH = "/v1/classify"
OPENAPI_PATH = "/openapi.json"
DOCUMENT = Path(__file__).resolve().parents[2] / "schemas" / "openapi" / "classify-api.v1.json"
_REF = "#/components/schemas/{model}"
_API_VERSION = "1.0.0"
_SCHEME = "bearerTokens"

_DESCRIPTION = """\
Suggestions for an article while it is being written: the section and tags the service's \
model gives it, exactly as the stream would publish them (the same model, swapped with the \
stream's). Send one ArticleEvent, or a list of 1 to 256, as JSON. Every event is validated \
with the stream's rules and caps; a refused event is answered with the reason and message \
its dead letter would carry. Off unless the service runs with --api-port; it listens on \
--api-host (127.0.0.1 unless configured)."""


def _error_response(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": _REF.format(model="ApiError")}}},
    }


def _classify_operation() -> dict[str, Any]:
    event = {"$ref": _REF.format(model="ArticleEvent")}
    result = {"$ref": _REF.format(model="ClassifyResult")}
    batch = {"minItems": 1, "maxItems": MAX_EVENTS_PER_REQUEST}
    return {
        "operationId": "classify",
        "summary": "Classify one article, or a list of up to 256",
        "description": (
            "A single event is answered with one ClassifyResult; a list with a list of "
            "ClassifyResult in the same order. All or nothing: when any event of a list is "
            "refused, the answer is an error naming each refused event by its index."
        ),
        "security": [{}, {_SCHEME: []}],
        "parameters": [
            {
                "name": "explain",
                "in": "query",
                "required": False,
                "description": (
                    "Terms per label to explain each label's score with (0: none). A model "
                    "without explanations answers 422 explanations_unavailable for K > 0."
                ),
                "schema": {"type": "integer", "minimum": 0, "maximum": MAX_EXPLAIN, "default": 0},
            }
        ],
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"anyOf": [event, {"type": "array", "items": event, **batch}]}
                }
            },
        },
        "responses": {
            "200": {
                "description": "The classifications: one object for one event, a list for a list.",
                "content": {
                    "application/json": {
                        "schema": {"anyOf": [result, {"type": "array", "items": result, **batch}]}
                    }
                },
            },
            "401": {
                **_error_response(
                    "unauthorized: the service runs with --api-tokens-file and the request has "
                    "no Authorization: Bearer header, or its token is not in the file."
                ),
                "headers": {
                    "WWW-Authenticate": {
                        "description": 'Bearer realm="article-classifier", with '
                        'error="invalid_token" when a token was given',
                        "schema": {"type": "string"},
                    }
                },
            },
            "413": _error_response(
                "request_too_large: the body is over --api-max-request-bytes (8 MiB by default)."
            ),
            "415": _error_response(
                "unsupported_media_type: the Content-Type is not application/json (UTF-8)."
            ),
            "422": _error_response(
                "An event was refused with the stream's reason (invalid_utf8, invalid_json, "
                "schema_violation, too_large: the message names the field and the limit), or "
                "the request was: too_many_events, invalid_parameter, explanations_unavailable."
            ),
            "429": _error_response(
                "over_capacity: --api-max-concurrency requests are being handled; retry after "
                "the Retry-After seconds."
            ),
            "500": _error_response(
                "classification_error: the model failed on an event (its index is named), or "
                "internal_error."
            ),
            "503": _error_response(
                "unavailable: the classification worker keeps dying; retry later."
            ),
        },
    }


def build_openapi() -> dict[str, Any]:
    """The whole document as a dict."""
    models: list[tuple[type[BaseModel], Any]] = [
        (ArticleEvent, "validation"),
        (ClassifyResult, "serialization"),
        (ApiError, "serialization"),
    ]
    _, definitions = models_json_schema(models, ref_template=_REF)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "article-classifier suggest API",
            "version": _API_VERSION,
            "description": _DESCRIPTION,
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "servers": [{"url": "http://127.0.0.1:8080", "description": "--api-port 8080"}],
        "paths": {
            CLASSIFY_PATH: {"post": _classify_operation()},
            OPENAPI_PATH: {
                "get": {
                    "operationId": "openapi",
                    "summary": "This document",
                    "responses": {
                        "200": {
                            "description": "The OpenAPI document of the API.",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        }
                    },
                }
            },
        },
        "components": {
            "schemas": definitions["$defs"],
            "securitySchemes": {
                _SCHEME: {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "One of the tokens of --api-tokens-file "
                    "(ARTICLE_CLASSIFIER_API_TOKENS_FILE), when the service runs with one; "
                    "without it the API needs no token.",
                }
            },
        },
    }


def render_openapi() -> str:
    """The document's exact text, as checked in."""
    return json.dumps(build_openapi(), indent=2, sort_keys=True) + "\n"


def is_stale(path: Path = DOCUMENT) -> bool:
    """True when the checked-in document is missing or differs from the models."""
    return not path.is_file() or path.read_text("utf-8") != render_openapi()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service.http.openapi", description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is stale")
    args = parser.parse_args(argv)
    shown = DOCUMENT.relative_to(DOCUMENT.parent.parent.parent)
    if args.check:
        if is_stale():
            print(f"stale: {shown} (run `make schemas`)", file=sys.stderr)
            return 1
        return 0
    DOCUMENT.parent.mkdir(exist_ok=True)
    DOCUMENT.write_text(render_openapi(), "utf-8")
    print(f"wrote {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
