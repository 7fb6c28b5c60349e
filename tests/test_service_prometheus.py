"""A real Prometheus server scrapes the running service and evaluates our alert rules."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path
from typing import IO, Any

import pytest
from conftest import (
    Topics,
    article_records,
    consume,
    make_settings,
    produce,
    running_service,
    wait_for,
)

from devtools.tansu import EmbeddedBroker, free_port

ROOT = Path(__file__).resolve().parent.parent
ALERTS = ROOT / "ops" / "prometheus" / "alerts.yml"
REQUIRED = os.environ.get("REQUIRE_OPS_TOOLS") == "1"

pytestmark = pytest.mark.kafka


@pytest.fixture
def prometheus_binary() -> str:
    binary = shutil.which("prometheus")
    if binary is None:
        if REQUIRED:
            pytest.fail("prometheus not installed (apt-get install -y prometheus)")
        pytest.skip("prometheus not installed (apt-get install -y prometheus)")
    return binary


def _get(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        body = json.load(response)
    assert body["status"] == "success", body
    return body["data"]


async def _query(port: int, expression: str) -> list[dict[str, Any]]:
    path = "/api/v1/query?" + urllib.parse.urlencode({"query": expression})
    result: list[dict[str, Any]] = (await asyncio.to_thread(_get, port, path))["result"]
    return result


def _start_prometheus(
    binary: str, port: int, target_port: int, workdir: Path, log: IO[bytes]
) -> subprocess.Popen[bytes]:
    config = workdir / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"rule_files: [{json.dumps(str(ALERTS))}]\n"
        "scrape_configs:\n"
        "  - job_name: article-classifier\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{target_port}']}}]\n"
    )
    return subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=log,
    )


async def test_prometheus_scrapes_the_service_and_loads_the_alert_rules(
    broker: EmbeddedBroker,
    topics: Topics,
    model_dir: Path,
    predictor: Any,
    prometheus_binary: str,
    tmp_path: Path,
) -> None:
    """Prometheus sees the target up, reads the counters the service exposes, and has
    every rule of alerts.yml loaded and healthy."""
    records = article_records(20)
    await produce(broker.bootstrap_servers, topics.input, records)
    settings = make_settings(broker.bootstrap_servers, topics, model_dir)
    async with running_service(settings, predictor) as service:
        assert len(await consume(broker.bootstrap_servers, topics.output, 20)) == 20
        port = free_port()
        with (tmp_path / "prometheus.log").open("wb") as log:
            process = _start_prometheus(prometheus_binary, port, service.port, tmp_path, log)
        try:

            async def consumed() -> bool:
                try:
                    samples = await _query(port, "article_classifier_records_consumed_total")
                except OSError:
                    return False
                return bool(samples) and float(samples[0]["value"][1]) == 20.0

            await wait_for(consumed, timeout_s=60)
            (up,) = await _query(port, 'up{job="article-classifier"}')
            assert up["value"][1] == "1"
            (ready,) = await _query(port, "article_classifier_ready")
            assert ready["value"][1] == "1"
            groups = (await asyncio.to_thread(_get, port, "/api/v1/rules"))["groups"]
            rules = [rule for group in groups for rule in group["rules"]]
            assert rules, "no rules loaded from alerts.yml"
            assert all(rule["health"] in {"ok", "unknown"} for rule in rules), rules
            firing = [r["name"] for r in rules if r.get("state") == "firing"]
            assert firing == [], f"alerts firing on a healthy service: {firing}"
        finally:
            process.terminate()
            process.wait(timeout=20)
