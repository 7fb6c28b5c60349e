"""For the desk's browser tests and its screenshot (``python -m devtools.desk_screenshot``):
a headless Debian chromium driven by Selenium through /usr/bin/chromedriver (nothing is
downloaded), the desk in a thread of its own, and classified events to publish."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from service.commands.desk import run_desk
from service.config.commands import DeskSettings

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver"))
REQUIRE_BROWSER = os.environ.get("REQUIRE_BROWSER") == "1"


def browser_missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not path.exists():
            return f"{path} is missing (apt-get install chromium chromium-driver)"
    try:
        import selenium  # noqa: F401, PLC0415 - only needed when a browser is there
    except ImportError:
        return "selenium is not installed (the dev extra)"
    return None


@contextmanager
def chromium(width: int = 1366, height: int = 860) -> Iterator[Any]:
    """A headless chromium with a fresh profile, at a laptop's window size."""
    from selenium import webdriver  # noqa: PLC0415
    from selenium.webdriver.chrome.service import Service  # noqa: PLC0415

    profile = tempfile.mkdtemp(prefix="desk-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        f"--window-size={width},{height}",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


class DeskThread:
    """``run_desk`` on an event loop of its own thread (Selenium's calls block)."""

    def __init__(self, settings: DeskSettings) -> None:
        self._settings = settings
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._port: int | None = None
        self._error: BaseException | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="desk", daemon=True)

    def __enter__(self) -> DeskThread:
        self._thread.start()
        if not self._ready.wait(30) or self._port is None:
            raise RuntimeError(f"the desk did not start: {self._error!r}")
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
        assert not self._thread.is_alive(), "the desk did not stop"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    def _run(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            port: asyncio.Future[int] = self._loop.create_future()
            task = asyncio.create_task(run_desk(self._settings, stop=self._stop, port=port))
            await asyncio.wait({task, port}, return_when=asyncio.FIRST_COMPLETED)
            if port.done():
                self._port = port.result()
            self._ready.set()
            await task

        try:
            asyncio.run(main())
        except BaseException as error:
            self._error = error
            self._ready.set()


def classified_event(
    article_id: str,
    title: str,
    *,
    section: tuple[str, float],
    tags: Sequence[tuple[str, float]] = (),
    version: str = "20261207.120000-test",
    body: str = "",
    explanations: dict[str, Any] | None = None,
) -> bytes:
    """A ClassifiedArticleEvent with the given labels and scores."""
    classification: dict[str, Any] = {
        "section": {"label": section[0], "score": section[1]},
        "tags": [{"label": label, "score": score} for label, score in tags],
        "model": {"name": "demo", "version": version},
    }
    if explanations is not None:
        classification["explanations"] = explanations
    event = {
        "article_id": article_id,
        "event_id": f"e-{article_id}",
        "title": title,
        "body": body,
        "schema_version": 1,
        "classification": classification,
        "classified_at": "2026-12-07T12:00:00.000Z",
    }
    return json.dumps(event).encode()
