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
    PARSER_MAX_DEPTH,
    RecordLimits,
)
from service.workers import WorkerKind


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
    compression_type: CompressionType = CompressionType.NONE
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
        if self.breaker_backoff_max_s < self.breaker_backoff_s:
            raise ValueError(
                f"--breaker-backoff-max-s={self.breaker_backoff_max_s} must be at least "
                f"--breaker-backoff-s={self.breaker_backoff_s}"
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
        "--compression-type",
        "compression_type",
        "codec of produced outputs and dead letters: none, gzip, snappy, lz4 or zstd",
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


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """Add every ``serve`` option to ``parser``; defaults shown are ServiceSettings'."""
    fields = ServiceSettings.model_fields
    for flag, field, text in _OPTIONS:
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
