"""Prometheus metrics, all created against an injected CollectorRegistry.

Labels are small fixed sets (reason, section, topic, partition): never an article id.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

_PREFIX = "article_classifier"
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)
_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_TAG_BUCKETS = (0, 1, 2, 3, 4, 5, 8, 13, 21)


class ServiceMetrics:
    """Every metric the service exports, registered in ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.records_consumed = Counter(
            f"{_PREFIX}_records_consumed_total",
            "Records fetched from the input topic.",
            registry=registry,
        )
        self.articles_classified = Counter(
            f"{_PREFIX}_articles_classified_total",
            "Valid articles the model classified.",
            registry=registry,
        )
        self.articles_published = Counter(
            f"{_PREFIX}_articles_published_total",
            "Classified articles acknowledged by the broker on the output topic.",
            registry=registry,
        )
        self.dead_letters = Counter(
            f"{_PREFIX}_dead_letters_total",
            "Records acknowledged on the dead-letter topic, by reason.",
            ["reason"],
            registry=registry,
        )
        self.batch_size = Histogram(
            f"{_PREFIX}_batch_size",
            "Records per fetched batch.",
            buckets=_BATCH_BUCKETS,
            registry=registry,
        )
        self.classification_duration = Histogram(
            f"{_PREFIX}_classification_duration_seconds",
            "Decode, classify and encode time of one batch (worker thread).",
            buckets=_SECONDS_BUCKETS,
            registry=registry,
        )
        self.end_to_end_latency = Histogram(
            f"{_PREFIX}_end_to_end_latency_seconds",
            "Input record timestamp to the broker's acknowledgement of the output.",
            buckets=_SECONDS_BUCKETS,
            registry=registry,
        )
        self.predictions = Counter(
            f"{_PREFIX}_predictions_total",
            "Articles by predicted section.",
            ["section"],
            registry=registry,
        )
        self.tags_per_article = Histogram(
            f"{_PREFIX}_tags_per_article",
            "Tags assigned per article.",
            buckets=_TAG_BUCKETS,
            registry=registry,
        )
        self.low_confidence = Counter(
            f"{_PREFIX}_low_confidence_total",
            "Articles whose section score is under the low-confidence threshold.",
            registry=registry,
        )
        self.consumer_lag = Gauge(
            f"{_PREFIX}_consumer_lag",
            "High watermark minus next offset to fetch.",
            ["topic", "partition"],
            registry=registry,
        )
        self.in_flight_records = Gauge(
            f"{_PREFIX}_in_flight_records",
            "Records fetched and not yet committed.",
            registry=registry,
        )
        self.model_info = Info(f"{_PREFIX}_model", "The loaded model.", registry=registry)
        self.ready = Gauge(f"{_PREFIX}_ready", "1 when /readyz answers 200.", registry=registry)
        self.broker_errors = Counter(
            f"{_PREFIX}_broker_errors_total",
            "Broker failures, each counted once: a session that failed to start or ended on a"
            " broker error, or the liveness probe finding the broker gone.",
            registry=registry,
        )
        self.commit_failures = Counter(
            f"{_PREFIX}_commit_failures_total",
            "Offset commits that failed.",
            registry=registry,
        )
        self.batch_timeouts = Counter(
            f"{_PREFIX}_batch_timeouts_total",
            "Batches still in flight past --batch-timeout-s (the watchdog's findings).",
            registry=registry,
        )
        self.oldest_batch_age = Gauge(
            f"{_PREFIX}_oldest_in_flight_batch_age_seconds",
            "Age of the oldest fetched batch not yet committed; 0 when none is in flight.",
            registry=registry,
        )
        self.in_flight_bytes = Gauge(
            f"{_PREFIX}_in_flight_bytes",
            "Key and value bytes of the records fetched and not yet committed.",
            registry=registry,
        )
        self.breaker_state = Gauge(
            f"{_PREFIX}_circuit_breaker_state",
            "Circuit breaker: 0 closed, 1 open (nothing published, session backing off),"
            " 2 half-open (re-testing after the delay).",
            registry=registry,
        )
        self.breaker_trips = Counter(
            f"{_PREFIX}_circuit_breaker_trips_total",
            "Times the circuit breaker opened, by cause.",
            ["cause"],
            registry=registry,
        )
        self.session_restarts = Counter(
            f"{_PREFIX}_session_restarts_total",
            "Consumer-group sessions that ended on an error and were restarted, by cause.",
            ["cause"],
            registry=registry,
        )
        self.transactions_committed = Counter(
            f"{_PREFIX}_transactions_committed_total",
            "Exactly-once: transactions committed (one per input partition of each batch).",
            registry=registry,
        )
        self.transactions_aborted = Counter(
            f"{_PREFIX}_transactions_aborted_total",
            "Exactly-once: transactions aborted, by cause (fenced: another producer took the"
            " partition's transactional id; refused: the broker refused a record, which is"
            " isolated; error: any other failure, the session restarts from the last commit).",
            ["cause"],
            registry=registry,
        )
