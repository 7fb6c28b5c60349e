"""The Grafana dashboard of article-classifier, generated into article-classifier.json.

Regenerate with ``python -m ops.grafana.dashboard`` (``make ops-files``); a test fails when the
checked-in JSON differs from what this module builds, and another runs every query below
against a real Prometheus scraping the service.

Adding a panel is one entry in ``ROWS``: a ``Panel`` with a title, a one-line description,
a unit and its PromQL ``Query`` list. ``$SEL`` in an expression stands for the dashboard's
job and instance filter; ``$__rate_interval`` is Grafana's own rate window.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DASHBOARD_PATH = Path(__file__).resolve().parent / "dashboards" / "article-classifier.json"
DASHBOARD_UID = "article-classifier"
#: Grafana 11's dashboard schema version (the compose file runs Grafana 11.3).
SCHEMA_VERSION = 39
#: The provisioned datasource's uid (provisioning/datasources/prometheus.yml).
DATASOURCE_UID = "article-classifier-prometheus"
SELECTOR = 'job=~"$job", instance=~"$instance"'
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
#: What "All" of a multi-value variable stands for in a regex matcher.
ALL_VALUE = ".*"
#: Share of consumed records that must not fail for the service's own reasons.
SLO = 0.999
_SERVICE_FAILURES = 'reason=~"classification_error|output_rejected"'
_RATE = "$__rate_interval"
_WIDTH = 24


@dataclass(frozen=True)
class Query:
    """One PromQL target; ``$SEL`` is replaced by the job and instance filter."""

    expr: str
    legend: str = ""

    def rendered(self) -> str:
        return self.expr.replace("$SEL", SELECTOR)


@dataclass(frozen=True)
class Threshold:
    """A colour from ``value`` upwards (the first step of a panel starts at -inf)."""

    color: str
    value: float | None = None


@dataclass(frozen=True)
class Panel:
    """One panel: what it shows (description), in which unit, from which queries."""

    title: str
    description: str
    queries: tuple[Query, ...]
    unit: str = "short"
    kind: str = "timeseries"
    width: int = 8
    height: int = 7
    thresholds: tuple[Threshold, ...] = (Threshold("green"),)
    mappings: tuple[dict[str, Any], ...] = ()
    stacked: bool = False
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Row:
    title: str
    panels: tuple[Panel, ...]


def _rate(metric: str, extra: str = "") -> str:
    matchers = "$SEL" + (f", {extra}" if extra else "")
    return f"sum(rate({metric}{{{matchers}}}[{_RATE}]))"


def _quantile(q: float, metric: str) -> Query:
    expr = f"histogram_quantile({q}, sum by (le) (rate({metric}_bucket{{$SEL}}[{_RATE}])))"
    return Query(expr, f"p{round(q * 100)}")


def _increase_or_zero(metric: str, by: str, extra: str = "") -> Query:
    """Events per window by ``by``; a single 0 while there were none (never 'No data')."""
    matchers = "$SEL" + (f", {extra}" if extra else "")
    return Query(
        f"sum by ({by}) (increase({metric}{{{matchers}}}[{_RATE}])) or on() vector(0)",
        f"{{{{{by}}}}}",
    )


_P = "article_classifier_"
_RECS = "suffix: rec/s"
_TRAFFIC_LIGHT = (Threshold("green"), Threshold("red", 1))

ROWS: tuple[Row, ...] = (
    Row(
        "Health",
        (
            Panel(
                "Instances ready",
                "Instances answering /readyz with 200, out of those Prometheus scrapes.",
                (
                    Query(f"sum({_P}ready{{$SEL}})", "ready"),
                    Query("sum(up{$SEL})", "scraped"),
                ),
                kind="stat",
                width=6,
                height=5,
                thresholds=(Threshold("red"), Threshold("green", 1)),
            ),
            Panel(
                "Model loaded",
                "Instances serving each model name and version (two lines during a rollout).",
                (
                    Query(
                        f"count by (name, version) ({_P}model_info{{$SEL}})", "{{name}} {{version}}"
                    ),
                ),
                kind="stat",
                width=6,
                height=5,
                options={"textMode": "value_and_name"},
            ),
            Panel(
                "Error budget left (30 days)",
                f"Share of the {SLO:.1%} SLO's budget left: records dead-lettered for the service's"
                " own faults (classification_error, output_rejected) per consumed record.",
                (
                    Query(
                        "1 - ((sum(increase("
                        f"{_P}dead_letters_total{{$SEL, {_SERVICE_FAILURES}}}[30d]))"
                        " or on() vector(0))"
                        f" / sum(increase({_P}records_consumed_total{{$SEL}}[30d])))"
                        f" / {1 - SLO:.3f}",
                        "budget left",
                    ),
                ),
                unit="percentunit",
                kind="stat",
                width=6,
                height=5,
                thresholds=(Threshold("red"), Threshold("orange", 0.25), Threshold("green", 0.5)),
            ),
            Panel(
                "Dead-letter share",
                "Share of consumed records sent to the dead-letter topic, for any reason"
                " (alert above 5% for one reason).",
                (
                    Query(
                        f"{_rate(_P + 'dead_letters_total')}"
                        f" / {_rate(_P + 'records_consumed_total')}",
                        "dead-lettered",
                    ),
                ),
                unit="percentunit",
                kind="stat",
                width=6,
                height=5,
                thresholds=(Threshold("green"), Threshold("orange", 0.01), Threshold("red", 0.05)),
            ),
        ),
    ),
    Row(
        "Flow",
        (
            Panel(
                "Records per second",
                "Records fetched from the input topic, published to the output and dead-lettered.",
                (
                    Query(_rate(_P + "records_consumed_total"), "consumed"),
                    Query(_rate(_P + "articles_published_total"), "published"),
                    Query(_rate(_P + "dead_letters_total"), "dead-lettered"),
                ),
                unit=_RECS,
                width=12,
            ),
            Panel(
                "Dead letters by reason",
                "Records acknowledged on the dead-letter topic per second, by reason header.",
                (
                    Query(
                        f"sum by (reason) (rate({_P}dead_letters_total{{$SEL}}[{_RATE}]))",
                        "{{reason}}",
                    ),
                ),
                unit=_RECS,
                width=12,
                stacked=True,
            ),
        ),
    ),
    Row(
        "Speed",
        (
            Panel(
                "End-to-end latency",
                "Input record timestamp to the broker's acknowledgement of the output"
                " (buckets end at 30 s; alert on p99 above 10 s).",
                tuple(_quantile(q, _P + "end_to_end_latency_seconds") for q in (0.5, 0.95, 0.99)),
                unit="s",
                thresholds=(Threshold("green"), Threshold("red", 10)),
            ),
            Panel(
                "Batch duration",
                "Decode, classify and encode time of one batch in the worker"
                " (alert on p99 above 0.5 s).",
                tuple(
                    _quantile(q, _P + "classification_duration_seconds") for q in (0.5, 0.95, 0.99)
                ),
                unit="s",
                thresholds=(Threshold("green"), Threshold("red", 0.5)),
            ),
            Panel(
                "Batch size",
                "Records per fetched batch: mean and p95 (small batches under load: look at the"
                " fetch settings).",
                (
                    Query(
                        f"sum(rate({_P}batch_size_sum{{$SEL}}[{_RATE}]))"
                        f" / sum(rate({_P}batch_size_count{{$SEL}}[{_RATE}]))",
                        "mean",
                    ),
                    _quantile(0.95, _P + "batch_size"),
                ),
                unit="short",
            ),
        ),
    ),
    Row(
        "Backlog",
        (
            Panel(
                "Lag per partition",
                "High watermark minus the next offset to fetch, per input partition.",
                (
                    Query(
                        f"sum by (topic, partition) ({_P}consumer_lag{{$SEL}})",
                        "{{topic}}/{{partition}}",
                    ),
                ),
                width=8,
            ),
            Panel(
                "Total lag",
                "Records waiting on the input topic, summed over partitions (KEDA scales on it).",
                (Query(f"sum({_P}consumer_lag{{$SEL}})", "lag"),),
                kind="stat",
                width=5,
                thresholds=(
                    Threshold("green"),
                    Threshold("orange", 10_000),
                    Threshold("red", 100_000),
                ),
            ),
            Panel(
                "Time to drain",
                "Total lag divided by the current consumption rate: how long the backlog lasts"
                " at this speed (empty while nothing is consumed).",
                (
                    Query(
                        f"sum({_P}consumer_lag{{$SEL}})"
                        f" / ({_rate(_P + 'records_consumed_total')} > 0)",
                        "to drain",
                    ),
                ),
                unit="s",
                kind="stat",
                width=4,
                thresholds=(Threshold("green"), Threshold("orange", 300), Threshold("red", 1800)),
            ),
            Panel(
                "In flight",
                "Records fetched and not yet committed (bounded by --max-in-flight-batches).",
                (Query(f"sum({_P}in_flight_records{{$SEL}})", "records"),),
                width=4,
            ),
            Panel(
                "In-flight bytes",
                "Key and value bytes fetched and not yet committed (fetching pauses at"
                " --max-in-flight-bytes).",
                (Query(f"sum({_P}in_flight_bytes{{$SEL}})", "bytes"),),
                unit="bytes",
                width=4,
            ),
        ),
    ),
    Row(
        "Model behaviour",
        (
            Panel(
                "Section mix",
                "Share of classified articles per predicted section (a shift hints at drift or a"
                " new model).",
                (
                    Query(
                        f"sum by (section) (rate({_P}predictions_total{{$SEL}}[{_RATE}]))"
                        f" / ignoring(section) group_left"
                        f" sum(rate({_P}predictions_total{{$SEL}}[{_RATE}]))",
                        "{{section}}",
                    ),
                ),
                unit="percentunit",
                stacked=True,
                width=6,
            ),
            Panel(
                "Low-confidence share",
                "Share of classified articles whose section score is under"
                " --low-confidence-threshold.",
                (
                    Query(
                        f"{_rate(_P + 'low_confidence_total')}"
                        f" / {_rate(_P + 'articles_classified_total')}",
                        "low confidence",
                    ),
                ),
                unit="percentunit",
                thresholds=(Threshold("green"), Threshold("orange", 0.2), Threshold("red", 0.4)),
                width=6,
            ),
            Panel(
                "Uncertain sections",
                "Articles per second whose best section scored under --section-floor (output"
                " flagged classification.section.uncertain), by section; empty without a floor.",
                (
                    Query(
                        f"sum by (section) (rate({_P}uncertain_sections_total{{$SEL}}[{_RATE}]))",
                        "{{section}}",
                    ),
                ),
                unit="ops",
                stacked=True,
                width=6,
            ),
            Panel(
                "Tags per article",
                "Tags assigned per classified article: mean and p95.",
                (
                    Query(
                        f"sum(rate({_P}tags_per_article_sum{{$SEL}}[{_RATE}]))"
                        f" / sum(rate({_P}tags_per_article_count{{$SEL}}[{_RATE}]))",
                        "mean",
                    ),
                    _quantile(0.95, _P + "tags_per_article"),
                ),
                width=6,
            ),
        ),
    ),
    Row(
        "Models per language",
        (
            Panel(
                "Articles by answering model",
                "Classified articles per second by the model that answered them: a configured"
                " language (--model de=DIR), or default.",
                (
                    Query(
                        f"sum by (language) (rate({_P}predictions_total{{$SEL}}[{_RATE}]))",
                        "{{language}}",
                    ),
                ),
                unit="ops",
                stacked=True,
                width=12,
            ),
            Panel(
                "Default-model fallbacks",
                "Articles per second the default model answered although models per language are"
                " configured: no model for their language (no_model) or no language detected"
                " (undetected).",
                (
                    Query(
                        f"sum by (reason) (rate({_P}language_fallbacks_total{{$SEL}}[{_RATE}]))",
                        "{{reason}}",
                    ),
                ),
                unit="ops",
                width=12,
            ),
        ),
    ),
    Row(
        "Model rollout (hot swap and shadow)",
        (
            Panel(
                "Model swaps",
                "Models swapped in while running, and swaps refused by reason (the old model"
                " keeps serving), per window.",
                (
                    _increase_or_zero(_P + "model_reloads_total", "model"),
                    _increase_or_zero(_P + "model_reload_failures_total", "reason"),
                ),
            ),
            Panel(
                "Shadow agreement",
                "Candidate (--shadow-model) vs live model: section agreement and mean tag"
                " Jaccard, by version pair; empty (0) without a candidate.",
                (
                    Query(
                        f"sum by (model_version, shadow_version)"
                        f" (rate({_P}shadow_section_agreements_total{{$SEL}}[{_RATE}]))"
                        f" / sum by (model_version, shadow_version)"
                        f" (rate({_P}shadow_articles_total{{$SEL}}[{_RATE}])) or on() vector(0)",
                        "sections {{model_version}} vs {{shadow_version}}",
                    ),
                    Query(
                        f"sum by (model_version, shadow_version)"
                        f" (rate({_P}shadow_tag_jaccard_sum{{$SEL}}[{_RATE}]))"
                        f" / sum by (model_version, shadow_version)"
                        f" (rate({_P}shadow_tag_jaccard_count{{$SEL}}[{_RATE}])) or on() vector(0)",
                        "tags {{model_version}} vs {{shadow_version}}",
                    ),
                ),
                unit="percentunit",
            ),
            Panel(
                "Shadow label flips",
                "Labels the candidate adds or removes compared with the live model, per window.",
                (_increase_or_zero(_P + "shadow_label_flips_total", "label, change"),),
            ),
            Panel(
                "Shadow cost and failures",
                "Candidate scoring time per batch (p95), candidate failures and shadow-topic"
                " publish failures per second; the candidate serving.",
                (
                    Query(
                        f"histogram_quantile(0.95, sum by (le)"
                        f" (rate({_P}shadow_duration_seconds_bucket{{$SEL}}[{_RATE}])))"
                        f" or on() vector(0)",
                        "p95 seconds",
                    ),
                    Query(f"{_rate(_P + 'shadow_failures_total')} or on() vector(0)", "failures"),
                    Query(
                        f"{_rate(_P + 'shadow_publish_failures_total')} or on() vector(0)",
                        "publish failures",
                    ),
                    Query(
                        f"count({_P}shadow_model_info{{$SEL}}) or on() vector(0)",
                        "candidates",
                    ),
                ),
            ),
        ),
    ),
    Row(
        "Newsroom feedback",
        (
            Panel(
                "Section verdicts by editors",
                "Editors' section verdicts per window: agreed with the model or corrected (live"
                " accuracy; by model version in Explore).",
                (_increase_or_zero(_P + "feedback_section_total", "outcome"),),
                stacked=True,
            ),
            Panel(
                "Tag verdicts by editors",
                "Tags the model gave that editors kept (true_positive) or removed"
                " (false_positive), and tags editors added (false_negative), per window.",
                (_increase_or_zero(_P + "feedback_tag_total", "outcome"),),
                stacked=True,
            ),
            Panel(
                "Feedback consumer",
                "Corrections and feedback records per second, bad feedback dead-lettered, feedback"
                " session restarts, and whether the feedback consumer runs.",
                (
                    Query(f"{_rate(_P + 'corrections_total')} or on() vector(0)", "corrections"),
                    Query(f"{_rate(_P + 'feedback_records_total')} or on() vector(0)", "records"),
                    Query(
                        f"{_rate(_P + 'feedback_dead_letters_total')} or on() vector(0)",
                        "dead letters",
                    ),
                    Query(
                        f"{_rate(_P + 'feedback_session_restarts_total')} or on() vector(0)",
                        "restarts",
                    ),
                    Query(
                        f"max({_P}feedback_consumer_running{{$SEL}}) or on() vector(0)",
                        "running",
                    ),
                ),
            ),
        ),
    ),
    Row(
        "Kafka client",
        (
            Panel(
                "Transactions (exactly-once)",
                "Kafka transactions committed per second, and aborted by cause (fenced, refused,"
                " error); 0 in at-least-once mode.",
                (
                    Query(
                        f"{_rate(_P + 'transactions_committed_total')} or on() vector(0)",
                        "committed",
                    ),
                    _increase_or_zero(_P + "transactions_aborted_total", "cause"),
                ),
            ),
            Panel(
                "Broker errors",
                "Broker failures per window: sessions that failed or the probe finding the broker"
                " gone (any is an alert).",
                (Query(f"sum(increase({_P}broker_errors_total{{$SEL}}[{_RATE}]))", "errors"),),
                thresholds=_TRAFFIC_LIGHT,
            ),
            Panel(
                "Commit failures",
                "Offset commits that failed per window: the records are redelivered after a"
                " rebalance.",
                (Query(f"sum(increase({_P}commit_failures_total{{$SEL}}[{_RATE}]))", "failures"),),
                thresholds=_TRAFFIC_LIGHT,
            ),
            Panel(
                "Session restarts",
                "Consumer-group sessions restarted after an error, by cause, per window.",
                (_increase_or_zero(_P + "session_restarts_total", "cause"),),
                thresholds=_TRAFFIC_LIGHT,
            ),
            Panel(
                "Schema Registry requests",
                "Lookups of input schema ids not seen before and registrations of the output"
                " schema, by outcome, per window (none without --schema-registry-url).",
                (
                    Query(
                        f"sum by (request, outcome) (increase({_P}schema_registry_requests_total"
                        f"{{$SEL}}[{_RATE}])) or on() vector(0)",
                        "{{request}} {{outcome}}",
                    ),
                ),
            ),
        ),
    ),
    Row(
        "Hardening",
        (
            Panel(
                "Oldest batch in flight",
                "Age of the oldest fetched batch not yet committed, per instance (the watchdog"
                " fails /healthz past --batch-timeout-s).",
                (
                    Query(
                        f"max by (instance) ({_P}oldest_in_flight_batch_age_seconds{{$SEL}})",
                        "{{instance}}",
                    ),
                ),
                unit="s",
                width=6,
                thresholds=(Threshold("green"), Threshold("orange", 60), Threshold("red", 120)),
            ),
            Panel(
                "Watchdog findings",
                "Batches found in flight past --batch-timeout-s, per window.",
                (Query(f"sum(increase({_P}batch_timeouts_total{{$SEL}}[{_RATE}]))", "stuck"),),
                width=6,
                thresholds=_TRAFFIC_LIGHT,
            ),
            Panel(
                "Circuit breaker",
                "Breaker state per instance: closed, open (nothing published) or half-open.",
                (Query(f"max by (instance) ({_P}circuit_breaker_state{{$SEL}})", "{{instance}}"),),
                kind="state-timeline",
                width=6,
                thresholds=(Threshold("green"), Threshold("red", 1), Threshold("orange", 2)),
                mappings=(
                    {
                        "type": "value",
                        "options": {
                            "0": {"text": "closed", "color": "green", "index": 0},
                            "1": {"text": "open", "color": "red", "index": 1},
                            "2": {"text": "half-open", "color": "orange", "index": 2},
                        },
                    },
                ),
            ),
            Panel(
                "Breaker trips and output rejected",
                "Breaker openings by cause, and records dead-lettered as output_rejected, per"
                " window.",
                (
                    _increase_or_zero(_P + "circuit_breaker_trips_total", "cause"),
                    Query(
                        f'sum(increase({_P}dead_letters_total{{$SEL, reason="output_rejected"}}'
                        f"[{_RATE}])) or on() vector(0)",
                        "output_rejected",
                    ),
                ),
                width=6,
                thresholds=_TRAFFIC_LIGHT,
            ),
        ),
    ),
    Row(
        "Drift (last --drift-window articles per instance and model)",
        (
            Panel(
                "Section mix vs training",
                "Jensen-Shannon divergence (bits) of the predicted section mix from the training"
                " mix; the alert is at 0.1.",
                (
                    Query(
                        f"max by (instance, language) ({_P}drift_section_divergence{{$SEL}})",
                        "{{instance}} {{language}}",
                    ),
                ),
                width=6,
            ),
            Panel(
                "Unknown tokens",
                "Share of the tokens read that are outside the model's vocabulary; alert at 0.4.",
                (
                    Query(
                        f"max by (instance, language) ({_P}drift_unknown_token_share{{$SEL}})",
                        "{{instance}} {{language}}",
                    ),
                ),
                width=6,
            ),
            Panel(
                "Mean section score",
                "Mean score of the chosen section; alert under 0.6.",
                (
                    Query(
                        f"min by (instance, language) ({_P}drift_mean_section_score{{$SEL}})",
                        "{{instance}} {{language}}",
                    ),
                ),
                width=6,
            ),
            Panel(
                "Tags per article vs training",
                "Mean tags per article in the window, the training mean, and the window's fill.",
                (
                    Query(
                        f"max by (instance, language) ({_P}drift_mean_tags_per_article{{$SEL}})",
                        "{{instance}} {{language}}",
                    ),
                    Query(
                        f"max by (language) ({_P}drift_training_tags_per_article{{$SEL}})",
                        "training {{language}}",
                    ),
                    Query(
                        f"max by (instance, language) ({_P}drift_window_articles{{$SEL}}) / 1000",
                        "window / 1000 {{instance}} {{language}}",
                    ),
                ),
                width=6,
            ),
        ),
    ),
)


def _variables() -> list[dict[str, Any]]:
    def query_variable(name: str, label: str, query: str) -> dict[str, Any]:
        return {
            "name": name,
            "label": label,
            "type": "query",
            "datasource": DATASOURCE,
            "query": {"query": query, "refId": f"{name}-variable"},
            "definition": query,
            "refresh": 2,
            "includeAll": True,
            "multi": True,
            "allValue": ALL_VALUE,
            "current": {"text": ["All"], "value": ["$__all"]},
            "sort": 1,
            "hide": 0,
        }

    return [
        {
            "name": "datasource",
            "label": "Prometheus",
            "type": "datasource",
            "query": "prometheus",
            "current": {"text": "Prometheus", "value": DATASOURCE_UID},
            "hide": 0,
        },
        query_variable("job", "Job", "label_values(article_classifier_ready, job)"),
        query_variable(
            "instance", "Instance", 'label_values(article_classifier_ready{job=~"$job"}, instance)'
        ),
    ]


def _panel(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    steps = [{"color": t.color, "value": t.value} for t in panel.thresholds]
    custom: dict[str, Any] = {}
    if panel.kind == "timeseries":
        custom = {
            "drawStyle": "line",
            "fillOpacity": 20 if panel.stacked else 10,
            "showPoints": "never",
            "stacking": {"mode": "normal" if panel.stacked else "none", "group": "A"},
            "thresholdsStyle": {"mode": "off" if len(steps) == 1 else "line"},
        }
    options: dict[str, Any] = {"legend": {"displayMode": "list", "placement": "bottom"}}
    if panel.kind == "stat":
        options = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}}
    options.update(panel.options)
    return {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"x": x, "y": y, "w": panel.width, "h": panel.height},
        "fieldConfig": {
            "defaults": {
                "unit": panel.unit,
                "thresholds": {"mode": "absolute", "steps": steps},
                "mappings": list(panel.mappings),
                "custom": custom,
            },
            "overrides": [],
        },
        "options": options,
        "targets": [
            {
                "refId": chr(ord("A") + index),
                "datasource": DATASOURCE,
                "expr": query.rendered(),
                "legendFormat": query.legend,
                "range": True,
            }
            for index, query in enumerate(panel.queries)
        ],
    }


def build() -> dict[str, Any]:
    """The dashboard as Grafana's JSON model."""
    panels: list[dict[str, Any]] = []
    next_id = 1
    y = 0
    for row in ROWS:
        panels.append(
            {
                "id": next_id,
                "type": "row",
                "title": row.title,
                "collapsed": False,
                "gridPos": {"x": 0, "y": y, "w": _WIDTH, "h": 1},
                "panels": [],
            }
        )
        next_id += 1
        y += 1
        x = 0
        line_height = 0
        for panel in row.panels:
            if x + panel.width > _WIDTH:
                x, y, line_height = 0, y + line_height, 0
            panels.append(_panel(panel, next_id, x, y))
            next_id += 1
            x += panel.width
            line_height = max(line_height, panel.height)
        y += line_height
    return {
        "uid": DASHBOARD_UID,
        "title": "article-classifier",
        "description": "Health, flow, speed, backlog and model behaviour of article-classifier.",
        "tags": ["article-classifier", "kafka"],
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "editable": False,
        "graphTooltip": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "timezone": "utc",
        "templating": {"list": _variables()},
        "annotations": {"list": []},
        "links": [],
        "panels": panels,
    }


def render() -> str:
    return json.dumps(build(), indent=2) + "\n"


def main() -> int:
    DASHBOARD_PATH.parent.mkdir(parents=True, exist_ok=True)
    DASHBOARD_PATH.write_text(render(), encoding="utf-8")
    sys.stdout.write(f"wrote {DASHBOARD_PATH}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
