"""The desk's HTML, rendered on the server from plain strings (every value escaped).

One stylesheet and one small script (``ASSETS``), no build step. The pages work without
the script; it adds the live feed (Server-Sent Events) and the keys: ``j``/``k`` move
through a list (or to the next/previous article), ``Enter`` opens, ``a`` accepts the
model's labels, ``s`` and ``t`` go to the section and the new-tag field, ``/`` to search.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from html import escape
from typing import Any
from urllib.parse import quote, urlencode

from service.desk.state import DeskArticle, Filters, LabelQuality, Quality

_COLOURS = 6


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.0f}%"


def layout(title: str, body: str, *, user: str | None, queue: int | None = None) -> str:
    """A whole page: the navigation, then ``body``."""
    who = (
        f'<span class="who">{_e(user)}</span>'
        '<form method="post" action="/signout" class="inline">'
        '<button type="submit">Sign out</button></form>'
        if user
        else ""
    )
    waiting = f' <span class="count" id="queue-count">{queue}</span>' if queue is not None else ""
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)} · desk</title>"
        '<link rel="stylesheet" href="/static/desk.css">'
        '<script src="/static/desk.js" defer></script></head><body>'
        '<header><nav><a href="/" accesskey="f">Feed</a>'
        f'<a href="/queue" accesskey="q">Review queue{waiting}</a>'
        '<a href="/quality" accesskey="y">Quality</a></nav>'
        f'<div class="me">{who}</div></header><main>{body}</main></body></html>\n'
    )


def tag_list(tags: Iterable[tuple[str, float]]) -> str:
    items = "".join(
        f'<span class="tag">{_e(label)} <small>{score:.2f}</small></span>' for label, score in tags
    )
    return items or '<span class="none">no tags</span>'


def article_row(article: DeskArticle) -> str:
    """One line of the feed or the queue (also what the live feed sends)."""
    section = (
        f'<span class="section">{_e(article.section)} '
        f"<small>{article.section_score or 0:.2f}</small></span>"
        if article.section
        else '<span class="none">no section</span>'
    )
    flag = ' <span class="flag">uncertain</span>' if article.uncertain else ""
    return (
        f'<li data-row data-id="{_e(article.article_id)}" data-doubt="{article.doubt}">'
        f'<a class="headline" href="/articles/{quote(article.article_id, safe="")}">'
        f"{_e(article.title or article.article_id)}</a>"
        f'<div class="meta">{section}{flag} {tag_list(article.tags)}'
        f' <span class="model">{_e(article.model_version)}</span>'
        f" <time>{_e(article.classified_at)}</time>"
        f' <span class="margin" title="smallest margin">margin {article.doubt:.2f}</span>'
        "</div></li>"
    )


def _options(values: Sequence[str], chosen: str, empty: str) -> str:
    rows = [f'<option value="">{_e(empty)}</option>']
    for value in values:
        selected = " selected" if value == chosen else ""
        rows.append(f'<option value="{_e(value)}"{selected}>{_e(value)}</option>')
    return "".join(rows)


def feed_page(
    articles: Sequence[DeskArticle],
    filters: Filters,
    labels: tuple[list[str], list[str], list[str]],
    *,
    kept: int,
    query: str,
) -> str:
    sections, tags, versions = labels
    low = "" if filters.min_score is None else f"{filters.min_score:g}"
    high = "" if filters.max_score is None else f"{filters.max_score:g}"
    form = (
        '<form class="filters" method="get" action="/">'
        f'<input type="search" name="q" value="{_e(filters.query)}" '
        'placeholder="id or headline words" aria-label="search" id="search">'
        f'<select name="section" aria-label="section">'
        f"{_options(sections, filters.section, 'any section')}</select>"
        f'<select name="tag" aria-label="tag">{_options(tags, filters.tag, "any tag")}</select>'
        f'<select name="model" aria-label="model version">'
        f"{_options(versions, filters.model, 'any model')}</select>"
        f'<label>score ≥ <input name="min" size="4" value="{_e(low)}" inputmode="decimal"></label>'
        f'<label>≤ <input name="max" size="4" value="{_e(high)}" inputmode="decimal"></label>'
        '<button type="submit">Filter</button> <a href="/">clear</a></form>'
    )
    rows = "".join(article_row(article) for article in articles)
    source = "/events" + (f"?{query}" if query else "")
    return (
        f'<h1>Live feed <small id="live" class="live">connecting…</small></h1>{form}'
        f'<p class="hint">Newest first; the last {kept} articles are kept. '
        "Keys: j/k move, Enter opens, / searches.</p>"
        f'<ol class="articles" id="feed" data-events="{_e(source)}">{rows}</ol>'
    )


def queue_page(articles: Sequence[DeskArticle]) -> str:
    rows = "".join(article_row(article) for article in articles[:200])
    more = (
        f'<p class="hint">{len(articles) - 200} more not shown.</p>' if len(articles) > 200 else ""
    )
    empty = "" if articles else '<p class="none">Nothing to review.</p>'
    return (
        "<h1>Review queue</h1>"
        '<p class="hint">Articles nobody has judged, the ones the model is least sure of '
        "first: the smallest margin between the section and the runner-up the record allows "
        "(2 x score - 1), or a tag nearest its threshold (2 x |score - 0.5|). "
        "Keys: j/k move, Enter opens.</p>"
        f'<ol class="articles" id="queue">{rows}</ol>{empty}{more}'
    )


def highlight(text: str, explanations: dict[str, Any] | None) -> tuple[str, str]:
    """``text`` as HTML with the explaining terms marked, and the legend of the labels."""
    if not explanations:
        return _e(text), ""
    terms: dict[str, list[tuple[int, str, float]]] = {}
    legend: list[str] = []
    explained = []
    if explanations.get("section"):
        explained.append(("section", explanations["section"]))
    explained += [("tag", entry) for entry in explanations.get("tags") or ()]
    for index, (kind, entry) in enumerate(explained):
        colour = index % _COLOURS
        legend.append(
            f'<span class="key c{colour}">{kind} {_e(entry["label"])}: '
            + (", ".join(_e(t["term"]) for t in entry["terms"]) or "no term raised it")
            + "</span>"
        )
        for term in entry["terms"]:
            terms.setdefault(term["term"].lower(), []).append(
                (colour, f"{kind} {entry['label']}", term["contribution"])
            )
    if not terms:
        return _e(text), "".join(legend)
    pattern = re.compile(
        r"(?<!\w)("
        + "|".join(
            r"\s+".join(re.escape(word) for word in term.split())
            for term in sorted(terms, key=len, reverse=True)
        )
        + r")(?!\w)",
        re.IGNORECASE,
    )
    out: list[str] = []
    last = 0
    for match in pattern.finditer(text):
        found = terms.get(" ".join(match.group(0).lower().split()))
        if not found:
            continue
        out.append(_e(text[last : match.start()]))
        why = "; ".join(f"{label}: +{value:g}" for _, label, value in found)
        out.append(f'<mark class="c{found[0][0]}" title="{_e(why)}">{_e(match.group(0))}</mark>')
        last = match.end()
    out.append(_e(text[last:]))
    return "".join(out), "".join(legend)


def article_page(
    article: DeskArticle,
    labels: tuple[list[str], list[str], list[str]],
    *,
    previous: str | None,
    following: str | None,
    judged_by: str | None,
    sent: str | None = None,
    error: str | None = None,
) -> str:
    sections, tags, _ = labels
    title_html, legend = highlight(article.title, article.explanations)
    body_html, _ = highlight(article.body, article.explanations)
    if article.explanations is None:
        why = (
            '<p class="none" id="no-explanations">No explanations: the service published '
            "this article without them (run <code>serve --explain K</code> to have the terms "
            "behind each label).</p>"
        )
    else:
        why = f'<p class="legend" id="legend">{legend}</p>'
    path = f"/articles/{quote(article.article_id, safe='')}"
    nav = "".join(
        (
            f'<a rel="prev" id="prev" href="{_href(previous)}">← previous (k)</a>'
            if previous
            else "",
            f'<a rel="next" id="next" href="{_href(following)}">next (j) →</a>'
            if following
            else "",
        )
    )
    status = ""
    if sent:
        status = f'<p class="sent" id="sent">Verdict sent for {_e(sent)}.</p>'
    if error:
        status += f'<p class="error" id="error">{_e(error)}</p>'
    if judged_by is not None:
        by = f" by {_e(judged_by)}" if judged_by else ""
        status += (
            f'<p class="judged" id="judged">Already judged{by}; a new verdict replaces it.</p>'
        )
    all_sections = sorted({*sections, *([article.section] if article.section else [])})
    section_options = "".join(
        f'<option value="{_e(s)}"{" selected" if s == article.section else ""}>{_e(s)}</option>'
        for s in all_sections
    )
    tag_boxes = "".join(
        f'<label class="tag"><input type="checkbox" name="tag" value="{_e(label)}" checked> '
        f"{_e(label)} <small>{score:.2f}</small></label>"
        for label, score in article.tags
    )
    datalist = "".join(f'<option value="{_e(tag)}">' for tag in tags)
    known_sections = "".join(f'<option value="{_e(s)}">' for s in sections)
    none = '<span class="none">none</span>'
    section_line = (
        f"{_e(article.section)} <small>{article.section_score or 0:.2f}</small>"
        + (' <span class="flag">uncertain</span>' if article.uncertain else "")
        if article.section
        else "none"
    )
    return (
        f'<div class="pager">{nav}</div>{status}'
        f'<article><h1 id="headline">{title_html}</h1>'
        f'<p class="meta">Section {section_line} · tags {tag_list(article.tags)} · model '
        f"{_e(article.model_name)} {_e(article.model_version)} · {_e(article.classified_at)}"
        f" · id <code>{_e(article.article_id)}</code></p>{why}"
        f'<div class="body" id="body">{body_html}</div></article>'
        f'<aside class="verdict"><form method="post" action="{path}/verdict" id="accept-form">'
        '<input type="hidden" name="action" value="accept">'
        '<button type="submit" id="accept" class="primary">Accept the model\'s labels (a)</button>'
        "</form>"
        f'<form method="post" action="{path}/verdict" id="verdict-form">'
        '<input type="hidden" name="action" value="correct">'
        f'<label>Section (s) <select name="section" id="section">{section_options}</select>'
        "</label>"
        f'<label>or a new section <input name="new_section" id="new-section" '
        'list="known-sections" autocomplete="off"></label>'
        f'<datalist id="known-sections">{known_sections}</datalist>'
        f"<fieldset><legend>Tags (untick to remove)</legend>{tag_boxes or none}"
        f'<label>Add tags (t) <input name="add" id="add-tag" list="known-tags" autocomplete="off" '
        'placeholder="comma-separated"></label>'
        f'<datalist id="known-tags">{datalist}</datalist></fieldset>'
        '<button type="submit" id="save">Send this verdict</button></form></aside>'
    )


def _href(article_id: str) -> str:
    return "/articles/" + quote(article_id, safe="")


def _quality_rows(rows: Sequence[LabelQuality], columns: Sequence[str]) -> str:
    out = []
    for row in rows:
        cells = "".join(f"<td>{row.counts[c]}</td>" for c in columns)
        out.append(
            f'<tr data-label="{_e(row.label)}"><th>{_e(row.label)}</th>{cells}'
            f'<td class="agreement">{_pct(row.agreement)}</td></tr>'
        )
    return "".join(out)


def quality_page(quality: Quality, *, max_verdicts: int) -> str:
    trend = "".join(
        f'<span class="bar" style="height:{int((share or 0) * 40) + 2}px" '
        f'title="{count} verdicts: {_pct(share)}"></span>'
        for count, share in quality.trend
    )
    trend_text = " → ".join(_pct(share) for _, share in quality.trend) or "no verdicts yet"
    added = "".join(f"<li>{_e(label)} <small>x{n}</small></li>" for label, n in quality.added_tags)
    moved = "".join(f"<li>{_e(label)} <small>x{n}</small></li>" for label, n in quality.moved_to)
    return (
        "<h1>Quality</h1>"
        f'<p>Over the last <span id="verdict-count">{quality.verdicts}</span> verdicts (at most '
        f"{max_verdicts}), counted as the service's live quality metrics count them. Section "
        f'agreement: <strong id="section-agreement">{_pct(quality.section_agreement)}</strong>.</p>'
        f'<p>Trend (older → newer blocks): <span class="trend">{trend}</span> '
        f'<span id="trend">{trend_text}</span></p>'
        '<div class="columns"><section><h2>Sections</h2><table id="sections"><tr><th>section</th>'
        "<th>agreed</th><th>corrected</th><th>agreement</th></tr>"
        f"{_quality_rows(quality.sections, ('agreed', 'corrected'))}</table></section>"
        '<section><h2>Tags</h2><table id="tags"><tr><th>tag</th><th>kept</th><th>removed</th>'
        "<th>added</th><th>agreement</th></tr>"
        f"{_quality_rows(quality.tags, ('true_positive', 'false_positive', 'false_negative'))}"
        "</table></section></div>"
        '<div class="columns"><section><h2>Tags editors add most</h2>'
        f'<ol id="added-tags">{added or "<li class=none>none</li>"}</ol></section>'
        "<section><h2>Sections editors move articles to</h2>"
        f'<ol id="moved-to">{moved or "<li class=none>none</li>"}</ol></section></div>'
    )


def signin_page(*, error: str | None, next_path: str) -> str:
    problem = f'<p class="error" id="error">{_e(error)}</p>' if error else ""
    return (
        f"<h1>Sign in</h1>{problem}"
        '<form method="post" action="/signin" class="signin">'
        f'<input type="hidden" name="next" value="{_e(next_path)}">'
        '<label>Access token <input type="password" name="token" id="token" '
        'autocomplete="current-password" autofocus required></label>'
        '<button type="submit" id="signin">Sign in</button></form>'
        '<p class="hint">The token is one of the lines of the desk\'s tokens file (the '
        "suggest API's tokens).</p>"
    )


def query_string(filters: Filters) -> str:
    """The filters as a query string (for the live feed's URL)."""
    values = {
        "q": filters.query,
        "section": filters.section,
        "tag": filters.tag,
        "model": filters.model,
        "min": "" if filters.min_score is None else f"{filters.min_score:g}",
        "max": "" if filters.max_score is None else f"{filters.max_score:g}",
    }
    return urlencode({k: v for k, v in values.items() if v})
