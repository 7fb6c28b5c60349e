"""Bearer tokens from a file: one per line, optionally naming its user (``alice:TOKEN``).

The file is the rotation mechanism: add the new token, roll the clients, remove the old one.
It is checked for a change (modification time, size, inode) at most every ``check_s``
seconds and read again when it changed; an unreadable file after a good read keeps the last
good set (logged), so a half-done rotation never locks everyone out. Tokens are kept only as
their SHA-256 digests and a presented token is compared with every one of them with
``hmac.compare_digest``, so neither the comparison nor its early end depends on how much of
a token matched.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

#: How often the file is checked for a change, at most.
DEFAULT_CHECK_S = 2.0
_MIN_TOKEN_CHARS = 16


class TokenFileError(ValueError):
    """The token file cannot be used; the message names the file and the line."""


@dataclass(frozen=True, slots=True)
class Identity:
    """Who presented a valid token: the user the line names, else ``token-<line>``."""

    user: str
    #: A short digest of the token (never the token): a session remembers which token
    #: signed it in, and ends when that token leaves the file.
    token_id: str


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


def parse_tokens(text: str, source: str = "tokens") -> list[tuple[Identity, bytes]]:
    """The (identity, token digest) pairs of a token file's text; blank lines and ``#``
    comments are skipped. Raises ``TokenFileError`` naming a bad line."""
    pairs: list[tuple[Identity, bytes]] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        user, colon, token = line.partition(":")
        if not colon:
            user, token = f"token-{number}", line
        user, token = user.strip(), token.strip()
        if not user or len(token) < _MIN_TOKEN_CHARS or any(c.isspace() for c in token):
            raise TokenFileError(
                f"{source}:{number}: expected TOKEN or USER:TOKEN, the token at least "
                f"{_MIN_TOKEN_CHARS} characters without spaces"
            )
        digest = _digest(token)
        pairs.append((Identity(user, digest.hex()[:16]), digest))
    return pairs


class TokenFile:
    """The valid tokens of ``path``, kept current as the file changes."""

    def __init__(
        self,
        path: Path,
        *,
        check_s: float = DEFAULT_CHECK_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._path = path
        self._check_s = check_s
        self._clock = clock
        self._stamp: tuple[int, int, int] | None = None
        self._checked = float("-inf")
        self._pairs: list[tuple[Identity, bytes]] = []
        self._read(initial=True)

    @property
    def path(self) -> Path:
        return self._path

    def __len__(self) -> int:
        self._refresh()
        return len(self._pairs)

    def identify(self, presented: str | None) -> Identity | None:
        """The identity of ``presented`` if it is one of the file's tokens, else None."""
        self._refresh()
        if not presented:
            return None
        digest = _digest(presented)
        found: Identity | None = None
        for identity, known in self._pairs:
            # Every digest is compared: the time taken does not depend on which matched.
            if hmac.compare_digest(digest, known) and found is None:
                found = identity
        return found

    def holds(self, token_id: str) -> Identity | None:
        """The identity whose token has this ``token_id``, if it is still in the file."""
        self._refresh()
        for identity, _ in self._pairs:
            if hmac.compare_digest(identity.token_id, token_id):
                return identity
        return None

    def _refresh(self) -> None:
        now = self._clock()
        if now - self._checked < self._check_s:
            return
        self._checked = now
        self._read(initial=False)

    def _read(self, *, initial: bool) -> None:
        try:
            status = os.stat(self._path)
            stamp = (status.st_mtime_ns, status.st_size, status.st_ino)
            if stamp == self._stamp:
                return
            pairs = parse_tokens(self._path.read_text(encoding="utf-8"), str(self._path))
        except (OSError, UnicodeDecodeError, TokenFileError) as error:
            if initial:
                raise TokenFileError(f"{self._path}: cannot use the token file: {error}") from None
            logger.error(  # noqa: TRY400 - the reason is in the line; no traceback wanted
                "token file unreadable; the last good tokens stay valid",
                extra={"path": str(self._path), "error": repr(error)},
            )
            return
        self._stamp = stamp
        self._pairs = pairs
        if not pairs:
            logger.warning(
                "token file holds no token: every request is refused",
                extra={"path": str(self._path)},
            )
        if not initial:
            logger.info(
                "token file read again", extra={"path": str(self._path), "tokens": len(pairs)}
            )
