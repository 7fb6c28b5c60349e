"""Write (or, with ``--check``, verify) the JSON Schema files generated from the models.

The pydantic models are the single source of truth; ``schemas/json/`` is what downstream
engineers read, so a test fails when the two drift apart. Run ``make schemas`` after a change.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pydantic import BaseModel

from schemas.article import SCHEMA_VERSION, ArticleEvent, LabelledArticle
from schemas.classified import ClassifiedArticleEvent
from schemas.feedback import ArticleFeedback

SCHEMA_DIR = Path(__file__).parent / "json"
_ID_BASE = "https://article-classifier.dev/schemas"
_MODELS: dict[str, type[BaseModel]] = {
    f"article-event.v{SCHEMA_VERSION}.json": ArticleEvent,
    f"classified-article-event.v{SCHEMA_VERSION}.json": ClassifiedArticleEvent,
    f"labelled-article.v{SCHEMA_VERSION}.json": LabelledArticle,
    f"article-feedback.v{SCHEMA_VERSION}.json": ArticleFeedback,
}


def render_schemas() -> dict[str, str]:
    """Every schema file name mapped to its exact text."""
    rendered = {}
    for file_name, model in _MODELS.items():
        schema = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"{_ID_BASE}/{file_name}",
            **model.model_json_schema(mode="validation"),
        }
        rendered[file_name] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return rendered


def stale_schemas(directory: Path = SCHEMA_DIR) -> list[str]:
    """Names of schema files that are missing or differ from the models."""
    return [
        name
        for name, text in render_schemas().items()
        if not (directory / name).is_file() or (directory / name).read_text("utf-8") != text
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m schemas.generate", description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 if any file is stale")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_schemas()
        for name in stale:
            print(f"stale: schemas/json/{name} (run `make schemas`)", file=sys.stderr)
        return 1 if stale else 0
    SCHEMA_DIR.mkdir(exist_ok=True)
    for name, text in render_schemas().items():
        (SCHEMA_DIR / name).write_text(text, "utf-8")
        print(f"wrote schemas/json/{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
