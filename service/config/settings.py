"""The service's one typed configuration object, and the ``serve`` command-line options.

Every option is a plain argparse flag (``--bootstrap-servers`` -> dest ``bootstrap_servers``;
``--model`` feeds ``model_dir``, as in the offline commands) whose value is validated here,
not by argparse, so a bad value from a flag or from its
``ARTICLE_CLASSIFIER_<DEST>`` environment variable fails the same way: a ``ConfigError``
naming the option and the value (the CLI prints it and exits 2).
"""

from __future__ import annotations

import argparse
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from schemas import (
    DEFAULT_MAX_DEPTH,
    DEFAULT_MAX_EVENT_BYTES,
    DEFAULT_MAX_FIELDS,
    DEFAULT_MAX_TITLE_CHARS,
    MAX_EXPLAIN_TERMS,
    PARSER_MAX_DEPTH,
    RecordLimits,
)


class WorkerKind(StrEnum):
    """``--classify-in``: a thread of the service process (default) or a worker process."""

    PROCESS = "process"
    THREAD = "thread"


class ConfigError(ValueError):
    """The configuration cannot work; the message names the option and the bad value."""


class SecurityProtocol(StrEnum):
    PLAINTEXT = "PLAINTEXT"
    SSL = "SSL"
    SASL_PLAINTEXT = "SASL_PLAINTEXT"
    SASL_SSL = "SASL_SSL"


class SaslMechanism(StrEnum):
    PLAIN = "PLAIN"
    SCRAM_SHA_256 = "SCRAM-SHA-256"
    SCRAM_SHA_512 = "SCRAM-SHA-512"


class LogLevel(StrEnum):
    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"


class CompressionType(StrEnum):
    """Codec of the produced outputs and dead letters (consumed input may use any)."""

    NONE = "none"
    GZIP = "gzip"
    SNAPPY = "snappy"
    LZ4 = "lz4"
    ZSTD = "zstd"


class ProcessingGuarantee(StrEnum):
    """What a crash may cost: re-processing (at-least-once) or nothing visible to a
    read_committed consumer (exactly-once, Kafka transactions)."""

    AT_LEAST_ONCE = "at-least-once"
    EXACTLY_ONCE = "exactly-once"


class ServiceSettings(BaseModel):
    """Everything ``serve`` needs. Frozen: built once in ``main()`` and passed down."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model_dir: Path = Field(description="model artifact directory")
    #: sha256 of the artifact's model.json: only that exact artifact is loaded.
    model_sha256: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{64}$")
    #: Ed25519 public key (PEM): the artifact must carry a valid model.json.sig under it.
    model_public_key: Path | None = None
    bootstrap_servers: str = Field(default="127.0.0.1:9092", min_length=1)
    input_topic: str = Field(default="articles", min_length=1, max_length=249)
    output_topic: str = Field(default="articles.classified", min_length=1, max_length=249)
    dead_letter_topic: str = Field(default="articles.dead-letter", min_length=1, max_length=249)
    group_id: str = Field(default="article-classifier", min_length=1)
    client_id: str = Field(default="article-classifier", min_length=1)
    #: All interfaces by default: the port is scraped by Prometheus and probed by the
    #: orchestrator from outside the container. Use 127.0.0.1 to keep it local.
    metrics_host: str = "0.0.0.0"  # noqa: S104 - see the comment above
    metrics_port: int = Field(default=9108, ge=0, le=65535)
    batch_size: int = Field(default=256, ge=1, le=100_000)
    batch_max_wait_ms: int = Field(default=50, ge=0, le=5_000)
    max_in_flight_batches: int = Field(default=4, ge=1, le=64)
    #: A thread measured faster on a 2-core host shared with the broker (README); a process
    #: gives classification a core of its own where the host has one to spare.
    classify_in: WorkerKind = WorkerKind.THREAD
    #: Also the time a new member's join may wait, and how soon a dead member's partitions
    #: move (6000 is Apache Kafka's default group.min.session.timeout.ms).
    session_timeout_ms: int = Field(default=10_000, ge=1_000, le=300_000)
    shutdown_timeout_s: float = Field(default=30.0, gt=0, le=3600)
    max_event_bytes: int = Field(default=DEFAULT_MAX_EVENT_BYTES, ge=1)
    #: Per-record caps (``schemas.RecordLimits``): the reasons for the defaults are there.
    max_title_chars: int = Field(default=DEFAULT_MAX_TITLE_CHARS, ge=1)
    max_fields: int = Field(default=DEFAULT_MAX_FIELDS, ge=1)
    max_depth: int = Field(default=DEFAULT_MAX_DEPTH, ge=1, le=PARSER_MAX_DEPTH)
    low_confidence_threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    log_level: LogLevel = LogLevel.INFO
    security_protocol: SecurityProtocol = SecurityProtocol.PLAINTEXT
    sasl_mechanism: SaslMechanism | None = None
    sasl_plain_username: str | None = None
    sasl_plain_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    #: Apache Kafka's default max.message.bytes: used for a topic whose limit the broker
    #: does not report (describe-configs unsupported or refused).
    max_output_bytes: int = Field(default=1_048_588, ge=1024)
    max_in_flight_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    batch_timeout_s: float = Field(default=120.0, gt=0, le=86_400)
    rebalance_drain_timeout_s: float = Field(default=20.0, gt=0, le=3600)
    breaker_window: int = Field(default=200, ge=1, le=1_000_000)
    breaker_threshold: float = Field(default=0.5, gt=0.0, le=1.0)
    breaker_min_records: int = Field(default=20, ge=1)
    breaker_backoff_s: float = Field(default=5.0, gt=0, le=3600)
    breaker_backoff_max_s: float = Field(default=300.0, gt=0, le=86_400)
    worker_max_deaths: int = Field(default=3, ge=1, le=1000)
    broker_check_interval_s: float = Field(default=5.0, gt=0, le=3600)
    #: Editor feedback (service.feedback.consumer); "" turns the feedback consumer off. On by
    #: default: with no CMS sending corrections it is one idle consumer in its own group.
    feedback_topic: str = Field(default="articles.feedback", max_length=249)
    #: Model versions that keep feedback series; older ones' series are removed.
    feedback_max_versions: int = Field(default=5, ge=1, le=100)
    compression_type: CompressionType = CompressionType.NONE
    #: Explaining terms per label in the output (0: no ``explanations``, the default).
    explain: int = Field(default=0, ge=0, le=MAX_EXPLAIN_TERMS)
    #: Articles in the drift signals' sliding window (``service.observe.drift``).
    drift_window: int = Field(default=1000, ge=100, le=1_000_000)
    #: The suggest API (POST /v1/classify): off unless a port is given; local by default,
    #: since it classifies for whoever can reach it.
    api_host: str = Field(default="127.0.0.1", min_length=1)
    api_port: int | None = Field(default=None, ge=0, le=65535)
    #: Bounds memory: requests x body size (8 MiB x 8 = 64 MiB, as --max-in-flight-bytes).
    api_max_request_bytes: int = Field(default=8 * 1024 * 1024, ge=1024, le=1024 * 1024 * 1024)
    api_max_concurrency: int = Field(default=8, ge=1, le=1024)
    #: How often the artifact --model points to is checked for a change (0: only SIGHUP).
    model_poll_s: float = Field(default=10.0, ge=0, le=86_400)
    #: Accepted sha256 digests, one per line, read again at every (re)load.
    model_sha256_file: Path | None = None
    #: A candidate model scored beside the live one, never published to the output topic.
    shadow_model_dir: Path | None = None
    shadow_topic: str | None = Field(default=None, min_length=1, max_length=249)

    @model_validator(mode="after")
    def _model_options(self) -> ServiceSettings:
        if self.model_sha256 is not None and self.model_sha256_file is not None:
            raise ValueError(
                "--model-sha256 pins one artifact and --model-sha256-file lists the accepted "
                "ones: give one of them"
            )
        if self.shadow_topic is not None:
            if self.shadow_model_dir is None:
                raise ValueError("--shadow-topic needs --shadow-model")
            if self.shadow_topic in {self.input_topic, self.output_topic, self.dead_letter_topic}:
                raise ValueError(
                    f"--shadow-topic={self.shadow_topic!r} must differ from the input, output "
                    "and dead-letter topics"
                )
        return self

    processing_guarantee: ProcessingGuarantee = ProcessingGuarantee.AT_LEAST_ONCE
    #: Exactly-once: each input partition's producer has the transactional id
    #: ``<prefix>-<input topic>-<partition>`` (the prefix defaults to the group id).
    transactional_id_prefix: str | None = Field(default=None, min_length=1, max_length=200)

    @model_validator(mode="after")
    def _consistent(self) -> ServiceSettings:
        topics = {self.input_topic, self.output_topic, self.dead_letter_topic}
        if len(topics) != 3:
            raise ValueError("input, output and dead-letter topics must be three different topics")
        if self.security_protocol.startswith("SASL") and not (
            self.sasl_mechanism and self.sasl_plain_username and self.sasl_plain_password
        ):
            raise ValueError(
                f"security protocol {self.security_protocol} needs --sasl-mechanism, "
                "--sasl-plain-username and --sasl-plain-password"
            )
        if self.feedback_topic and self.feedback_topic in topics:
            raise ValueError(
                f"--feedback-topic={self.feedback_topic!r} must differ from the input, output "
                "and dead-letter topics"
            )
        if self.breaker_backoff_max_s < self.breaker_backoff_s:
            raise ValueError(
                f"--breaker-backoff-max-s={self.breaker_backoff_max_s} must be at least "
                f"--breaker-backoff-s={self.breaker_backoff_s}"
            )
        return self

    @model_validator(mode="after")
    def _api_port_free(self) -> ServiceSettings:
        if self.api_port and self.api_port == self.metrics_port:
            raise ValueError(
                f"--api-port={self.api_port} must differ from --metrics-port={self.metrics_port}"
            )
        return self

    @property
    def record_limits(self) -> RecordLimits:
        """The per-record caps ``decode_article`` enforces (over one: ``too_large``)."""
        return RecordLimits(
            max_title_chars=self.max_title_chars,
            max_fields=self.max_fields,
            max_depth=self.max_depth,
        )

    @property
    def group_join_bound_s(self) -> float:
        """How long joining the group (at start or after a revocation) may take before the
        session is restarted as a new member: a healthy rebalance ends within the
        rebalance timeout (the shutdown timeout) once every member has rejoined, and a
        member that does not is expelled after its session timeout; twice the first plus
        the second leaves room for one rebalance restarted by a member joining late."""
        return 2 * self.shutdown_timeout_s + self.session_timeout_ms / 1000

    @property
    def feedback_group_id(self) -> str:
        """The feedback consumer's own group: its offsets never mix with the articles'."""
        return f"{self.group_id}.feedback"

    @property
    def fetch_limit_bytes(self) -> int:
        """Largest record the consumer fetches and the producer forwards: room for an
        oversize record (over ``max_event_bytes``) to be fetched whole and dead-lettered."""
        return max(4 * self.max_event_bytes, 8 * 1024 * 1024)

    @property
    def exactly_once(self) -> bool:
        """Outputs, dead letters and offsets are committed in one transaction per batch."""
        return self.processing_guarantee is ProcessingGuarantee.EXACTLY_ONCE

    def transactional_id(self, topic: str, partition: int) -> str:
        """The transactional id of the producer for one input partition: the same on every
        instance, so the partition's next owner fences the previous one."""
        prefix = self.transactional_id_prefix or self.group_id
        return f"{prefix}-{topic}-{partition}"


# (flag, settings field, help). Values arrive as strings and are validated by ServiceSettings.
_OPTIONS: tuple[tuple[str, str, str], ...] = (
    ("--model", "model_dir", "model artifact directory (required)"),
    (
        "--model-sha256",
        "model_sha256",
        "load only the artifact whose model.json has this sha256 (train prints it)",
    ),
    (
        "--model-public-key",
        "model_public_key",
        "Ed25519 public key (PEM): load only an artifact signed with its private key",
    ),
    ("--bootstrap-servers", "bootstrap_servers", "Kafka bootstrap servers, comma-separated"),
    ("--input-topic", "input_topic", "topic of ArticleEvents"),
    ("--output-topic", "output_topic", "topic for ClassifiedArticleEvents"),
    ("--dead-letter-topic", "dead_letter_topic", "topic for invalid records"),
    ("--group-id", "group_id", "Kafka consumer group"),
    ("--client-id", "client_id", "Kafka client id"),
    ("--metrics-host", "metrics_host", "interface of the metrics/health HTTP server"),
    ("--metrics-port", "metrics_port", "port of the metrics/health HTTP server (0: any free)"),
    ("--batch-size", "batch_size", "most records classified in one batch"),
    ("--batch-max-wait-ms", "batch_max_wait_ms", "longest wait to fill a batch, in ms"),
    ("--max-in-flight-batches", "max_in_flight_batches", "batches fetched but not committed"),
    (
        "--classify-in",
        "classify_in",
        "process (a worker process with its own core) or thread (inside the service process)",
    ),
    ("--session-timeout-ms", "session_timeout_ms", "consumer group session timeout, in ms"),
    ("--shutdown-timeout-s", "shutdown_timeout_s", "bound on the drain at shutdown, in seconds"),
    ("--max-event-bytes", "max_event_bytes", "larger records are dead-lettered as too_large"),
    ("--max-title-chars", "max_title_chars", "longer titles are dead-lettered as too_large"),
    (
        "--max-fields",
        "max_fields",
        "most fields and array items in one event, counted at any depth (more: too_large)",
    ),
    (
        "--max-depth",
        "max_depth",
        f"deepest nesting of an event, the event itself being level 1 (at most {PARSER_MAX_DEPTH})",
    ),
    (
        "--low-confidence-threshold",
        "low_confidence_threshold",
        "a section score under this counts as low confidence",
    ),
    ("--log-level", "log_level", "DEBUG, INFO, WARNING or ERROR"),
    ("--security-protocol", "security_protocol", "PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"),
    ("--sasl-mechanism", "sasl_mechanism", "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"),
    ("--sasl-plain-username", "sasl_plain_username", "SASL user name"),
    ("--sasl-plain-password", "sasl_plain_password", "SASL password (prefer the env variable)"),
    ("--ssl-cafile", "ssl_cafile", "CA bundle to verify the brokers"),
    ("--ssl-certfile", "ssl_certfile", "client certificate (PEM)"),
    ("--ssl-keyfile", "ssl_keyfile", "client private key (PEM)"),
    (
        "--max-output-bytes",
        "max_output_bytes",
        "max.message.bytes assumed for an output or dead-letter topic whose limit the broker "
        "does not report",
    ),
    (
        "--max-in-flight-bytes",
        "max_in_flight_bytes",
        "record bytes fetched but not committed before fetching pauses",
    ),
    (
        "--batch-timeout-s",
        "batch_timeout_s",
        "a batch in flight longer than this makes /healthz fail (watchdog), in seconds",
    ),
    (
        "--rebalance-drain-timeout-s",
        "rebalance_drain_timeout_s",
        "bound on finishing revoked partitions' work at a rebalance, in seconds",
    ),
    ("--breaker-window", "breaker_window", "model outcomes in the circuit breaker's window"),
    (
        "--breaker-threshold",
        "breaker_threshold",
        "share of classification_error outcomes in the window that opens the breaker",
    ),
    (
        "--breaker-min-records",
        "breaker_min_records",
        "outcomes the window needs before the breaker may open",
    ),
    ("--breaker-backoff-s", "breaker_backoff_s", "first wait after the breaker opens, in seconds"),
    ("--breaker-backoff-max-s", "breaker_backoff_max_s", "longest wait of the breaker, in seconds"),
    (
        "--worker-max-deaths",
        "worker_max_deaths",
        "worker-process deaths on single articles in a row that open the breaker",
    ),
    (
        "--broker-check-interval-s",
        "broker_check_interval_s",
        "interval of the broker liveness and lag probe, in seconds",
    ),
    (
        "--feedback-topic",
        "feedback_topic",
        "topic of ArticleFeedback events (editor corrections), consumed in the group "
        "<group-id>.feedback; empty: no feedback consumer",
    ),
    (
        "--feedback-max-versions",
        "feedback_max_versions",
        "model versions that keep feedback quality series (the oldest are removed)",
    ),
    (
        "--compression-type",
        "compression_type",
        "codec of produced outputs and dead letters: none, gzip, snappy, lz4 or zstd",
    ),
    (
        "--explain",
        "explain",
        "add the K terms that raised each predicted label's score the most to the output "
        f"(classification.explanations; 0: off, at most {MAX_EXPLAIN_TERMS})",
    ),
    (
        "--drift-window",
        "drift_window",
        "articles in the sliding window of the drift gauges (at least 100)",
    ),
    ("--api-host", "api_host", "interface of the suggest API (POST /v1/classify)"),
    ("--api-port", "api_port", "port of the suggest API, off unless given (0: any free)"),
    (
        "--api-max-request-bytes",
        "api_max_request_bytes",
        "larger API request bodies are refused with 413",
    ),
    (
        "--api-max-concurrency",
        "api_max_concurrency",
        "API requests handled at once; more are refused with 429",
    ),
    (
        "--model-poll-s",
        "model_poll_s",
        "how often to check whether --model points to another artifact and swap to it, in "
        "seconds (0: only on SIGHUP)",
    ),
    (
        "--model-sha256-file",
        "model_sha256_file",
        "file of accepted model.json sha256 digests, one per line, read at every (re)load",
    ),
    (
        "--shadow-model",
        "shadow_model_dir",
        "candidate model artifact scored beside the live one; never published to the output",
    ),
    (
        "--shadow-topic",
        "shadow_topic",
        "publish the candidate's outputs here (same contract, best effort)",
    ),
    (
        "--processing-guarantee",
        "processing_guarantee",
        "at-least-once, or exactly-once (Kafka transactions; downstream reads with"
        " isolation.level=read_committed)",
    ),
    (
        "--transactional-id-prefix",
        "transactional_id_prefix",
        "exactly-once: prefix of the per-input-partition transactional ids (default: the group id)",
    ),
)
_FLAG_BY_FIELD = {field: flag for flag, field, _ in _OPTIONS}


def _dest(flag: str) -> str:
    return flag.removeprefix("--").replace("-", "_")


def add_serve_arguments(parser: argparse.ArgumentParser, *, exclude: tuple[str, ...] = ()) -> None:
    """Add every ``serve`` option to ``parser``; defaults shown are ServiceSettings'.
    A command that gives some of them its own meaning or default lists them in ``exclude``."""
    fields = ServiceSettings.model_fields
    for flag, field, text in _OPTIONS:
        if flag in exclude:
            continue
        default = fields[field].default
        shown = "" if default is None or field == "model_dir" else f" (default: {default})"
        help_text = text + shown.replace("%", "%%")
        parser.add_argument(flag, dest=_dest(flag), default=None, help=help_text)


def settings_from_args(args: argparse.Namespace) -> ServiceSettings:
    """Build the settings from parsed arguments; unset options keep their defaults."""
    given = {field: getattr(args, _dest(flag), None) for flag, field, _ in _OPTIONS}
    values: dict[str, Any] = {
        field: value for field, value in given.items() if value not in (None, "")
    }
    if given.get("feedback_topic") == "":
        values["feedback_topic"] = ""  # an empty topic is meaningful here: feedback off
    return settings_from_mapping(values)


def settings_from_mapping(values: dict[str, Any]) -> ServiceSettings:
    """Validate ``values`` (strings or typed values) into settings or raise ConfigError."""
    if "model_dir" not in values:
        raise ConfigError(
            "--model is required (or ARTICLE_CLASSIFIER_MODEL): the directory of a trained "
            "model artifact (article-classifier train); no model is built in"
        )
    try:
        # Lax mode converts the strings argparse hands over ("256" -> 256).
        return ServiceSettings.model_validate(values)
    except ValidationError as error:
        raise ConfigError(_describe(error, values)) from None


def _describe(error: ValidationError, values: dict[str, Any]) -> str:
    problems = []
    for item in error.errors(include_url=False):
        location = item["loc"]
        if location and isinstance(location[0], str) and location[0] in _FLAG_BY_FIELD:
            name = location[0]
            shown = "<hidden>" if name == "sasl_plain_password" else repr(values.get(name))
            problems.append(f"{_FLAG_BY_FIELD[name]}={shown}: {item['msg']}")
        else:
            problems.append(item["msg"].removeprefix("Value error, "))
    return "invalid configuration: " + "; ".join(problems)
