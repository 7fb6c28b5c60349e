"""Prometheus metrics, all created against an injected CollectorRegistry.

Labels are small fixed sets (reason, section, topic, partition): never an article id. The
metrics know nothing of the service: what fills them observes the service
(``service.observe.batches``, ``service.observe.drift``, ...).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from schemas import DecodeErrorReason

_PREFIX = "article_classifier"
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)
_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_TAG_BUCKETS = (0, 1, 2, 3, 4, 5, 8, 13, 21)
_JACCARD_BUCKETS = (0.0, 0.25, 0.5, 0.75, 0.9, 0.999, 1.0)


@dataclass(frozen=True, slots=True)
class DriftGauges:
    """The gauges of the drift signals (set by ``service.observe.drift.DriftTracker``),
    labelled by the model they are about: ``language`` is a configured language, or
    ``default``."""

    section_divergence: Gauge
    unknown_token_share: Gauge
    mean_section_score: Gauge
    mean_tags: Gauge
    training_tags: Gauge
    window_articles: Gauge


class ServiceMetrics:
    """Every metric the service exports, registered in ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self._pipeline(registry)
        self._health(registry)
        self._drift(registry)
        self._rollout(registry)
        self._feedback(registry)
        self._transactions(registry)
        # Every series with a fixed label set starts at 0, so that rate() and increase()
        # see the first dead letter of a reason instead of a series that appears at 1.
        for decode_reason in DecodeErrorReason:
            self.feedback_dead_letters.labels(decode_reason.value)

    def _pipeline(self, registry: CollectorRegistry) -> None:
        """Records, articles, dead letters, batches and latencies."""
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
            "Articles by predicted section and the model that answered (language: a configured"
            " language, or default).",
            ["section", "language"],
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
        self.uncertain_sections = Counter(
            f"{_PREFIX}_uncertain_sections_total",
            "Articles whose best section scored under --section-floor (flagged"
            " classification.section.uncertain), by that section and the model that answered.",
            ["section", "language"],
            registry=registry,
        )
        self.language_fallbacks = Counter(
            f"{_PREFIX}_language_fallbacks_total",
            "Articles the default model answered although models per language are configured:"
            " their language has no model (no_model) or could not be detected (undetected).",
            ["reason"],
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

    def _health(self, registry: CollectorRegistry) -> None:
        """Broker, commits, watchdog, flow control, breaker and session restarts."""
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
        self.schema_registry_requests = Counter(
            f"{_PREFIX}_schema_registry_requests_total",
            "Schema Registry requests (--schema-registry-url), by request (lookup: an input"
            " schema id not seen before; register: the output schema) and outcome (ok, or"
            " error: unreachable or refused).",
            ["request", "outcome"],
            registry=registry,
        )

    def _drift(self, registry: CollectorRegistry) -> None:
        """The drift signals over the last --drift-window articles of each model."""
        self.drift_gauges = DriftGauges(
            section_divergence=Gauge(
                f"{_PREFIX}_drift_section_divergence",
                "Jensen-Shannon divergence (base 2, 0..1) of the predicted section mix of"
                " the last --drift-window articles from the training section mix; NaN"
                " until an article came, or without a section head.",
                ["language"],
                registry=registry,
            ),
            unknown_token_share=Gauge(
                f"{_PREFIX}_drift_unknown_token_share",
                "Share of the tokens of the last --drift-window articles that are not in"
                " the model's vocabulary (the title counted as often as the model reads it).",
                ["language"],
                registry=registry,
            ),
            mean_section_score=Gauge(
                f"{_PREFIX}_drift_mean_section_score",
                "Mean score of the predicted section over the last --drift-window articles.",
                ["language"],
                registry=registry,
            ),
            mean_tags=Gauge(
                f"{_PREFIX}_drift_mean_tags_per_article",
                "Mean number of predicted tags over the last --drift-window articles.",
                ["language"],
                registry=registry,
            ),
            training_tags=Gauge(
                f"{_PREFIX}_drift_training_tags_per_article",
                "Mean number of tags of a tag-labelled training article of the serving"
                " model; NaN without a tag head.",
                ["language"],
                registry=registry,
            ),
            window_articles=Gauge(
                f"{_PREFIX}_drift_window_articles",
                "Articles in the drift window now (at most --drift-window; restarts at 0"
                " with a new model).",
                ["language"],
                registry=registry,
            ),
        )

    def _rollout(self, registry: CollectorRegistry) -> None:
        """Model swaps (SIGHUP, --model-poll-s) and shadow scoring (--shadow-model)."""
        self.model_reloads = Counter(
            f"{_PREFIX}_model_reloads_total",
            "Models swapped in while running, by which one (model: live, shadow: candidate).",
            ["model"],
            registry=registry,
        )
        self.model_reload_failures = Counter(
            f"{_PREFIX}_model_reload_failures_total",
            "Swaps refused (the old model keeps serving), by which one and why: trust (pin or"
            " signature), artifact (unreadable or invalid), smoke_test, error.",
            ["model", "reason"],
            registry=registry,
        )
        self.shadow_model_info = Info(
            f"{_PREFIX}_shadow_model",
            "The candidate model scored in the shadow (--shadow-model).",
            registry=registry,
        )
        self.shadow_articles = Counter(
            f"{_PREFIX}_shadow_articles_total",
            "Articles classified by both the live and the candidate model.",
            ["model_version", "shadow_version"],
            registry=registry,
        )
        self.shadow_section_agreements = Counter(
            f"{_PREFIX}_shadow_section_agreements_total",
            "Articles where the candidate chose the live model's section.",
            ["model_version", "shadow_version"],
            registry=registry,
        )
        self.shadow_tag_jaccard = Histogram(
            f"{_PREFIX}_shadow_tag_jaccard",
            "Tag agreement per article: shared tags / tags of either model (1 when neither"
            " assigns a tag).",
            ["model_version", "shadow_version"],
            buckets=_JACCARD_BUCKETS,
            registry=registry,
        )
        self.shadow_label_flips = Counter(
            f"{_PREFIX}_shadow_label_flips_total",
            "Articles where the candidate added or removed a label (head: section or tag).",
            ["model_version", "shadow_version", "head", "label", "change"],
            registry=registry,
        )
        self.shadow_failures = Counter(
            f"{_PREFIX}_shadow_failures_total",
            "Articles the candidate model failed on (the live output is unaffected).",
            ["model_version", "shadow_version"],
            registry=registry,
        )
        self.shadow_duration = Histogram(
            f"{_PREFIX}_shadow_duration_seconds",
            "Time the candidate model took per batch (inside the classification time).",
            buckets=_SECONDS_BUCKETS,
            registry=registry,
        )
        self.shadow_publish_failures = Counter(
            f"{_PREFIX}_shadow_publish_failures_total",
            "Candidate outputs not published to --shadow-topic (best effort, never retried).",
            registry=registry,
        )

    def _feedback(self, registry: CollectorRegistry) -> None:
        """Editor feedback: live quality, labelled by the model version the editor saw."""
        # Editor feedback (service.feedback.consumer): live quality, labelled by the model version
        # the editor saw. Tags and sections outside the loaded model's label set count as
        # "_other", and only the last few versions keep series, so cardinality is bounded.
        self.feedback_records = Counter(
            f"{_PREFIX}_feedback_records_total",
            "Records fetched from the feedback topic.",
            registry=registry,
        )
        self.corrections = Counter(
            f"{_PREFIX}_corrections_total",
            "Valid feedback events (an editor's final labels for an article), by the model"
            " version the editor saw ('none' when the event names none).",
            ["model_version"],
            registry=registry,
        )
        self.feedback_sections = Counter(
            f"{_PREFIX}_feedback_section_total",
            "Feedback events with both a predicted and a final section, by predicted section"
            " and outcome (agreed: the editor kept it; corrected: the editor changed it).",
            ["model_version", "section", "outcome"],
            registry=registry,
        )
        self.feedback_tags = Counter(
            f"{_PREFIX}_feedback_tag_total",
            "Tag verdicts of feedback events with both predicted and final tags: true_positive"
            " (given and kept), false_positive (given and removed), false_negative (added).",
            ["model_version", "tag", "outcome"],
            registry=registry,
        )
        self.feedback_dead_letters = Counter(
            f"{_PREFIX}_feedback_dead_letters_total",
            "Feedback records acknowledged on the dead-letter topic, by reason.",
            ["reason"],
            registry=registry,
        )
        self.feedback_session_restarts = Counter(
            f"{_PREFIX}_feedback_session_restarts_total",
            "Feedback consumer sessions that ended on an error and were restarted, by cause"
            " (broker or error).",
            ["cause"],
            registry=registry,
        )
        self.feedback_consumer_running = Gauge(
            f"{_PREFIX}_feedback_consumer_running",
            "1 while the feedback consumer has a session with the broker, else 0.",
            registry=registry,
        )

    def _transactions(self, registry: CollectorRegistry) -> None:
        """Exactly-once: transactions committed and aborted."""
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

    def show_dead_letter_reasons(self, reasons: Iterable[str]) -> None:
        """Start the dead-letter series of every reason at 0."""
        for reason in reasons:
            self.dead_letters.labels(reason)

    def show_sections(self, sections: tuple[str, ...], language: str = "default") -> None:
        """Start the per-section prediction series of a newly loaded model at 0."""
        for section in sections:
            self.predictions.labels(section, language)
            self.uncertain_sections.labels(section, language)

    def show_language_fallbacks(self, reasons: Iterable[str]) -> None:
        """Start the fallback series at 0 (where models per language are configured)."""
        for reason in reasons:
            self.language_fallbacks.labels(reason)
