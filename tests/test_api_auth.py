"""Bearer tokens on the suggest API: read from a file, rotated by editing it (no broker)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import serve_settings
from prometheus_client import CollectorRegistry

from schemas.api import ApiError
from service.config.commands import ConfigError, ServeSettings
from service.core.records import Topics
from service.http.api import ApiServer
from service.http.openapi import build_openapi
from service.models.workers import ThreadClassifier
from service.web.tokens import TokenFile, TokenFileError, parse_tokens

ALICE = "alice-token-0123456789abcdef"
OLD = "old-token-0123456789abcdef"
NEW = "new-token-0123456789abcdef"
EVENT = {"article_id": "a-1", "title": "Striker scores twice as United win the derby"}


@pytest.fixture
async def classifier(model_dir: Path, predictor: Any) -> AsyncIterator[ThreadClassifier]:
    """The service's thread classifier over the demo model."""
    made = ThreadClassifier(
        model_dir, topics=Topics("out", "dlq"), max_event_bytes=1024 * 1024, predictor=predictor
    )
    await made.start()
    yield made
    made.close()


async def _client(
    classifier: ThreadClassifier, model_dir: Path, tokens: Path | None
) -> tuple[ApiServer, httpx.AsyncClient]:
    config = ServeSettings(model=model_dir, api_port=0, api_tokens_file=tokens)
    server = ApiServer(config, classifier, registry=CollectorRegistry())
    await server.__aenter__()
    return server, httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", timeout=30)


async def test_a_request_needs_one_of_the_files_tokens(
    classifier: ThreadClassifier, model_dir: Path, tmp_path: Path
) -> None:
    """No token or a wrong one is a 401 with a Bearer challenge in the API's error shape; a
    token of the file classifies; the OpenAPI document stays open."""
    tokens = tmp_path / "tokens"
    tokens.write_text(f"# editors\nalice:{ALICE}\n\n{OLD}\n")
    server, client = await _client(classifier, model_dir, tokens)
    try:
        missing = await client.post("/v1/classify", json=EVENT)
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"] == 'Bearer realm="article-classifier"'
        error = ApiError.model_validate_json(missing.content)
        assert error.errors[0].reason.value == "unauthorized"
        wrong = await client.post(
            "/v1/classify", json=EVENT, headers={"Authorization": "Bearer not-a-token-at-all"}
        )
        assert wrong.status_code == 401
        assert 'error="invalid_token"' in wrong.headers["www-authenticate"]
        for token in (ALICE, OLD):
            good = await client.post(
                "/v1/classify", json=EVENT, headers={"Authorization": f"Bearer {token}"}
            )
            assert good.status_code == 200, good.text
            assert good.json()["classification"]["section"]["label"] == "sport"
        assert (await client.get("/openapi.json")).status_code == 200
    finally:
        await client.aclose()
        await server.__aexit__(None, None, None)


async def test_without_a_tokens_file_the_api_is_open_and_says_so(
    classifier: ThreadClassifier, model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Off by default: no token needed, and a warning names the missing option."""
    server, client = await _client(classifier, model_dir, None)
    try:
        assert (await client.post("/v1/classify", json=EVENT)).status_code == 200
    finally:
        await client.aclose()
        await server.__aexit__(None, None, None)
    assert any("--api-tokens-file" in record.getMessage() for record in caplog.records)


def test_the_file_is_read_again_when_it_changes(tmp_path: Path) -> None:
    """A rotation: the new token works and the removed one stops working at the next check,
    without a restart; a broken rewrite keeps the last good tokens."""
    path = tmp_path / "tokens"
    path.write_text(f"{OLD}\n")
    now = [0.0]
    tokens = TokenFile(path, check_s=2.0, clock=lambda: now[0])
    assert tokens.identify(OLD) is not None
    assert tokens.identify(NEW) is None
    path.write_text(f"{NEW}\nbob:{ALICE}\n")
    os.utime(path, ns=(1, 1))
    assert tokens.identify(NEW) is None, "checked at most every check_s seconds"
    now[0] = 2.5
    assert tokens.identify(OLD) is None
    identity = tokens.identify(ALICE)
    assert identity is not None
    assert identity.user == "bob"
    path.write_text("short\n")
    now[0] = 5.0
    assert tokens.identify(NEW) is not None


def test_a_bad_line_is_named() -> None:
    """A token under 16 characters or with spaces is refused with its line number."""
    with pytest.raises(TokenFileError, match="tokens:2"):
        parse_tokens(f"{OLD}\nalice:short\n")
    assert [identity.user for identity, _ in parse_tokens(f"{OLD}\n")] == ["token-1"]


def test_the_openapi_document_declares_the_bearer_scheme() -> None:
    """The security scheme and the 401 answer are in the document."""
    document = build_openapi()
    assert document["components"]["securitySchemes"]["bearerTokens"]["scheme"] == "bearer"
    operation = document["paths"]["/v1/classify"]["post"]
    assert "401" in operation["responses"]
    assert {"bearerTokens": []} in operation["security"]


def test_an_unreadable_tokens_file_stops_the_start(tmp_path: Path) -> None:
    """A tokens file that is not there is a configuration error naming the option."""
    with pytest.raises(ConfigError, match="--api-tokens-file="):
        serve_settings("--model", "m", "--api-tokens-file", str(tmp_path / "missing"))
