"""The Grafana dashboard: generated, well formed, and every query answered by a real Prometheus.

The live test needs Debian's ``prometheus``: skipped without it, failed in CI
(REQUIRE_OPS_TOOLS=1, like tests/test_service_prometheus.py).
"""

from __future__ import annotations

import asyncio
import json
import re
import urllib.error
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import (
    Broker,
    Record,
    Topics,
    article_records,
    consume,
    make_settings,
    produce,
    running_service,
    wait_for,
)
from prometheus_client import CollectorRegistry
from test_service_prometheus import _get, _query, _start_prometheus, prometheus_binary

from devtools.tansu import free_port
from ops.grafana import dashboard
from service.observe.metrics import ServiceMetrics

__all__ = ["prometheus_binary"]  # the fixture, imported for the live test

ROOT = Path(__file__).resolve().parent.parent
GRAFANA = ROOT / "ops" / "grafana"
COMPOSE = ROOT / "docker-compose.yml"
_LABEL_VALUES = re.compile(r"^label_values\((?:(?P<match>.+),\s*)?(?P<label>\w+)\)$")


def _checked_in() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(dashboard.DASHBOARD_PATH.read_text("utf-8"))
    return loaded


def _panels() -> list[dict[str, Any]]:
    return [p for p in _checked_in()["panels"] if p["type"] != "row"]


def _targets() -> list[tuple[str, dict[str, Any]]]:
    return [(panel["title"], target) for panel in _panels() for target in panel["targets"]]


def _variables() -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in _checked_in()["templating"]["list"]}


def test_checked_in_dashboard_matches_the_generator() -> None:
    """The JSON in ops/grafana/dashboards is exactly what ops/grafana/dashboard.py builds
    (run `make ops-files` after editing the generator)."""
    assert dashboard.DASHBOARD_PATH.read_text("utf-8") == dashboard.render()


def test_dashboard_json_is_well_formed() -> None:
    """Schema version set, panel ids unique, every panel described with a unit and
    thresholds, every target with a unique refId and a datasource given by the uid variable."""
    board = _checked_in()
    assert board["schemaVersion"] == dashboard.SCHEMA_VERSION
    assert board["uid"] == dashboard.DASHBOARD_UID
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids)), ids
    by_variable = {"type": "prometheus", "uid": "${datasource}"}
    for panel in _panels():
        title = panel["title"]
        assert panel["description"].strip(), title
        assert "\n" not in panel["description"], title
        assert panel["datasource"] == by_variable, title
        defaults = panel["fieldConfig"]["defaults"]
        assert defaults["unit"], title
        assert defaults["thresholds"]["steps"], title
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert panel["targets"], title
        assert all(ref_ids), title
        assert len(ref_ids) == len(set(ref_ids)), title
        for target in panel["targets"]:
            assert target["datasource"] == by_variable, title
            assert target["expr"].strip(), title
    variable = _variables()["datasource"]
    assert variable["type"] == "datasource"
    assert variable["query"] == "prometheus"


def test_rows_come_in_the_on_call_order() -> None:
    """Rows read top-down: health, flow, speed, backlog, model, models per language, rollout,
    newsroom feedback, Kafka
    client, hardening;
    panels never overlap and stay inside the 24-column grid."""
    rows = [p["title"] for p in _checked_in()["panels"] if p["type"] == "row"]
    assert rows == [
        "Health",
        "Flow",
        "Speed",
        "Backlog",
        "Model behaviour",
        "Models per language",
        "Model rollout (hot swap and shadow)",
        "Newsroom feedback",
        "Kafka client",
        "Hardening",
        "Drift (last --drift-window articles per instance and model)",
    ]
    cells: set[tuple[int, int]] = set()
    for panel in _checked_in()["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        area = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not area & cells, f"{panel['title']} overlaps another panel"
        cells |= area


def test_every_metric_the_service_exports_is_on_the_dashboard() -> None:
    """Each metric family of service/observe/metrics.py appears in at least one panel query."""
    families = {m.name for m in ServiceMetrics(CollectorRegistry()).registry.collect()}
    queries = " ".join(target["expr"] for _, target in _targets())
    missing = sorted(name for name in families if not re.search(rf"\b{name}(_\w+)?\b", queries))
    assert missing == [], f"metrics with no panel: {missing}"


def test_provisioning_uses_the_datasource_uid_and_the_dashboard_folder() -> None:
    """The provisioned datasource has the uid the dashboard defaults to, and the provider
    reads the folder docker-compose.yml mounts the dashboards into."""
    datasources = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yml").read_text())
    (source,) = datasources["datasources"]
    assert source["uid"] == dashboard.DATASOURCE_UID
    assert _variables()["datasource"]["current"]["value"] == dashboard.DATASOURCE_UID
    providers = yaml.safe_load(
        (GRAFANA / "provisioning/dashboards/article-classifier.yml").read_text()
    )
    (provider,) = providers["providers"]
    compose = yaml.safe_load(COMPOSE.read_text())
    grafana = compose["services"]["grafana"]
    # A pinned release, unless GRAFANA_IMAGE names another image.
    assert re.fullmatch(r"\$\{GRAFANA_IMAGE:-grafana/grafana:\d+\.\d+\.\d+\}", grafana["image"])
    mounts = {v.split(":")[1]: v.split(":")[0] for v in grafana["volumes"]}
    assert mounts[provider["options"]["path"]] == "./ops/grafana/dashboards"
    assert mounts["/etc/grafana/provisioning"] == "./ops/grafana/provisioning"
    assert all(port.startswith("127.0.0.1:") for port in grafana["ports"])


def _as_prometheus_sees_it(expr: str, job: str) -> str:
    """The expression Grafana sends: variables replaced the way Grafana replaces them."""
    return (
        expr.replace("$__rate_interval", "5m")
        .replace("$job", job)
        .replace("$instance", dashboard.ALL_VALUE)
    )


async def _label_values(port: int, query: str, job: str) -> list[str]:
    parsed = _LABEL_VALUES.match(query)
    assert parsed, f"unsupported variable query {query!r}"
    params = {}
    if parsed["match"]:
        params["match[]"] = _as_prometheus_sees_it(parsed["match"], job)
    path = f"/api/v1/label/{parsed['label']}/values?" + urllib.parse.urlencode(params)
    values: list[str] = await asyncio.to_thread(_get, port, path)
    return values


@pytest.mark.kafka
async def test_every_dashboard_query_returns_data_from_a_real_prometheus(
    broker: Broker,
    topics: Topics,
    model_dir: Path,
    predictor: Any,
    prometheus_binary: str,
    tmp_path: Path,
) -> None:
    """With the service classifying traffic that includes dead letters and Prometheus
    scraping it, every template variable query and every panel query parses and returns
    at least one series."""
    valid = article_records(60)
    bad: list[Record] = [(b"bad-json", b"{not json"), (b"bad-schema", b'{"article_id": 7}')]
    settings = make_settings(broker.bootstrap_servers, topics, model_dir)
    async with running_service(settings, predictor) as service:
        port = free_port()
        with (tmp_path / "prometheus.log").open("wb") as log:
            process = _start_prometheus(prometheus_binary, port, service.port, tmp_path, log)
        job = "article-classifier"
        try:

            async def scraped(expr: str) -> bool:
                try:
                    return bool(await _query(port, expr))
                except OSError:
                    return False

            # The traffic comes after the first scrapes, so that every rate() sees it.
            await wait_for(lambda: scraped("article_classifier_ready == 1"), timeout_s=60)
            await produce(broker.bootstrap_servers, topics.input, valid + bad)
            assert len(await consume(broker.bootstrap_servers, topics.output, 60)) == 60
            assert len(await consume(broker.bootstrap_servers, topics.dead_letter, 2)) == 2
            # The counters move when the broker acknowledges, a little after the records
            # are readable: wait until Prometheus has scraped them all.
            for settled in (
                "article_classifier_records_consumed_total == 62",
                "article_classifier_articles_published_total == 60",
                "sum(article_classifier_predictions_total) == 60",
                "sum(article_classifier_dead_letters_total) == 2",
            ):
                await wait_for(lambda expr=settled: scraped(expr), timeout_s=60)
            await wait_for(lambda: scraped("article_classifier_consumer_lag"), timeout_s=60)
            for name, variable in _variables().items():
                if variable["type"] != "query":
                    continue
                values = await _label_values(port, variable["query"]["query"], job)
                assert values, f"variable {name} has no values"
            assert job in await _label_values(port, _variables()["job"]["query"]["query"], job)
            empty = []
            for title, target in _targets():
                expr = _as_prometheus_sees_it(target["expr"], job)
                assert "$" not in expr, f"{title}: unreplaced variable in {expr}"
                try:
                    answered = await _query(port, expr)
                except urllib.error.HTTPError as error:
                    pytest.fail(f"{title}: Prometheus refused {expr}: {error.read().decode()}")
                if not answered:
                    empty.append(f"{title} [{target['refId']}]: {expr}")
            assert empty == [], "queries without data:\n" + "\n".join(empty)
            reasons = await _query(
                port, _as_prometheus_sees_it(_targets_of("Dead letters by reason")[0], job)
            )
            moving = {s["metric"]["reason"] for s in reasons if float(s["value"][1]) > 0}
            assert moving == {"invalid_json", "schema_violation"}
        finally:
            process.terminate()
            process.wait(timeout=20)


def _targets_of(title: str) -> list[str]:
    return [target["expr"] for panel_title, target in _targets() if panel_title == title]
