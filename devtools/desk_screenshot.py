"""Take the README's screenshot of the desk: ``python -m devtools.desk_screenshot``.

An embedded broker, the demo model classifying the demo articles with explanations (the
service's own ``classify_values``, as ``serve --explain 3`` would publish them), a few
verdicts, the desk, and a headless chromium at a laptop's size saving the article view
and the feed to ``docs/images/``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
from pathlib import Path

from aiokafka import AIOKafkaProducer

from devtools.browser import DeskThread, browser_missing, chromium
from devtools.tansu import EmbeddedBroker, ensure_topics
from model import Predictor, load_labelled, save_artifact, train
from service.config.commands import DeskSettings
from service.core.classify import classify_values

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "alice:screenshot-token-0123456789"  # noqa: S105 - a throwaway local token


async def _publish(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value, key=json.loads(value)["article_id"].encode())
    finally:
        await producer.stop()


def _articles(predictor: Predictor, count: int) -> list[bytes]:
    records = load_labelled([ROOT / "model" / "samples" / "demo.jsonl"]).records[:count]
    events = [
        json.dumps(
            {
                "article_id": f"cms-202612-{i:04d}",
                "event_id": f"e-{i}",
                "title": r.title,
                "body": r.body,
            }
        ).encode()
        for i, r in enumerate(records)
    ]
    outcomes = classify_values(events, predictor, max_event_bytes=1 << 20, explain=3)
    return [outcome.value for outcome in outcomes if hasattr(outcome, "value")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    parser.add_argument("--articles", type=int, default=40)
    args = parser.parse_args(argv)
    missing = browser_missing()
    if missing:
        parser.error(missing)
    work = Path(tempfile.mkdtemp(prefix="desk-shot-"))
    save_artifact(
        train(load_labelled([ROOT / "model" / "samples" / "demo.jsonl"]).records, name="demo"),
        work / "model",
    )
    predictor = Predictor.load(work / "model")
    tokens = work / "tokens"
    tokens.write_text(TOKEN + "\n")
    with EmbeddedBroker() as broker:
        servers = broker.bootstrap_servers
        asyncio.run(ensure_topics(servers, {"articles.classified": 3, "articles.feedback": 1}))
        asyncio.run(_publish(servers, "articles.classified", _articles(predictor, args.articles)))
        settings = DeskSettings(bootstrap_servers=servers, desk_port=0, api_tokens_file=tokens)
        with DeskThread(settings) as desk, chromium(1366, 860) as driver:
            from selenium.webdriver.common.by import By  # noqa: PLC0415

            driver.get(desk.url + "/signin")
            driver.find_element(By.ID, "token").send_keys(TOKEN.split(":", 1)[1])
            driver.find_element(By.ID, "signin").click()
            driver.get(desk.url + "/queue")
            first = driver.find_element(By.CSS_SELECTOR, "#queue [data-row] a")
            first.click()
            args.out.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(args.out / "desk.png"))
            driver.get(desk.url + "/")
            driver.save_screenshot(str(args.out / "desk-feed.png"))
    print(f"wrote {args.out / 'desk.png'} and {args.out / 'desk-feed.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
