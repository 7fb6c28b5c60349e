"""The documentation's kcat and Kafka console-tool command lines, run as written (with this test's
broker address and topic names) against each broker engine."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    REQUIRE_APACHE_KAFKA,
    ROOT,
    Broker,
    Topics,
    consume,
    make_settings,
    require_apache_kafka,
    running_service,
)

from devtools.kafka_jars import DEFAULT_KAFKA_VERSION, classpath

pytestmark = pytest.mark.kafka

#: The README and the documentation pages: their command lines are what the tests run.
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_README_CLASSPATH = f"$HOME/.cache/article-classifier/kafka-{DEFAULT_KAFKA_VERSION}/libs/*"
_README_HOSTS = re.compile(r"127\.0\.0\.1:(9092|9094)")
_README_TOPICS = re.compile(r"\barticles(\.classified|\.dead-letter)?\b")


def readme_commands(wanted: Callable[[str], bool]) -> list[str]:
    """The shell lines of the documents' ``sh`` blocks (continuations joined) that ``wanted``
    picks, in order."""
    commands: list[str] = []
    in_block, pending = False, ""
    lines = [line for page in DOCUMENTS for line in page.read_text("utf-8").splitlines()]
    for line in lines:
        if line.startswith("```"):
            in_block = line.strip() == "```sh"
            continue
        if not in_block:
            continue
        pending += line.strip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        if wanted(pending):
            commands.append(pending)
        pending = ""
    return commands


def localise(command: str, bootstrap: str, topics: Topics) -> str:
    """The README line aimed at this test's broker and topics."""
    names = {"": topics.input, ".classified": topics.output, ".dead-letter": topics.dead_letter}
    command = _README_HOSTS.sub(bootstrap, command)
    return _README_TOPICS.sub(lambda match: names[match.group(1) or ""], command)


def run_shell(command: str, *, env: dict[str, str] | None = None, timeout_s: float = 120) -> str:
    """Run one README line with bash; fail with its output when it fails."""
    result = subprocess.run(
        ["bash", "-c", command],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env=env,
        check=False,
    )
    assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def require_kcat() -> None:
    """Skip (fail where CI requires it) when kcat is not installed."""
    if shutil.which("kcat") is None:
        message = "kcat not installed (apt-get install -y kcat)"
        if REQUIRE_APACHE_KAFKA:
            pytest.fail(message)
        pytest.skip(message)


def _classified_a1(lines: str) -> dict[str, Any]:
    events = [json.loads(line) for line in lines.splitlines() if line.startswith("{")]
    matching = [event for event in events if event.get("article_id") == "a1"]
    assert matching, lines
    event: dict[str, Any] = matching[0]
    return event


async def test_readme_kcat_commands_send_and_read_back_an_article(
    broker_engine: str, broker: Broker, topics: Topics, model_dir: Path, predictor: Any
) -> None:
    """The README's two kcat lines: the article sent with the first comes back classified
    through the second."""
    if broker_engine == "tansu":
        pytest.skip(
            "Debian's kcat 1.7.1 (librdkafka 2.0.2) cannot read tansu's ApiVersions reply "
            "('Read underflow'); the README's kcat lines are for Apache Kafka"
        )
    require_kcat()
    # The feedback section's kcat line sends a verdict, not an article.
    produce_line, consume_line = readme_commands(
        lambda line: "kcat " in line and "articles.feedback" not in line
    )
    bootstrap = broker.bootstrap_servers
    async with running_service(make_settings(bootstrap, topics, model_dir), predictor):
        await asyncio.to_thread(run_shell, localise(produce_line, bootstrap, topics))
        assert len(await consume(bootstrap, topics.output, 1)) == 1
        output = await asyncio.to_thread(run_shell, localise(consume_line, bootstrap, topics))
    event = _classified_a1(output)
    assert event["classification"]["section"]["label"]


async def test_readme_console_tool_commands_create_send_and_read_back(
    broker_engine: str, broker: Broker, model_dir: Path, predictor: Any
) -> None:
    """The README's console-tool lines from the fetched jars create the three topics, send
    an article, and read it back classified."""
    if broker_engine == "tansu":
        pytest.skip(
            "run against Apache Kafka, whose jars bring the tools (against tansu this test "
            "passed but took 35 s here, the slowest of the suite)"
        )
    require_apache_kafka()
    lines = readme_commands(lambda line: "org.apache.kafka.tools." in line)
    creates = [line for line in lines if "TopicCommand" in line]
    [producer_line] = [line for line in lines if "ConsoleProducer" in line]
    [consumer_line] = [line for line in lines if "ConsoleConsumer" in line]
    assert len(creates) == 3
    assert all(f'"{_README_CLASSPATH}"' in line or '"$K"' in line for line in lines)
    assert readme_commands(lambda line: line.startswith("K=")) == [f'K="{_README_CLASSPATH}"']
    tag = uuid.uuid4().hex[:8]
    topics = Topics(f"in-tools-{tag}", f"out-tools-{tag}", f"dlq-tools-{tag}", f"group-{tag}")
    bootstrap = broker.bootstrap_servers
    env = {"K": classpath(), "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    for line in creates:
        await asyncio.to_thread(run_shell, localise(line, bootstrap, topics), env=env)
    async with running_service(make_settings(bootstrap, topics, model_dir), predictor):
        await asyncio.to_thread(run_shell, localise(producer_line, bootstrap, topics), env=env)
        output = await asyncio.to_thread(
            run_shell, localise(consumer_line, bootstrap, topics), env=env
        )
    event = _classified_a1(output)
    assert event["title"] == "Striker scores twice in cup final"
    assert event["classification"]["section"]["label"]
