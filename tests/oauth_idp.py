"""A small OAuth 2 authorisation server for the OAUTHBEARER tests: the client credentials
grant on ``/token`` (RS256 JWTs that live ``token_lifetime_s``), its public key on ``/jwks``.

Apache Kafka's ``OAuthBearerValidatorCallbackHandler`` validates the tokens against the
JWKS; the service's ``ClientCredentialsTokenProvider`` fetches them. Served on 127.0.0.1 by
the standard library's threading HTTP server, keys made by ``cryptography`` in the test.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

AUDIENCE = "kafka"
ISSUER = "https://idp.test"


@dataclass
class TokenIssuer:
    """Who may ask (client id -> secret), how long tokens live, and what was asked."""

    clients: Mapping[str, str]
    token_lifetime_s: int = 60
    key: rsa.RSAPrivateKey = field(
        default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    key_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    #: Every token request: (client id or None, form fields), in order.
    requests: list[tuple[str | None, dict[str, str]]] = field(default_factory=list)
    port: int = 0

    @property
    def token_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    @property
    def jwks_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/jwks"

    def issue(self, subject: str, scope: str | None) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "sub": subject,
            "iss": ISSUER,
            "aud": AUDIENCE,
            "iat": now,
            "exp": now + self.token_lifetime_s,
            "jti": uuid.uuid4().hex,
        }
        if scope:
            claims["scope"] = scope
        return jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": self.key_id})

    def jwks(self) -> dict[str, Any]:
        public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        return {"keys": [{**public, "kid": self.key_id, "use": "sig", "alg": "RS256"}]}

    def answer(self, authorization: str | None, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        """The token endpoint's status and JSON body for one request."""
        client = _basic_user(authorization)
        self.requests.append((client[0] if client else None, form))
        if client is None or self.clients.get(client[0]) != client[1]:
            return 401, {"error": "invalid_client", "error_description": "unknown client"}
        if form.get("grant_type") != "client_credentials":
            return 400, {"error": "unsupported_grant_type"}
        token = self.issue(client[0], form.get("scope"))
        return 200, {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": self.token_lifetime_s,
        }


def _basic_user(header: str | None) -> tuple[str, str] | None:
    if not header or not header.startswith("Basic "):
        return None
    user, sep, password = base64.b64decode(header[6:]).decode().partition(":")
    return (user, password) if sep else None


@contextmanager
def serving(issuer: TokenIssuer) -> Iterator[TokenIssuer]:
    """``issuer`` answering on a free 127.0.0.1 port until the block ends."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != "/jwks":
                self._reply(404, {"error": "not_found"})
                return
            self._reply(200, issuer.jwks())

        def do_POST(self) -> None:
            if self.path != "/token":
                self._reply(404, {"error": "not_found"})
                return
            length = int(self.headers.get("Content-Length") or 0)
            form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
            self._reply(*issuer.answer(self.headers.get("Authorization"), form))

        def _reply(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    issuer.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, name="oauth-idp", daemon=True)
    thread.start()
    try:
        yield issuer
    finally:
        server.shutdown()
        server.server_close()
