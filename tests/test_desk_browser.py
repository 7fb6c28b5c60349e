"""The editors' desk in a real browser (headless chromium through Selenium) against the
embedded broker: sign-in, the live feed, the review queue's order, a verdict on the topic
and the quality view moving."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import Broker, consume, demo_texts, produce

from devtools.browser import (
    REQUIRE_BROWSER,
    DeskThread,
    browser_missing,
    chromium,
    classified_event,
)
from devtools.tansu import ensure_topics
from schemas import ArticleFeedback
from service.config.commands import DeskSettings
from service.core.classify import classify_values

pytestmark = [
    pytest.mark.browser,
    pytest.mark.kafka,
    pytest.mark.parametrize("broker_engine", ["tansu"], indirect=True),
]

ALICE = "alice-desk-token-0123456789"
WAIT_S = 20.0


@pytest.fixture(scope="module", autouse=True)
def _browser_available() -> None:
    missing = browser_missing()
    if missing is not None:
        if REQUIRE_BROWSER:
            pytest.fail(f"{missing} (REQUIRE_BROWSER=1)")
        pytest.skip(missing)


class Desk:
    def __init__(self, url: str, classified: str, feedback: str, bootstrap: str) -> None:
        self.url = url
        self.classified = classified
        self.feedback = feedback
        self.bootstrap = bootstrap

    def publish(self, *values: bytes) -> None:
        records = [(json.loads(v)["article_id"].encode(), v) for v in values]
        asyncio.run(produce(self.bootstrap, self.classified, records))


@pytest.fixture(scope="module")
def desk(broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Desk]:
    """A desk over fresh topics, signing editors in with a tokens file."""
    tag = uuid.uuid4().hex[:8]
    classified, feedback = f"desk-classified-{tag}", f"desk-feedback-{tag}"
    asyncio.run(ensure_topics(broker.bootstrap_servers, {classified: 2, feedback: 1}))
    tokens = tmp_path_factory.mktemp("desk") / "tokens"
    tokens.write_text(f"alice:{ALICE}\n")
    settings = DeskSettings(
        bootstrap_servers=broker.bootstrap_servers,
        output_topic=classified,
        feedback_topic=feedback,
        desk_port=0,
        api_tokens_file=tokens,
    )
    with DeskThread(settings) as running:
        yield Desk(running.url, classified, feedback, broker.bootstrap_servers)


@pytest.fixture(scope="module")
def browser(desk: Desk) -> Iterator[Any]:
    """One signed-in chromium for the module."""
    with chromium() as driver:
        driver.get(desk.url + "/")
        _sign_in(driver, ALICE)
        yield driver


def _sign_in(driver: Any, token: str) -> None:
    from selenium.webdriver.common.by import By  # noqa: PLC0415

    field = driver.find_element(By.ID, "token")
    field.clear()
    field.send_keys(token)
    driver.find_element(By.ID, "signin").click()


def _until(driver: Any, condition: Any, message: str) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait  # noqa: PLC0415

    return WebDriverWait(driver, WAIT_S, poll_frequency=0.1).until(condition, message)


def _ids(driver: Any, list_id: str) -> list[str]:
    from selenium.webdriver.common.by import By  # noqa: PLC0415

    rows = driver.find_elements(By.CSS_SELECTOR, f"#{list_id} [data-row]")
    return [row.get_attribute("data-id") for row in rows]


def _real_article(article_id: str, index: int, predictor: Any) -> bytes:
    """What the service publishes for a demo article, explanations included (``--explain
    3``): classified by the service's own ``classify_values`` with the demo model."""
    title, body = demo_texts()[index]
    event = {"article_id": article_id, "event_id": f"e-{article_id}", "title": title, "body": body}
    (outcome,) = classify_values(
        [json.dumps(event).encode()], predictor, max_event_bytes=1 << 20, explain=3
    )
    value: bytes = outcome.value  # type: ignore[union-attr]
    return value


def test_the_desk_needs_a_sign_in(desk: Desk) -> None:
    """Without a session a page sends the browser to the sign-in form; a wrong token is
    refused there; a token of the file signs the editor in under the name its line gives."""
    from selenium.webdriver.common.by import By  # noqa: PLC0415

    with chromium() as driver:
        driver.get(desk.url + "/queue")
        assert "/signin" in driver.current_url
        _sign_in(driver, "wrong-token-0123456789abcdef")
        assert "not valid" in driver.find_element(By.ID, "error").text
        _sign_in(driver, ALICE)
        _until(driver, lambda d: d.current_url.endswith("/queue"), "not sent back to /queue")
        assert driver.find_element(By.CLASS_NAME, "who").text == "alice"


def test_articles_appear_in_the_feed_as_they_are_published(
    desk: Desk, browser: Any, predictor: Any
) -> None:
    """The feed page, once open and live, shows a newly published article at the top
    without a reload (Server-Sent Events), with its section, score and model version."""
    from selenium.webdriver.common.by import By  # noqa: PLC0415

    browser.get(desk.url + "/")
    _until(browser, lambda d: d.find_element(By.ID, "live").text == "live", "feed not live")
    browser.execute_script("window.notReloaded = true;")
    first, second = f"live-{uuid.uuid4().hex[:6]}", f"live-{uuid.uuid4().hex[:6]}"
    desk.publish(_real_article(first, 0, predictor))
    _until(browser, lambda d: first in _ids(d, "feed"), "the first article did not appear")
    desk.publish(_real_article(second, 1, predictor))
    _until(browser, lambda d: _ids(d, "feed")[:1] == [second], "the newest is not on top")
    assert browser.execute_script("return window.notReloaded === true;")
    row = browser.find_element(By.CSS_SELECTOR, f'#feed [data-id="{second}"]')
    assert "demo" not in row.find_element(By.CLASS_NAME, "section").text
    assert row.find_element(By.CLASS_NAME, "model").text


def test_the_queue_puts_the_least_sure_first(desk: Desk, browser: Any) -> None:
    """Three articles whose smallest margins are 0.9, 0.1 (a section at 0.55) and 0.04 (a
    tag at 0.52) are listed least sure first; j/k move through the queue, Enter opens, and
    on an article's page j/k go to the next and previous article of the queue."""
    tag = uuid.uuid4().hex[:6]
    sure, unsure, tag_edge = f"sure-{tag}", f"unsure-{tag}", f"edge-{tag}"
    desk.publish(
        classified_event(sure, "Sure thing", section=("sport", 0.95)),
        classified_event(unsure, "Coin toss", section=("business", 0.55)),
        classified_event(
            tag_edge, "Borderline tag", section=("politics", 0.99), tags=[("uk", 0.52)]
        ),
    )

    def ordered(driver: Any) -> bool:
        driver.get(desk.url + "/queue")
        ids = _ids(driver, "queue")
        return {sure, unsure, tag_edge} <= set(ids)

    _until(browser, ordered, "the three articles did not reach the queue")
    ids = [i for i in _ids(browser, "queue") if i in {sure, unsure, tag_edge}]
    assert ids == [tag_edge, unsure, sure]

    from selenium.webdriver.common.by import By  # noqa: PLC0415
    from selenium.webdriver.common.keys import Keys  # noqa: PLC0415

    queue = _ids(browser, "queue")
    body = browser.find_element(By.TAG_NAME, "body")
    body.send_keys("j", "j", "k")
    selected = browser.find_elements(By.CSS_SELECTOR, "#queue [data-row].sel")
    assert [row.get_attribute("data-id") for row in selected] == [queue[0]]
    browser.switch_to.active_element.send_keys(Keys.ENTER)
    _until(browser, lambda d: d.current_url.endswith(f"/articles/{queue[0]}"), "Enter")
    browser.find_element(By.TAG_NAME, "body").send_keys("j")
    _until(browser, lambda d: d.current_url.endswith(f"/articles/{queue[1]}"), "j: next")
    browser.find_element(By.TAG_NAME, "body").send_keys("k")
    _until(browser, lambda d: d.current_url.endswith(f"/articles/{queue[0]}"), "k: previous")


def test_a_correction_is_published_and_moves_the_quality_view(
    desk: Desk, browser: Any, predictor: Any
) -> None:
    """On an article's page (terms behind the labels highlighted) the editor moves it to
    another section and adds a tag with the keyboard; one ArticleFeedback naming alice and
    the model version lands on the topic, the article leaves the queue, and the quality
    view counts the verdict and lists the added tag. Then ``a`` accepts the next one."""
    from selenium.webdriver.common.by import By  # noqa: PLC0415
    from selenium.webdriver.common.keys import Keys  # noqa: PLC0415
    from selenium.webdriver.support.ui import Select  # noqa: PLC0415

    browser.get(desk.url + "/quality")
    before = int(browser.find_element(By.ID, "verdict-count").text)
    article_id = f"fix-{uuid.uuid4().hex[:6]}"
    value = _real_article(article_id, 2, predictor)
    predicted = json.loads(value)["classification"]
    desk.publish(value)

    def opened(driver: Any) -> bool:
        driver.get(f"{desk.url}/articles/{article_id}")
        return bool(driver.find_elements(By.ID, "verdict-form"))

    _until(browser, opened, "the article page did not open")
    assert browser.find_elements(By.CSS_SELECTOR, "#body mark, #headline mark"), "no highlight"
    assert browser.find_element(By.ID, "legend").text.startswith("section")
    body = browser.find_element(By.TAG_NAME, "body")
    body.send_keys("s")
    section = Select(browser.find_element(By.ID, "section"))
    other = next(o.text for o in section.options if o.text != predicted["section"]["label"])
    section.select_by_visible_text(other)
    body.send_keys("t")
    browser.switch_to.active_element.send_keys("gadgets", Keys.ENTER)
    _until(browser, lambda d: d.find_elements(By.ID, "sent"), "no confirmation shown")

    records = asyncio.run(consume(desk.bootstrap, desk.feedback, 1, timeout_s=WAIT_S))
    verdicts = [ArticleFeedback.model_validate_json(r.value) for r in records]
    mine = [v for v in verdicts if v.article_id == article_id]
    assert len(mine) == 1
    (verdict,) = mine
    assert verdict.editor == "alice"
    assert verdict.model_version == predicted["model"]["version"]
    assert verdict.predicted_section == predicted["section"]["label"]
    assert verdict.section == other
    assert verdict.tags is not None
    assert "gadgets" in verdict.tags

    def counted(driver: Any) -> bool:
        driver.get(desk.url + "/quality")
        return int(driver.find_element(By.ID, "verdict-count").text) == before + 1

    _until(browser, counted, "the quality view did not count the verdict")
    assert "gadgets" in browser.find_element(By.ID, "added-tags").text
    assert other in browser.find_element(By.ID, "moved-to").text
    browser.get(desk.url + "/queue")
    assert article_id not in _ids(browser, "queue")

    accepted = f"ok-{uuid.uuid4().hex[:6]}"
    desk.publish(_real_article(accepted, 3, predictor))
    _until(browser, lambda d: opened_page(d, f"{desk.url}/articles/{accepted}"), "no page")
    browser.find_element(By.TAG_NAME, "body").send_keys("a")
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        records = asyncio.run(consume(desk.bootstrap, desk.feedback, 2, timeout_s=2))
        done = [ArticleFeedback.model_validate_json(r.value) for r in records]
        hits = [v for v in done if v.article_id == accepted]
        if hits:
            assert hits[0].section == hits[0].predicted_section
            assert hits[0].tags == hits[0].predicted_tags
            break
    else:
        raise AssertionError("the accept (key a) published nothing")


def opened_page(driver: Any, url: str) -> bool:
    from selenium.webdriver.common.by import By  # noqa: PLC0415

    driver.get(url)
    return bool(driver.find_elements(By.ID, "accept-form"))
