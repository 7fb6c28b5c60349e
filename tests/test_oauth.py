"""OAUTHBEARER tokens: the client credentials grant against a real HTTP token endpoint
(``tests/oauth_idp.py``), one token shared and renewed before it expires, failures named."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest
from aiokafka.errors import AuthenticationFailedError, KafkaError
from conftest import serve_settings
from oauth_idp import AUDIENCE, TokenIssuer, serving

from service.config.commands import ConfigError
from service.kafka.clients import security_kwargs
from service.kafka.oauth import ClientCredentialsTokenProvider, TokenEndpointError, token_provider


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def idp() -> Iterator[TokenIssuer]:
    with serving(TokenIssuer({"classifier": "s3cret"}, token_lifetime_s=100)) as issuer:
        yield issuer


def _provider(
    idp: TokenIssuer, clock: _Clock, secret: str = "s3cret"
) -> ClientCredentialsTokenProvider:
    return ClientCredentialsTokenProvider(
        idp.token_url,
        "classifier",
        secret,
        scope="kafka.write",
        extensions={"logicalCluster": "lkc-1"},
        clock=clock,
    )


async def test_connections_opening_together_share_one_token(idp: TokenIssuer) -> None:
    provider = _provider(idp, _Clock())
    tokens = await asyncio.gather(*(provider.token() for _ in range(10)))
    assert len(set(tokens)) == 1
    assert len(idp.requests) == 1
    client, form = idp.requests[0]
    assert client == "classifier"
    assert form == {"grant_type": "client_credentials", "scope": "kafka.write"}
    claims = jwt.decode(tokens[0], options={"verify_signature": False}, audience=AUDIENCE)
    assert claims["sub"] == "classifier"


async def test_a_token_is_renewed_in_the_last_fifth_of_its_life(idp: TokenIssuer) -> None:
    clock = _Clock()
    provider = _provider(idp, clock)
    first = await provider.token()
    clock.now += 79
    assert await provider.token() == first
    clock.now += 2  # 81 s of 100: within the last fifth
    renewed = await provider.token()
    assert renewed != first
    assert provider.fetched == 2


async def test_a_refused_client_is_an_authentication_failure_naming_the_endpoint(
    idp: TokenIssuer,
) -> None:
    provider = _provider(idp, _Clock(), secret="wrong")
    with pytest.raises(TokenEndpointError) as raised:
        await provider.token()
    assert isinstance(raised.value, AuthenticationFailedError)
    assert isinstance(raised.value, KafkaError), "the clients treat it as a refused login"
    assert f"token endpoint {idp.token_url} gave no token: HTTP 401 invalid_client" in str(
        raised.value
    )


async def test_an_unreachable_endpoint_is_named() -> None:
    with serving(TokenIssuer({})) as gone:
        url = gone.token_url
    provider = ClientCredentialsTokenProvider(url, "a", "b")
    with pytest.raises(TokenEndpointError, match="could not be reached"):
        await provider.token()


def test_the_sasl_extensions_go_with_the_token(idp: TokenIssuer) -> None:
    assert _provider(idp, _Clock()).extensions() == {"logicalCluster": "lkc-1"}


# -- configuration --------------------------------------------------------------------------


def _oauth_argv(idp_url: str) -> list[str]:
    return [
        "--model", "m",
        "--security-protocol", "SASL_SSL",
        "--sasl-mechanism", "OAUTHBEARER",
        "--sasl-oauthbearer-token-endpoint-url", idp_url,
    ]  # fmt: skip


def test_credentials_come_from_files_and_every_client_shares_the_provider(
    tmp_path: Path,
) -> None:
    (tmp_path / "id").write_text("classifier\n")
    (tmp_path / "secret").write_text("s3cret\n")
    settings = serve_settings(
        *_oauth_argv("https://idp.example/token"),
        "--sasl-oauthbearer-extensions", "logicalCluster=lkc-1,identityPoolId=pool-2",
        env={
            "ARTICLE_CLASSIFIER_SASL_OAUTHBEARER_CLIENT_ID_FILE": str(tmp_path / "id"),
            "ARTICLE_CLASSIFIER_SASL_OAUTHBEARER_CLIENT_SECRET_FILE": str(tmp_path / "secret"),
        },
    )  # fmt: skip
    first, second = security_kwargs(settings), security_kwargs(settings)
    provider = first["sasl_oauth_token_provider"]
    assert provider is second["sasl_oauth_token_provider"]
    assert first["sasl_mechanism"] == "OAUTHBEARER"
    assert provider.extensions() == {"logicalCluster": "lkc-1", "identityPoolId": "pool-2"}


def test_oauthbearer_without_credentials_says_what_is_missing() -> None:
    with pytest.raises(ConfigError, match="needs --sasl-oauthbearer-token-endpoint-url"):
        serve_settings(
            "--model", "m", "--security-protocol", "SASL_SSL", "--sasl-mechanism", "OAUTHBEARER"
        )


class PluginProvider:
    """What ``--sasl-oauthbearer-token-provider`` may name (Amazon MSK IAM's is one)."""

    async def token(self) -> str:
        return "from-the-plugin"


def make_plugin() -> PluginProvider:
    return PluginProvider()


async def test_a_provider_plugin_replaces_the_token_endpoint() -> None:
    settings = serve_settings(
        "--model", "m", "--security-protocol", "SASL_SSL", "--sasl-mechanism", "OAUTHBEARER",
        "--sasl-oauthbearer-token-provider", "test_oauth:make_plugin",
    )  # fmt: skip
    provider = token_provider(settings)
    assert await provider.token() == "from-the-plugin"


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("no_such_module:make", "No module named"),
        ("test_oauth:missing", "missing"),
        ("test_oauth:_Clock", "no token"),
    ],
)
def test_a_plugin_that_cannot_be_used_is_a_configuration_error(
    reference: str, message: str
) -> None:
    settings = serve_settings(
        "--model", "m", "--security-protocol", "SASL_SSL", "--sasl-mechanism", "OAUTHBEARER",
        "--sasl-oauthbearer-token-provider", reference,
    )  # fmt: skip
    with pytest.raises(ConfigError, match=message):
        token_provider(settings)
