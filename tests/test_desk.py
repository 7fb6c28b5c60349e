"""The desk without a browser or a broker: its memory, review order, quality counting,
highlighting, sign-in and verdict forms (the app over httpx's ASGI transport)."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry

from devtools.browser import classified_event
from schemas import ArticleFeedback, ClassifiedArticleEvent
from service.desk.app import SESSION_COOKIE, DeskApp, DeskAuth
from service.desk.pages import highlight
from service.desk.state import DeskState, Filters, doubt
from service.feedback.quality import QualityTracker
from service.observe.metrics import ServiceMetrics
from service.web.tokens import TokenFile

TOKEN = "alice-desk-token-0123456789"


def _event(article_id: str, **kwargs: object) -> ClassifiedArticleEvent:
    kwargs.setdefault("section", ("sport", 0.9))
    value = classified_event(article_id, f"Headline of {article_id}", **kwargs)  # type: ignore[arg-type]
    return ClassifiedArticleEvent.model_validate_json(value)


def _verdict(article_id: str, predicted: str, final: str, **fields: object) -> ArticleFeedback:
    return ArticleFeedback.model_validate(
        {
            "article_id": article_id,
            "model_version": "v1",
            "predicted_section": predicted,
            "section": final,
            "corrected_at": "2026-12-07T12:00:00Z",
            **fields,
        }
    )


def test_the_doubt_is_the_smallest_margin_the_record_allows() -> None:
    """Section: 2 x score - 1 (0 when flagged uncertain); a tag: 2 x |score - 0.5|."""
    assert doubt(0.95, False, []) == pytest.approx(0.9)
    assert doubt(0.55, False, [0.99]) == pytest.approx(0.1)
    assert doubt(0.99, False, [0.52]) == pytest.approx(0.04)
    assert doubt(0.9, True, []) == 0.0
    assert doubt(None, False, []) == 1.0


def test_memory_is_bounded_and_judged_articles_leave_the_queue() -> None:
    """Only the newest N articles are kept; a verdict on an id takes it out of the queue,
    which lists the least sure first."""
    state = DeskState(max_articles=3, max_verdicts=10)
    for index, score in enumerate((0.9, 0.6, 0.99, 0.7)):
        state.add_article(_event(f"a-{index}", section=("sport", score)))
    assert len(state) == 3
    assert state.article("a-0") is None
    assert [a.article_id for a in state.queue()] == ["a-1", "a-3", "a-2"]
    state.add_verdict(_verdict("a-1", "sport", "sport", editor="alice"))
    assert [a.article_id for a in state.queue()] == ["a-3", "a-2"]
    assert state.judged_by("a-1") == "alice"
    assert [a.article_id for a in state.feed(Filters(query="headline a-3"))] == ["a-3"]
    assert [a.article_id for a in state.feed(Filters(min_score=0.95))] == ["a-2"]


def test_quality_counts_as_the_service_counts() -> None:
    """The desk's per-label counts equal the service's feedback counters for the same
    verdicts: both score them with service.core.verdicts."""
    verdicts = [
        _verdict("a", "sport", "sport", predicted_tags=["uk"], tags=["uk", "gadgets"]),
        _verdict("b", "sport", "business", predicted_tags=["uk"], tags=[]),
        _verdict("c", "business", "business"),
    ]
    state = DeskState(max_articles=10, max_verdicts=10)
    registry = CollectorRegistry()
    tracker = QualityTracker(
        ServiceMetrics(registry), sections=["sport", "business"], tags=["uk", "gadgets"]
    )
    for verdict in verdicts:
        state.add_verdict(verdict)
        tracker.record(verdict)
    quality = state.quality()
    for row in quality.sections:
        for outcome, count in row.counts.items():
            sample = registry.get_sample_value(
                "article_classifier_feedback_section_total",
                {"model_version": "v1", "section": row.label, "outcome": outcome},
            )
            assert sample == count
    for row in quality.tags:
        for outcome, count in row.counts.items():
            sample = registry.get_sample_value(
                "article_classifier_feedback_tag_total",
                {"model_version": "v1", "tag": row.label, "outcome": outcome},
            )
            assert sample == count
    assert quality.section_agreement == pytest.approx(2 / 3)
    assert quality.added_tags == [("gadgets", 1)]
    assert quality.moved_to == [("business", 1)]


def test_highlighting_marks_terms_and_escapes_the_rest() -> None:
    """Explaining terms (words and bigrams, any case) are marked; markup in the text is
    escaped; without explanations the text is only escaped."""
    explanations = {
        "section": {
            "label": "business",
            "terms": [{"term": "interest rates", "contribution": 0.4}],
        },
        "tags": [{"label": "uk", "terms": [{"term": "pound", "contribution": 0.2}]}],
    }
    html, legend = highlight("<b>Interest  rates</b> hold; the Pound steady", explanations)
    assert "&lt;b&gt;" in html
    assert '<mark class="c0" title="section business: +0.4">Interest  rates</mark>' in html
    assert '<mark class="c1"' in html
    assert "tag uk" in legend
    assert highlight("<i>x</i>", None) == ("&lt;i&gt;x&lt;/i&gt;", "")


@pytest.fixture
async def desk_client(
    tmp_path: Path,
) -> AsyncIterator[tuple[httpx.AsyncClient, list[ArticleFeedback], Path]]:
    tokens = tmp_path / "tokens"
    tokens.write_text(f"alice:{TOKEN}\n")
    state = DeskState(max_articles=10, max_verdicts=10)
    state.add_article(_event("a-1", section=("sport", 0.6), tags=[("uk", 0.8)]))
    sent: list[ArticleFeedback] = []

    async def publish(feedback: ArticleFeedback) -> None:
        sent.append(feedback)

    app = DeskApp(
        state,
        # The file checked at every request (the desk's own checks at most every 2 s).
        DeskAuth(TokenFile(tokens, check_s=0), "X-Forwarded-User", key=b"k" * 32),
        publish,
        registry=CollectorRegistry(),
        ready=lambda: True,
    ).app()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://desk") as client:
        yield client, sent, tokens


async def test_sign_in_sets_a_session_that_ends_with_its_token(
    desk_client: tuple[httpx.AsyncClient, list[ArticleFeedback], Path],
) -> None:
    """Pages need a session (health and metrics do not); a token signs in; a tampered
    cookie is refused; removing the token from the file ends the session."""
    client, _, tokens = desk_client
    page = await client.get("/queue", headers={"Accept": "text/html"})
    assert page.status_code == 303
    assert page.headers["location"].startswith("/signin")
    assert (await client.get("/events")).status_code == 401
    for open_path in ("/healthz", "/readyz", "/metrics", "/static/desk.js"):
        assert (await client.get(open_path)).status_code == 200, open_path
    refused = await client.post("/signin", data={"token": "x" * 20})
    assert refused.status_code == 401
    signed = await client.post("/signin", data={"token": TOKEN, "next": "/queue"})
    assert signed.status_code == 303
    cookie = signed.cookies[SESSION_COOKIE]
    assert "HttpOnly" in signed.headers["set-cookie"]
    assert "samesite=strict" in signed.headers["set-cookie"].lower()
    client.cookies.set(SESSION_COOKIE, cookie)
    assert (await client.get("/queue")).status_code == 200
    client.cookies.set(SESSION_COOKIE, cookie[:-1] + ("0" if cookie[-1] != "0" else "1"))
    assert (await client.get("/queue")).status_code == 401
    client.cookies.set(SESSION_COOKIE, cookie)
    tokens.write_text("bob:another-token-0123456789\n")
    os.utime(tokens, ns=(1, 1))
    assert (await client.get("/queue")).status_code == 401


async def test_a_verdict_form_becomes_one_feedback_naming_the_editor(
    desk_client: tuple[httpx.AsyncClient, list[ArticleFeedback], Path],
) -> None:
    """The proxy's header names the editor; a correction carries the final labels with the
    model's; a cross-site post is refused; an invalid label is named, nothing sent."""
    client, sent, _ = desk_client
    proxy = {"X-Forwarded-User": "carol"}
    form = {"action": "correct", "section": "business", "tag": "uk", "add": "gadgets, uk"}
    answer = await client.post("/articles/a-1/verdict", data=form, headers=proxy)
    assert answer.status_code == 303
    (feedback,) = sent
    assert feedback.editor == "carol"
    assert feedback.section == "business"
    assert feedback.tags == ["uk", "gadgets"]
    assert (feedback.predicted_section, feedback.predicted_tags) == ("sport", ["uk"])
    assert feedback.model_version == "20261207.120000-test"
    cross = await client.post(
        "/articles/a-1/verdict", data=form, headers={**proxy, "Origin": "http://evil"}
    )
    assert cross.status_code == 403
    bad = await client.post(
        "/articles/a-1/verdict", data={**form, "new_section": " "}, headers=proxy
    )
    assert bad.status_code == 303  # a blank new section falls back to the chosen one
    worse = await client.post(
        "/articles/a-1/verdict", data={**form, "add": "x" * 200}, headers=proxy
    )
    assert worse.status_code == 422
    assert "Not sent" in worse.text
    assert len(sent) == 2
    assert json.loads(sent[1].model_dump_json())["section"] == "business"


def test_the_desk_command_loads_no_model_code() -> None:
    """`article-classifier desk` imports neither the model package nor scikit-learn: the
    command line imports each command's code only when that command runs."""
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    probe = (
        "import sys, service.commands.cli, service.commands.desk; "
        "print(sorted(m for m in ('model', 'sklearn', 'numpy', 'scipy') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == "[]"
