"""ASGI middleware: every path but the open ones needs ``Authorization: Bearer <token>``.

Without a token the answer is 401 with ``WWW-Authenticate: Bearer realm="..."``; with a
wrong one, 401 with ``error="invalid_token"`` added (RFC 6750). The body is the app's own
error shape (``refuse``). The identity of the caller is put in the ASGI scope
(``scope["state"]["identity"]``) for the app to read.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from service.web.tokens import Identity, TokenFile

REALM = "article-classifier"
IDENTITY_KEY = "identity"


def presented_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def challenge(*, invalid: bool) -> str:
    """The ``WWW-Authenticate`` value of a 401."""
    text = f'Bearer realm="{REALM}"'
    if invalid:
        text += ', error="invalid_token", error_description="the token is not valid"'
    return text


class BearerAuth:
    """Refuses requests without a valid bearer token, except on ``open_paths``."""

    def __init__(
        self,
        app: ASGIApp,
        tokens: TokenFile,
        *,
        refuse: Callable[[str], Response],
        open_paths: Collection[str] = (),
    ) -> None:
        self._app = app
        self._tokens = tokens
        self._refuse = refuse
        self._open = frozenset(open_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self._open:
            await self._app(scope, receive, send)
            return
        header = None
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                header = value.decode("latin-1")
                break
        token = presented_token(header)
        identity: Identity | None = self._tokens.identify(token)
        if identity is None:
            message = (
                "this API needs a bearer token: Authorization: Bearer <token>"
                if token is None
                else "the bearer token is not valid"
            )
            response = self._refuse(message)
            response.headers["WWW-Authenticate"] = challenge(invalid=token is not None)
            await response(scope, receive, send)
            return
        scope.setdefault("state", {})[IDENTITY_KEY] = identity
        await self._app(scope, receive, send)
