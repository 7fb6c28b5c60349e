"""The desk's Starlette app: pages, the live feed (Server-Sent Events), verdicts, sign-in.

Who an editor is comes from one of two places, decided by the configuration:
- ``--api-tokens-file``: the editor signs in with a token of the file (a line ``alice:TOKEN``
  names the editor ``alice``); the desk then sets a session cookie, HMAC-signed with a key
  made at start, that names the token's digest, so it ends when the token leaves the file
  (or the desk restarts). A client may also send ``Authorization: Bearer <token>``.
- ``--desk-user-header``: an authenticating proxy in front of the desk names the editor in
  that header; only trusted when this option is set.
With neither, the desk is open (a warning at start) and verdicts name no editor.
``/healthz``, ``/readyz``, ``/metrics`` and the static files never need a sign-in.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
)
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route

from schemas import ArticleFeedback
from service.desk import pages
from service.desk.state import DeskArticle, DeskState, Filters
from service.web.bearer import challenge, presented_token
from service.web.tokens import TokenFile

logger = logging.getLogger(__name__)

SESSION_COOKIE = "desk_session"
_SESSION_S = 12 * 3600
_KEEPALIVE_S = 15.0
_STATIC = Path(__file__).resolve().parent / "static"
_OPEN = frozenset(
    {"/healthz", "/readyz", "/metrics", "/signin", "/static/desk.css", "/static/desk.js"}
)
_PREFIX = "article_classifier_desk"


class DeskMetrics:
    """The desk's own metrics."""

    def __init__(self, registry: CollectorRegistry, state: DeskState) -> None:
        self.verdicts = Counter(
            f"{_PREFIX}_verdicts_total",
            "Verdicts the desk published (sent) or failed to publish (failed).",
            ["outcome"],
            registry=registry,
        )
        self.signins = Counter(
            f"{_PREFIX}_signins_total",
            "Sign-in attempts, by outcome.",
            ["outcome"],
            registry=registry,
        )
        Gauge(
            f"{_PREFIX}_articles", "Classified articles held in memory.", registry=registry
        ).set_function(lambda: float(len(state)))
        Gauge(
            f"{_PREFIX}_live_feeds", "Browsers following the live feed.", registry=registry
        ).set_function(lambda: float(state.feeds))


@dataclass(frozen=True, slots=True)
class DeskAuth:
    """How the desk knows who is asking (see the module's docstring)."""

    tokens: TokenFile | None
    user_header: str | None
    secure_cookie: bool = False
    key: bytes = b""

    @property
    def open(self) -> bool:
        return self.tokens is None and self.user_header is None

    def user(self, request: Request) -> str | None:
        """The signed-in editor, or None (never None for an open desk: ``""``)."""
        if self.user_header is not None:
            named = request.headers.get(self.user_header, "").strip()
            if named:
                return named[:256]
        if self.tokens is None:
            return "" if self.user_header is None else None
        bearer = presented_token(request.headers.get("authorization"))
        if bearer is not None:
            identity = self.tokens.identify(bearer)
            return identity.user if identity else None
        return self._session_user(request.cookies.get(SESSION_COOKIE))

    def session_cookie(self, user: str, token_id: str) -> str:
        expires = int(time.time()) + _SESSION_S
        payload = f"{_b64(user)}.{token_id}.{expires}"
        return f"{payload}.{self._sign(payload)}"

    def _session_user(self, cookie: str | None) -> str | None:
        if not cookie or self.tokens is None:
            return None
        payload, _, signature = cookie.rpartition(".")
        if not hmac.compare_digest(signature, self._sign(payload)):
            return None
        encoded, token_id, expires = [*payload.split("."), "", "", ""][:3]
        if not expires.isdigit() or int(expires) < time.time():
            return None
        identity = self.tokens.holds(token_id)
        user = _unb64(encoded)
        return user if identity is not None and identity.user == user else None

    def _sign(self, payload: str) -> str:
        return hmac.new(self.key, payload.encode(), hashlib.sha256).hexdigest()


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _unb64(text: str) -> str:
    with contextlib.suppress(ValueError):
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
    return ""


def make_auth(
    tokens_file: Path | None, user_header: str | None, *, secure_cookie: bool
) -> DeskAuth:
    """The desk's authentication from its options (a random session key per process)."""
    tokens = TokenFile(tokens_file) if tokens_file is not None else None
    if tokens is None and user_header is None:
        logger.warning(
            "the desk accepts anyone who reaches it (no --api-tokens-file, no "
            "--desk-user-header): verdicts name no editor"
        )
    return DeskAuth(tokens, user_header, secure_cookie, secrets.token_bytes(32))


Publish = Callable[[ArticleFeedback], Awaitable[None]]


class DeskApp:
    """The routes over ``state``; ``publish`` sends a verdict to the feedback topic."""

    def __init__(
        self,
        state: DeskState,
        auth: DeskAuth,
        publish: Publish,
        *,
        registry: CollectorRegistry,
        ready: Callable[[], bool],
    ) -> None:
        self._state = state
        self._auth = auth
        self._publish = publish
        self._registry = registry
        self._metrics = DeskMetrics(registry, state)
        self._ready = ready
        self._closing = asyncio.Event()

    def close(self) -> None:
        """End the live feeds (before the server stops)."""
        self._closing.set()
        self._state.close_feeds()

    def app(self) -> Starlette:
        routes = [
            Route("/", self.feed, methods=["GET"]),
            Route("/events", self.events, methods=["GET"]),
            Route("/queue", self.queue, methods=["GET"]),
            Route("/quality", self.quality, methods=["GET"]),
            Route("/articles/{article_id:path}/verdict", self.verdict, methods=["POST"]),
            Route("/articles/{article_id:path}", self.article, methods=["GET"]),
            Route("/signin", self.signin_form, methods=["GET"]),
            Route("/signin", self.signin, methods=["POST"]),
            Route("/signout", self.signout, methods=["POST"]),
            Route("/static/{name}", self.static, methods=["GET"]),
            Route("/healthz", self.healthz, methods=["GET"]),
            Route("/readyz", self.readyz, methods=["GET"]),
            Route("/metrics", self.metrics, methods=["GET"]),
        ]
        app = Starlette(routes=routes)
        app.router.redirect_slashes = False
        return app

    # -- who --------------------------------------------------------------------------

    def _who(self, request: Request) -> str | Response:
        """The editor, or the answer for someone not signed in."""
        user = self._auth.user(request)
        if user is not None:
            return user
        wants_page = request.method == "GET" and "text/html" in request.headers.get("accept", "")
        if self._auth.tokens is not None and wants_page:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/signin?next={quote(target, safe='')}", status_code=303)
        response = PlainTextResponse("sign in first\n", status_code=401)
        if self._auth.tokens is not None:
            response.headers["WWW-Authenticate"] = challenge(invalid=False)
        return response

    def _page(self, title: str, body: str, user: str, status: int = 200) -> HTMLResponse:
        html = pages.layout(title, body, user=user or None, queue=self._state.waiting())
        return HTMLResponse(html, status_code=status, headers=_NO_STORE)

    # -- pages ------------------------------------------------------------------------

    async def feed(self, request: Request) -> Response:
        user = self._who(request)
        if isinstance(user, Response):
            return user
        filters = _filters(request)
        body = pages.feed_page(
            self._state.feed(filters),
            filters,
            self._state.labels(),
            kept=self._state.max_articles,
            query=pages.query_string(filters),
        )
        return self._page("Feed", body, user)

    async def events(self, request: Request) -> Response:
        user = self._who(request)
        if isinstance(user, Response):
            return user
        filters = _filters(request)
        feed = self._state.subscribe()

        async def stream() -> AsyncIterator[bytes]:
            try:
                yield b"retry: 2000\n: live\n\n"
                while not self._closing.is_set():
                    try:
                        article = await asyncio.wait_for(feed.get(), _KEEPALIVE_S)
                    except TimeoutError:
                        yield b": keep-alive\n\n"
                        continue
                    if article is None:
                        return
                    if filters.matches(article):
                        yield _event("article", pages.article_row(article))
            finally:
                self._state.unsubscribe(feed)

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    async def queue(self, request: Request) -> Response:
        user = self._who(request)
        if isinstance(user, Response):
            return user
        return self._page("Review queue", pages.queue_page(self._state.queue()), user)

    async def quality(self, request: Request) -> Response:
        user = self._who(request)
        if isinstance(user, Response):
            return user
        body = pages.quality_page(self._state.quality(), max_verdicts=self._state.max_verdicts)
        return self._page("Quality", body, user)

    async def article(self, request: Request) -> Response:
        user = self._who(request)
        if isinstance(user, Response):
            return user
        article = self._state.article(request.path_params["article_id"])
        if article is None:
            return self._page(
                "Not found",
                '<h1>Not here</h1><p class="none">The desk does not hold this article (only '
                f"the last {self._state.max_articles} classified ones).</p>",
                user,
                404,
            )
        return self._article_page(article, user, sent=request.query_params.get("sent"))

    def _article_page(
        self, article: DeskArticle, user: str, *, sent: str | None = None, error: str | None = None
    ) -> Response:
        previous, following = self._neighbours(article.article_id)
        body = pages.article_page(
            article,
            self._state.labels(),
            previous=previous,
            following=following,
            judged_by=self._state.judged_by(article.article_id),
            sent=sent,
            error=error,
        )
        return self._page(article.title or article.article_id, body, user, 422 if error else 200)

    def _neighbours(self, article_id: str) -> tuple[str | None, str | None]:
        """The articles before and after this one in the queue (the queue's first two when
        this one is not in it)."""
        order = [a.article_id for a in self._state.queue()]
        if article_id not in order:
            rest = [i for i in order if i != article_id]
            return None, rest[0] if rest else None
        at = order.index(article_id)
        return (order[at - 1] if at > 0 else None), (order[at + 1] if at + 1 < len(order) else None)

    # -- verdicts ---------------------------------------------------------------------

    def _poster(self, request: Request) -> str | Response:
        """The editor of a POST from the desk's own pages."""
        if not _same_origin(request):
            return PlainTextResponse("cross-site request refused\n", status_code=403)
        return self._who(request)

    async def verdict(self, request: Request) -> Response:
        user = self._poster(request)
        if isinstance(user, Response):
            return user
        article = self._state.article(request.path_params["article_id"])
        if article is None:
            return PlainTextResponse("no such article on the desk\n", status_code=404)
        form = await _form(request)
        if form is None:
            return PlainTextResponse("send the verdict as a form, under 64 KiB\n", status_code=400)
        feedback = _verdict(article, form, user)
        if isinstance(feedback, str):
            return self._article_page(article, user, error=f"Not sent: {feedback}")
        try:
            await self._publish(feedback)
        except Exception as error:
            self._metrics.verdicts.labels("failed").inc()
            logger.warning(
                "verdict not published",
                extra={"article_id": article.article_id, "error": repr(error)},
            )
            return self._article_page(
                article, user, error=f"Not sent: the feedback topic did not take it ({error!r})"
            )
        self._metrics.verdicts.labels("sent").inc()
        logger.info(
            "verdict published",
            extra={
                "article_id": article.article_id,
                "editor": user or None,
                "model_version": article.model_version,
            },
        )
        _, following = self._neighbours(article.article_id)
        target = f"/articles/{quote(following, safe='')}" if following else "/queue"
        return RedirectResponse(
            f"{target}?sent={quote(article.article_id, safe='')}", status_code=303
        )

    # -- sign-in ----------------------------------------------------------------------

    async def signin_form(self, request: Request) -> Response:
        next_path = _local(request.query_params.get("next", "/"))
        return HTMLResponse(
            pages.layout("Sign in", pages.signin_page(error=None, next_path=next_path), user=None),
            headers=_NO_STORE,
        )

    async def signin(self, request: Request) -> Response:
        form = await _form(request) or _Form({})
        next_path = _local(str(form.get("next") or "/"))
        tokens = self._auth.tokens
        identity = tokens.identify(str(form.get("token") or "")) if tokens else None
        if tokens is None or identity is None:
            self._metrics.signins.labels("refused").inc()
            message = "That token is not valid." if tokens else "This desk has no sign-in."
            html = pages.layout(
                "Sign in", pages.signin_page(error=message, next_path=next_path), user=None
            )
            return HTMLResponse(html, status_code=401, headers=_NO_STORE)
        self._metrics.signins.labels("signed_in").inc()
        logger.info("editor signed in", extra={"editor": identity.user})
        response = RedirectResponse(next_path, status_code=303)
        response.set_cookie(
            SESSION_COOKIE,
            self._auth.session_cookie(identity.user, identity.token_id),
            max_age=_SESSION_S,
            httponly=True,
            samesite="strict",
            secure=self._auth.secure_cookie,
        )
        return response

    async def signout(self, _: Request) -> Response:
        response = RedirectResponse("/signin", status_code=303)
        response.delete_cookie(SESSION_COOKIE)
        return response

    # -- open ---------------------------------------------------------------------------

    async def static(self, request: Request) -> Response:
        name = request.path_params["name"]
        types = {"desk.css": "text/css", "desk.js": "text/javascript"}
        if name not in types:
            return PlainTextResponse("not found\n", status_code=404)
        return Response((_STATIC / name).read_bytes(), media_type=types[name])

    async def healthz(self, _: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def readyz(self, _: Request) -> Response:
        ready = self._ready()
        return PlainTextResponse(
            "ready\n" if ready else "not reading the topics yet\n",
            status_code=200 if ready else 503,
        )

    async def metrics(self, _: Request) -> Response:
        return Response(generate_latest(self._registry), media_type=CONTENT_TYPE_LATEST)


_NO_STORE = {"Cache-Control": "no-store"}
_MAX_FORM_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class _Form:
    """An ``application/x-www-form-urlencoded`` body (the desk's forms send nothing else)."""

    fields: dict[str, list[str]]

    def get(self, name: str) -> str | None:
        values = self.fields.get(name)
        return values[0] if values else None

    def getlist(self, name: str) -> list[str]:
        return list(self.fields.get(name, ()))


async def _form(request: Request) -> _Form | None:
    """The form, or None when it is not URL-encoded or is over the limit."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/x-www-form-urlencoded":
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > _MAX_FORM_BYTES:
            return None
    return _Form(parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True))


def _verdict(article: DeskArticle, form: _Form, user: str) -> ArticleFeedback | str:
    """The ArticleFeedback of a verdict form (final labels, with what the model said), or
    what is wrong with it."""
    predicted_tags = article.tag_labels
    if form.get("action") == "accept":
        section, tags = article.section, list(predicted_tags)
    else:
        new_section = (form.get("new_section") or "").strip()
        section = new_section or (form.get("section") or "").strip() or article.section
        added = [t.strip() for t in (form.get("add") or "").split(",") if t.strip()]
        tags = list(dict.fromkeys([*form.getlist("tag"), *added]))
    try:
        return ArticleFeedback(
            article_id=article.article_id,
            event_id=article.event_id,
            model_version=article.model_version,
            predicted_section=article.section,
            predicted_tags=predicted_tags,
            section=section,
            tags=tags,
            editor=user or None,
            corrected_at=datetime.now(UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
        )
    except ValidationError as error:
        return "; ".join(str(e["msg"]) for e in error.errors())


def _event(name: str, html: str) -> bytes:
    data = "".join(f"data: {line}\n" for line in html.splitlines() or [""])
    return f"event: {name}\n{data}\n".encode()


def _filters(request: Request) -> Filters:
    params = request.query_params
    return Filters(
        section=params.get("section", ""),
        tag=params.get("tag", ""),
        model=params.get("model", ""),
        min_score=_number(params.get("min")),
        max_score=_number(params.get("max")),
        query=params.get("q", "")[:200],
    )


def _number(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        return None


def _local(path: str) -> str:
    """A redirect target on this site only."""
    return path if path.startswith("/") and not path.startswith("//") else "/"


def _same_origin(request: Request) -> bool:
    """A browser's POST must come from the desk's own pages (with the SameSite cookie,
    this refuses cross-site form posts); clients that send no Origin are let through."""
    origin = request.headers.get("origin")
    if origin is None:
        return True
    host = request.headers.get("host", "")
    return urlsplit(origin).netloc == host
