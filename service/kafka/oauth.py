"""SASL/OAUTHBEARER tokens for the Kafka clients: the OAuth 2 client credentials grant
(RFC 6749 section 4.4) against the platform's token endpoint, or a provider plug-in.

aiokafka asks its ``sasl_oauth_token_provider`` for a token each time it opens a connection.
It does not re-authenticate a live connection (KIP-368; aiokafka issues #1015 and #1080), so
a broker with ``connections.max.reauth.ms`` closes a connection once its token expires; the
client opens a new one and asks again. This provider keeps one token and fetches the next
when the one it holds is within its last fifth of life (at most a minute before expiry), so
the reconnect costs one token request at most, and concurrent connections share it.

A failure to get a token is an ``AuthenticationFailedError`` (a Kafka error, so the clients
treat it as a refused login, not a crash) naming the endpoint and the OAuth error.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from aiokafka.abc import AbstractTokenProvider
from aiokafka.errors import AuthenticationFailedError

from service.config.commands import ConfigError
from service.config.options import KafkaConnection

logger = logging.getLogger(__name__)

#: A token is renewed when this share of its life or less is left ...
_RENEW_SHARE = 0.2
#: ... or this many seconds, whichever is less.
_RENEW_AT_MOST_S = 60.0
_REQUEST_TIMEOUT_S = 10.0


class TokenEndpointError(AuthenticationFailedError):  # type: ignore[misc]
    """The token endpoint gave no token: the message names it and says why."""


@dataclass(frozen=True, slots=True)
class _Token:
    value: str
    renew_at: float  # time.monotonic()


class ClientCredentialsTokenProvider(AbstractTokenProvider):  # type: ignore[misc]
    """Tokens from ``endpoint`` for ``client_id``/``client_secret`` (HTTP basic, as RFC 6749
    asks), with an optional ``scope`` and SASL ``extensions``."""

    def __init__(
        self,
        endpoint: str,
        client_id: str,
        client_secret: str,
        *,
        scope: str | None = None,
        extensions: Mapping[str, str] | None = None,
        verify: ssl.SSLContext | bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._endpoint = endpoint
        self._auth = httpx.BasicAuth(client_id, client_secret)
        self._form = {"grant_type": "client_credentials"}
        if scope:
            self._form["scope"] = scope
        self._extensions = dict(extensions or {})
        self._verify = verify
        self._clock = clock
        self._token: _Token | None = None
        self._lock = asyncio.Lock()
        #: Tokens fetched so far (for the tests and the logs).
        self.fetched = 0

    async def token(self) -> str:
        """A token with life left; fetched only when the one held is due for renewal."""
        held = self._token
        if held is not None and self._clock() < held.renew_at:
            return held.value
        async with self._lock:  # one request for the connections opening together
            held = self._token
            if held is not None and self._clock() < held.renew_at:
                return held.value
            self._token = await self._fetch()
            return self._token.value

    def extensions(self) -> dict[str, str]:
        return self._extensions

    async def _fetch(self) -> _Token:
        asked = self._clock()
        try:
            async with httpx.AsyncClient(
                verify=self._verify,
                timeout=_REQUEST_TIMEOUT_S,
                transport=httpx.AsyncHTTPTransport(retries=2, verify=self._verify),
            ) as client:
                response = await client.post(self._endpoint, data=self._form, auth=self._auth)
        except httpx.HTTPError as error:
            raise TokenEndpointError(
                f"token endpoint {self._endpoint} could not be reached: {error!r}"
            ) from error
        body = _json(response)
        if response.status_code != httpx.codes.OK or "access_token" not in body:
            raise TokenEndpointError(
                f"token endpoint {self._endpoint} gave no token: HTTP {response.status_code}"
                f"{_oauth_error(body)}"
            )
        lifetime = _lifetime(body.get("expires_in"))
        self.fetched += 1
        logger.info(
            "OAUTHBEARER token fetched",
            extra={"endpoint": self._endpoint, "expires_in_s": lifetime},
        )
        renew_after = lifetime - min(lifetime * _RENEW_SHARE, _RENEW_AT_MOST_S)
        return _Token(str(body["access_token"]), asked + renew_after)


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _oauth_error(body: Mapping[str, Any]) -> str:
    """`` invalid_client: <description>`` from an RFC 6749 error response, if there is one."""
    error = body.get("error")
    if not isinstance(error, str):
        return ""
    description = body.get("error_description")
    return f" {error}" + (f": {str(description)[:200]}" if description else "")


def _lifetime(expires_in: Any) -> float:
    """Seconds the token lives; a token without ``expires_in`` is renewed each minute."""
    if isinstance(expires_in, int | float) and not isinstance(expires_in, bool) and expires_in > 0:
        return float(expires_in)
    if isinstance(expires_in, str) and expires_in.isdigit() and int(expires_in) > 0:
        return float(expires_in)
    return 60.0


#: One provider per settings object, shared by all its clients (one token for them all).
_PROVIDERS: dict[int, tuple[KafkaConnection, AbstractTokenProvider]] = {}


def token_provider(settings: KafkaConnection) -> AbstractTokenProvider:
    """The provider the settings ask for, the same one for every client of ``settings``:
    a plug-in (``MODULE:CALLABLE``), or the token endpoint with the client credentials."""
    held = _PROVIDERS.get(id(settings))
    if held is not None and held[0] is settings:
        return held[1]
    provider = _new_provider(settings)
    _PROVIDERS[id(settings)] = (settings, provider)
    return provider


def _new_provider(settings: KafkaConnection) -> AbstractTokenProvider:
    if settings.sasl_oauthbearer_token_provider is not None:
        return _plugin(settings.sasl_oauthbearer_token_provider)
    endpoint = settings.sasl_oauthbearer_token_endpoint_url
    client_id = settings.sasl_oauthbearer_client_id
    secret = settings.sasl_oauthbearer_client_secret
    if endpoint is None or client_id is None or secret is None:  # the settings refuse this
        raise ValueError("OAUTHBEARER needs a token endpoint and client credentials")
    cafile = settings.sasl_oauthbearer_token_endpoint_cafile
    return ClientCredentialsTokenProvider(
        endpoint,
        client_id.get_secret_value(),
        secret.get_secret_value(),
        scope=settings.sasl_oauthbearer_scope,
        extensions=settings.sasl_oauthbearer_extensions,
        verify=ssl.create_default_context(cafile=cafile) if cafile is not None else True,
    )


def _plugin(reference: str) -> AbstractTokenProvider:
    module_name, _, name = reference.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as error:
        raise ConfigError(f"--sasl-oauthbearer-token-provider {reference}: {error}") from error
    provider = factory()
    if not callable(getattr(provider, "token", None)):
        raise ConfigError(
            f"--sasl-oauthbearer-token-provider {reference} returned "
            f"{type(provider).__name__}, which has no token() method"
        )
    return provider
