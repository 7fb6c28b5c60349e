"""The option groups the commands are made of: each class is one group of ``--help``
(its docstring's first line is the group's title) and declares typed fields with their
description, default and bounds. A command's settings class inherits the groups it honours
(``service.config.commands``), so an option it does not list is unknown to it.

A field's name is its environment variable (``ARTICLE_CLASSIFIER_`` + the name in capitals)
and, unless ``flag`` says otherwise, its flag (``--`` + the name with dashes). A name means
one thing in every command that has it.
"""

from __future__ import annotations

import difflib
import inspect
import json
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

from aiokafka import AIOKafkaClient, AIOKafkaConsumer, AIOKafkaProducer
from pydantic import AfterValidator, BaseModel, BeforeValidator, Field, SecretStr, model_validator
from pydantic_settings import NoDecode

from schemas import (
    DEFAULT_MAX_DEPTH,
    DEFAULT_MAX_EVENT_BYTES,
    DEFAULT_MAX_FIELDS,
    DEFAULT_MAX_TITLE_CHARS,
    MAX_EXPLAIN_TERMS,
    PARSER_MAX_DEPTH,
    RecordLimits,
)


def split_commas(value: Any) -> Any:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


#: A repeatable flag; its environment variable holds the values comma-separated.
CommaList = Annotated[list[str], NoDecode, BeforeValidator(split_commas)]
#: The same, for paths.
PathList = Annotated[list[Path], NoDecode, BeforeValidator(split_commas)]


def parse_timestamp(text: str) -> int:
    """Milliseconds since the epoch from RFC 3339 (``2026-11-20T12:00:00Z``) or from an
    integer of epoch milliseconds; raises ValueError naming the expected forms."""
    stripped = text.strip()
    if stripped.isdigit():
        return int(stripped)
    try:
        parsed = datetime.fromisoformat(stripped.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise ValueError(
            f"{text!r} is not a timestamp: use RFC 3339 with an offset"
            " (2026-11-20T12:00:00Z) or epoch milliseconds"
        )
    return int(parsed.astimezone(UTC).timestamp() * 1000)


def _timestamp(value: Any) -> Any:
    return parse_timestamp(value) if isinstance(value, str) else value


def _rate(value: Any) -> Any:
    return value.strip().removesuffix("/s") if isinstance(value, str) else value


def _primary_subtag(tag: str) -> str | None:
    # Imported when a language model is configured (the model package: see below).
    from model.languages import primary_subtag  # noqa: PLC0415

    return primary_subtag(tag)


def _normalize_sha256(value: str) -> str:
    # Imported when a digest is given: importing the model package loads scikit-learn,
    # which commands that never load a model (the desk) should not pay for.
    from model.trust import normalize_sha256  # noqa: PLC0415

    return normalize_sha256(value)


#: A sha256 digest: 64 hex digits, any letter case, held in lower case.
Sha256 = Annotated[str, AfterValidator(_normalize_sha256)]
#: A point in time given as RFC 3339 with an offset or epoch ms, held as epoch ms.
EpochMs = Annotated[int, BeforeValidator(_timestamp)]
#: A rate given as ``N`` or ``N/s``.
PerSecond = Annotated[float, BeforeValidator(_rate)]


def flag(name: str, *, metavar: str | None = None) -> dict[str, Any]:
    """Field metadata: the flag is ``--name`` instead of the field's own name (and its
    value is shown as ``metavar`` in ``--help``)."""
    return {"flag": name} if metavar is None else {"flag": name, "metavar": metavar}


def shown_as(metavar: str) -> dict[str, Any]:
    """Field metadata: the flag's value is shown as ``metavar`` in ``--help``."""
    return {"metavar": metavar}


class WorkerKind(StrEnum):
    """``--classify-in``: a thread of the service process (default) or a worker process."""

    PROCESS = "process"
    THREAD = "thread"


class SecurityProtocol(StrEnum):
    PLAINTEXT = "PLAINTEXT"
    SSL = "SSL"
    SASL_PLAINTEXT = "SASL_PLAINTEXT"
    SASL_SSL = "SASL_SSL"


class SaslMechanism(StrEnum):
    PLAIN = "PLAIN"
    SCRAM_SHA_256 = "SCRAM-SHA-256"
    SCRAM_SHA_512 = "SCRAM-SHA-512"
    OAUTHBEARER = "OAUTHBEARER"


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


#: The aiokafka clients the service builds, and the keyword names each accepts.
_CLIENT_KEYWORDS: dict[str, frozenset[str]] = {
    client.__name__: frozenset(inspect.signature(client.__init__).parameters) - {"self"}
    for client in (AIOKafkaClient, AIOKafkaConsumer, AIOKafkaProducer)
}
#: aiokafka settings the service decides itself (delivery, batching, the group, the
#: connection and its security have options of their own) or that are not plain values.
RESERVED_CLIENT_OPTIONS = frozenset(
    {
        "loop", "topics", "bootstrap_servers", "client_id", "security_protocol",
        "ssl_context", "sasl_mechanism", "sasl_plain_username", "sasl_plain_password",
        "sasl_oauth_token_provider", "key_serializer", "value_serializer",
        "key_deserializer", "value_deserializer", "partitioner",
        "partition_assignment_strategy", "acks", "compression_type", "linger_ms",
        "max_batch_size", "max_request_size", "request_timeout_ms", "retry_backoff_ms",
        "enable_idempotence", "transactional_id", "transaction_timeout_ms", "group_id",
        "enable_auto_commit", "auto_offset_reset", "isolation_level", "max_poll_records",
        "max_partition_fetch_bytes", "fetch_max_bytes", "fetch_max_wait_ms",
        "session_timeout_ms", "heartbeat_interval_ms", "rebalance_timeout_ms",
        "max_poll_interval_ms", "consumer_timeout_ms",
    }
)  # fmt: skip
#: The names ``--kafka-client-options`` accepts.
CLIENT_OPTIONS = frozenset().union(*_CLIENT_KEYWORDS.values()) - RESERVED_CLIENT_OPTIONS

ClientValue = bool | int | float | str


def client_keywords(client: str) -> frozenset[str]:
    """The keyword names of one aiokafka client class (``AIOKafkaConsumer``, ...)."""
    return _CLIENT_KEYWORDS[client]


def _scalar(text: str) -> ClientValue:
    """A ``key=value`` value: a JSON number or boolean when it reads as one, else text."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, bool | int | float) else text


def _default_of(name: str) -> Any:
    for client in (AIOKafkaConsumer, AIOKafkaProducer, AIOKafkaClient):
        parameter = inspect.signature(client.__init__).parameters.get(name)
        if parameter is not None:
            return parameter.default
    return None


def _key_value_pairs(text: str) -> dict[str, str]:
    """``key=value,key=value`` as a mapping (blanks around keys and values removed)."""
    pairs = [item.partition("=") for item in text.split(",") if item.strip()]
    bad = [key for key, sep, _ in pairs if not sep]
    if bad:
        raise ValueError(f"{bad[0].strip()!r} is not key=value")
    return {key.strip(): raw.strip() for key, _, raw in pairs}


def _string_pairs(value: Any) -> Any:
    """A JSON object or ``key=value`` pairs of text, such as the SASL extensions."""
    if isinstance(value, str):
        text = value.strip()
        return json.loads(text) if text.startswith("{") else _key_value_pairs(text)
    return value


#: ``key=value,...`` or a JSON object of text values.
StringPairs = Annotated[dict[str, str], NoDecode, BeforeValidator(_string_pairs)]


def _client_options(value: Any) -> Any:
    """``--kafka-client-options`` from a JSON object or comma-separated ``key=value`` pairs;
    every key must be an aiokafka client setting the service leaves open, and a value must
    have the type of that setting's default."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("{"):
            value = json.loads(text)
        else:
            value = {key: _scalar(raw) for key, raw in _key_value_pairs(text).items()}
    if not isinstance(value, Mapping):
        return value
    for key, item in value.items():
        _check_client_option(key, item)
    return value


def _check_client_option(key: str, item: Any) -> None:
    if key in RESERVED_CLIENT_OPTIONS:
        raise ValueError(f"{key!r} is set by the service (or by an option of its own)")
    if key not in CLIENT_OPTIONS:
        close = difflib.get_close_matches(key, sorted(CLIENT_OPTIONS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"{key!r} is not an aiokafka client setting{hint}")
    default = _default_of(key)
    expected = type(default) if isinstance(default, bool | int | float | str) else None
    if expected is float and isinstance(item, int) and not isinstance(item, bool):
        return
    if expected is not None and type(item) is not expected:
        raise ValueError(f"{key}={item!r}: aiokafka expects {expected.__name__}")


#: Further aiokafka settings by name (``--kafka-client-options``).
ClientOptions = Annotated[dict[str, ClientValue], NoDecode, BeforeValidator(_client_options)]


class KafkaConnection(BaseModel):
    """Kafka connection"""

    bootstrap_servers: str = Field(
        default="127.0.0.1:9092",
        min_length=1,
        description="Kafka bootstrap servers, comma-separated",
    )
    client_id: str = Field(
        default="article-classifier", min_length=1, description="Kafka client id"
    )
    security_protocol: SecurityProtocol = Field(
        default=SecurityProtocol.PLAINTEXT, description="how the clients reach the brokers"
    )
    sasl_mechanism: SaslMechanism | None = Field(default=None, description="SASL mechanism")
    sasl_plain_username: str | None = Field(default=None, description="SASL user name")
    sasl_plain_password: SecretStr | None = Field(
        default=None,
        description="SASL password (or a file: ARTICLE_CLASSIFIER_SASL_PLAIN_PASSWORD_FILE)",
    )
    sasl_oauthbearer_token_endpoint_url: str | None = Field(
        default=None,
        pattern=r"^https?://",
        description="OAUTHBEARER: the OAuth 2 token endpoint; tokens are fetched with the "
        "client credentials grant and renewed before they expire",
    )
    sasl_oauthbearer_client_id: SecretStr | None = Field(
        default=None,
        description="OAUTHBEARER client id (or a file: "
        "ARTICLE_CLASSIFIER_SASL_OAUTHBEARER_CLIENT_ID_FILE)",
    )
    sasl_oauthbearer_client_secret: SecretStr | None = Field(
        default=None,
        description="OAUTHBEARER client secret (or a file: "
        "ARTICLE_CLASSIFIER_SASL_OAUTHBEARER_CLIENT_SECRET_FILE)",
    )
    sasl_oauthbearer_scope: str | None = Field(
        default=None, description="OAUTHBEARER: the scope to ask the token endpoint for"
    )
    sasl_oauthbearer_extensions: StringPairs = Field(
        default_factory=dict,
        json_schema_extra=shown_as("K=V,..."),
        description="OAUTHBEARER SASL extensions, e.g. Confluent Cloud's "
        "logicalCluster=lkc-1,identityPoolId=pool-1",
    )
    sasl_oauthbearer_token_endpoint_cafile: Path | None = Field(
        default=None,
        description="CA bundle to verify the token endpoint (default: the system's)",
    )
    sasl_oauthbearer_token_provider: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$",
        json_schema_extra=shown_as("MODULE:CALLABLE"),
        description="OAUTHBEARER: a token provider plug-in instead of the token endpoint, "
        "e.g. for Amazon MSK IAM; called with no arguments, it returns an aiokafka "
        "AbstractTokenProvider",
    )
    ssl_cafile: Path | None = Field(default=None, description="CA bundle to verify the brokers")
    ssl_certfile: Path | None = Field(default=None, description="client certificate (PEM)")
    ssl_keyfile: Path | None = Field(default=None, description="client private key (PEM)")
    ssl_key_password: SecretStr | None = Field(
        default=None,
        description="password of an encrypted --ssl-keyfile",
    )
    ssl_check_hostname: bool = Field(
        default=True,
        description="check that a broker's certificate names the host connected to "
        "(--no-ssl-check-hostname: do not)",
    )
    kafka_client_options: ClientOptions = Field(
        default_factory=dict,
        json_schema_extra=shown_as("JSON|K=V,..."),
        description="further aiokafka client settings, as a JSON object or key=value pairs "
        "(metadata_max_age_ms=60000,client_rack=eu-1); each client gets those it accepts",
    )

    @model_validator(mode="after")
    def _sasl_credentials(self) -> KafkaConnection:
        if not self.security_protocol.startswith("SASL"):
            return self
        if self.sasl_mechanism is SaslMechanism.OAUTHBEARER:
            return self._oauthbearer_credentials()
        if not (self.sasl_mechanism and self.sasl_plain_username and self.sasl_plain_password):
            raise ValueError(
                f"security protocol {self.security_protocol} needs --sasl-mechanism, "
                "--sasl-plain-username and --sasl-plain-password"
            )
        return self

    def _oauthbearer_credentials(self) -> KafkaConnection:
        endpoint = self.sasl_oauthbearer_token_endpoint_url
        if self.sasl_oauthbearer_token_provider is not None:
            if endpoint is not None:
                raise ValueError(
                    "--sasl-oauthbearer-token-provider and "
                    "--sasl-oauthbearer-token-endpoint-url exclude each other"
                )
            return self
        if not (
            endpoint and self.sasl_oauthbearer_client_id and self.sasl_oauthbearer_client_secret
        ):
            raise ValueError(
                "--sasl-mechanism OAUTHBEARER needs --sasl-oauthbearer-token-endpoint-url, "
                "--sasl-oauthbearer-client-id and --sasl-oauthbearer-client-secret "
                "(or --sasl-oauthbearer-token-provider)"
            )
        return self


class ArticleTopics(BaseModel):
    """Topics"""

    input_topic: str = Field(
        default="articles", min_length=1, max_length=249, description="topic of ArticleEvents"
    )
    output_topic: str = Field(
        default="articles.classified",
        min_length=1,
        max_length=249,
        description="topic for ClassifiedArticleEvents",
    )
    dead_letter_topic: str = Field(
        default="articles.dead-letter",
        min_length=1,
        max_length=249,
        description="topic for invalid records",
    )

    @model_validator(mode="after")
    def _three_topics(self) -> ArticleTopics:
        if len({self.input_topic, self.output_topic, self.dead_letter_topic}) != 3:
            raise ValueError("input, output and dead-letter topics must be three different topics")
        return self

    @property
    def article_topics(self) -> frozenset[str]:
        """The input, output and dead-letter topics (another topic must be none of them)."""
        return frozenset({self.input_topic, self.output_topic, self.dead_letter_topic})


class GroupTiming(BaseModel):
    """Consumer group"""

    #: Also the time a new member's join may wait, and how soon a dead member's partitions
    #: move (6000 is Apache Kafka's default group.min.session.timeout.ms).
    session_timeout_ms: int = Field(
        default=10_000, ge=1_000, le=300_000, description="consumer group session timeout, in ms"
    )
    shutdown_timeout_s: float = Field(
        default=30.0, gt=0, le=3600, description="bound on the drain at shutdown, in seconds"
    )
    rebalance_drain_timeout_s: float = Field(
        default=20.0,
        gt=0,
        le=3600,
        description="bound on finishing revoked partitions' work at a rebalance, in seconds",
    )

    @property
    def group_join_bound_s(self) -> float:
        """How long joining the group (at start or after a revocation) may take before the
        session is restarted as a new member: a healthy rebalance ends within the
        rebalance timeout (the shutdown timeout) once every member has rejoined, and a
        member that does not is expelled after its session timeout; twice the first plus
        the second leaves room for one rebalance restarted by a member joining late."""
        return 2 * self.shutdown_timeout_s + self.session_timeout_ms / 1000


class ServiceGroup(BaseModel):
    """Consumer group"""

    group_id: str = Field(
        default="article-classifier", min_length=1, description="Kafka consumer group"
    )

    @property
    def consumer_group(self) -> str:
        """The group the article consumer joins."""
        return self.group_id

    @property
    def feedback_group_id(self) -> str:
        """The feedback consumer's own group: its offsets never mix with the articles'."""
        return f"{self.group_id}.feedback"


#: The key of ``--model default=DIR``, the same as a plain ``--model DIR``.
DEFAULT_MODEL_KEY = "default"


def _split_language(text: str) -> tuple[str | None, str]:
    """A ``[LANG=]DIR`` value as (language, directory); the language is None for a plain
    ``DIR`` or ``default=DIR``."""
    key, sep, directory = text.partition("=")
    key = key.strip().lower()
    if sep and key == DEFAULT_MODEL_KEY:
        return None, directory
    if sep and _primary_subtag(key) == key:
        return key, directory
    return None, text


def _language_models(values: Any) -> Any:
    """``--model`` values (or ``ARTICLE_CLASSIFIER_MODEL``, comma-separated when it names a
    language) split into the default model and the models per language."""
    if not isinstance(values, dict) or values.get("model") is None:
        return values
    raw = values["model"]
    if isinstance(raw, str) and "=" in raw:
        items: list[Any] = [item.strip() for item in raw.split(",") if item.strip()]
    elif isinstance(raw, list | tuple):
        items = list(raw)
    else:
        items = [raw]
    defaults: list[str] = []
    languages: dict[str, str] = {}
    for item in items:
        language, directory = _split_language(str(item))
        if language is None:
            defaults.append(directory)
        elif language in languages:
            raise ValueError(f"--model {language}=...: the language {language!r} is given twice")
        else:
            languages[language] = directory
    if len(defaults) != 1:
        raise ValueError(
            f"--model: give exactly one default model (DIR or default=DIR) beside the LANG=DIR "
            f"models, not {len(defaults)}"
        )
    return {**values, "model": defaults[0], "language_models": tuple(sorted(languages.items()))}


class ModelTrust(BaseModel):
    """Model"""

    model: Path = Field(
        json_schema_extra={"metavar": "[LANG=]DIR", "repeat": True},
        description="model artifact directory (article-classifier train; no model is built "
        "in); repeat as LANG=DIR for one model per language, the plain DIR (or default=DIR) "
        "answering the rest",
    )
    #: Set from ``--model LANG=DIR`` values only (no flag or variable of its own).
    language_models: tuple[tuple[str, Path], ...] = Field(
        default=(),
        json_schema_extra={"internal": True},
        description="the models per language, from --model LANG=DIR",
    )
    model_sha256: Sha256 | None = Field(
        default=None,
        description="load only the artifact whose model.json has this sha256 (train prints it)",
    )
    model_sha256_file: Path | None = Field(
        default=None,
        description="file of accepted model.json sha256 digests, one per line, read at every load",
    )
    model_public_key: Path | None = Field(
        default=None,
        description="Ed25519 public key (PEM): load only an artifact signed with its private key",
    )

    @model_validator(mode="before")
    @classmethod
    def _split_models(cls, values: Any) -> Any:
        return _language_models(values)

    @property
    def language_dirs(self) -> dict[str, Path]:
        """The model directory of each configured language."""
        return dict(self.language_models)

    @model_validator(mode="after")
    def _one_pin(self) -> ModelTrust:
        if self.model_sha256 is not None and self.model_sha256_file is not None:
            raise ValueError(
                "--model-sha256 pins one artifact and --model-sha256-file lists the accepted "
                "ones: give one of them"
            )
        return self


class ModelRunning(BaseModel):
    """Model"""

    #: A thread measured faster on a 2-core host shared with the broker (README); a process
    #: gives classification a core of its own where the host has one to spare.
    classify_in: WorkerKind = Field(
        default=WorkerKind.THREAD,
        description="thread (inside the service process) or process (a worker process with "
        "its own core)",
    )
    worker_max_deaths: int = Field(
        default=3,
        ge=1,
        le=1000,
        description="worker-process deaths on single articles in a row that open the breaker",
    )


class SectionFloor(BaseModel):
    """Model"""

    section_floor: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        json_schema_extra=shown_as("F"),
        description="flag a section whose calibrated score is under F as uncertain "
        "(classification.section.uncertain) and count it (default: off)",
    )


class Explaining(BaseModel):
    """Model"""

    explain: int = Field(
        default=0,
        ge=0,
        le=MAX_EXPLAIN_TERMS,
        description="add the K terms that raised each predicted label's score the most to the "
        f"output (classification.explanations; 0: off, at most {MAX_EXPLAIN_TERMS})",
    )


class RecordCaps(BaseModel):
    """Record limits"""

    max_event_bytes: int = Field(
        default=DEFAULT_MAX_EVENT_BYTES,
        ge=1,
        description="larger records are dead-lettered as too_large",
    )
    max_title_chars: int = Field(
        default=DEFAULT_MAX_TITLE_CHARS,
        ge=1,
        description="longer titles are dead-lettered as too_large",
    )
    max_fields: int = Field(
        default=DEFAULT_MAX_FIELDS,
        ge=1,
        description="most fields and array items in one event, counted at any depth "
        "(more: too_large)",
    )
    max_depth: int = Field(
        default=DEFAULT_MAX_DEPTH,
        ge=1,
        le=PARSER_MAX_DEPTH,
        description="deepest nesting of an event, the event itself being level 1 "
        f"(at most {PARSER_MAX_DEPTH})",
    )

    @property
    def record_limits(self) -> RecordLimits:
        """The per-record caps ``decode_article`` enforces (over one: ``too_large``)."""
        return RecordLimits(
            max_title_chars=self.max_title_chars,
            max_fields=self.max_fields,
            max_depth=self.max_depth,
        )


class OutputCaps(BaseModel):
    """Record limits"""

    #: Apache Kafka's default max.message.bytes.
    max_output_bytes: int = Field(
        default=1_048_588,
        ge=1024,
        description="max.message.bytes assumed for an output or dead-letter topic whose limit "
        "the broker does not report",
    )


class Batching(BaseModel):
    """Batching and flow control"""

    batch_size: int = Field(
        default=256, ge=1, le=100_000, description="most records classified in one batch"
    )
    batch_max_wait_ms: int = Field(
        default=50, ge=0, le=5_000, description="longest wait to fill a batch, in ms"
    )
    max_in_flight_batches: int = Field(
        default=4, ge=1, le=64, description="batches fetched but not committed"
    )
    max_in_flight_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=1024,
        description="record bytes fetched but not committed before fetching pauses",
    )
    batch_timeout_s: float = Field(
        default=120.0,
        gt=0,
        le=86_400,
        description="a batch in flight longer than this makes /healthz fail (watchdog), in seconds",
    )
    compression_type: CompressionType = Field(
        default=CompressionType.NONE, description="codec of produced outputs and dead letters"
    )


class Breaker(BaseModel):
    """Circuit breaker"""

    breaker_window: int = Field(
        default=200,
        ge=1,
        le=1_000_000,
        description="model outcomes in the circuit breaker's window",
    )
    breaker_threshold: float = Field(
        default=0.5,
        gt=0.0,
        le=1.0,
        description="share of classification_error outcomes in the window that opens the breaker",
    )
    breaker_min_records: int = Field(
        default=20, ge=1, description="outcomes the window needs before the breaker may open"
    )


class BreakerBackoff(BaseModel):
    """Circuit breaker"""

    breaker_backoff_s: float = Field(
        default=5.0, gt=0, le=3600, description="first wait after the breaker opens, in seconds"
    )
    breaker_backoff_max_s: float = Field(
        default=300.0, gt=0, le=86_400, description="longest wait of the breaker, in seconds"
    )

    @model_validator(mode="after")
    def _ordered(self) -> BreakerBackoff:
        if self.breaker_backoff_max_s < self.breaker_backoff_s:
            raise ValueError(
                f"--breaker-backoff-max-s={self.breaker_backoff_max_s} must be at least "
                f"--breaker-backoff-s={self.breaker_backoff_s}"
            )
        return self


class Observing(BaseModel):
    """Observability"""

    #: All interfaces by default: the port is scraped by Prometheus and probed by the
    #: orchestrator from outside the container. Use 127.0.0.1 to keep it local.
    metrics_host: str = Field(
        default="0.0.0.0",  # noqa: S104 - see the comment above
        description="interface of the metrics/health HTTP server",
    )
    log_level: LogLevel = Field(default=LogLevel.INFO, description="log level")
    low_confidence_threshold: float = Field(
        default=0.5,
        ge=0.0,
        le=1.0,
        description="a section score under this counts as low confidence",
    )
    drift_window: int = Field(
        default=1000,
        ge=100,
        le=1_000_000,
        description="articles in the sliding window of the drift gauges",
    )
    broker_check_interval_s: float = Field(
        default=5.0,
        gt=0,
        le=3600,
        description="interval of the broker liveness and lag probe, in seconds",
    )


class MetricsPort(BaseModel):
    """Observability"""

    metrics_port: int = Field(
        default=9108,
        ge=0,
        le=65535,
        description="port of the metrics/health HTTP server (0: any free)",
    )


class Delivery(BaseModel):
    """Delivery"""

    processing_guarantee: ProcessingGuarantee = Field(
        default=ProcessingGuarantee.AT_LEAST_ONCE,
        description="at-least-once, or exactly-once (Kafka transactions; downstream reads with "
        "isolation.level=read_committed)",
    )
    transactional_id_prefix: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="exactly-once: prefix of the per-input-partition transactional ids "
        "(default: the group id)",
    )

    @property
    def exactly_once(self) -> bool:
        """Outputs, dead letters and offsets are committed in one transaction per batch."""
        return self.processing_guarantee is ProcessingGuarantee.EXACTLY_ONCE


class Rollout(BaseModel):
    """Model rollout"""

    model_poll_s: float = Field(
        default=10.0,
        ge=0,
        le=86_400,
        description="how often to check whether --model points to another artifact and swap to "
        "it, in seconds (0: only on SIGHUP)",
    )
    shadow_model: Path | None = Field(
        default=None,
        json_schema_extra={"metavar": "[LANG=]DIR"},
        description="candidate model artifact scored beside the live one; never published to "
        "the output; as LANG=DIR, a candidate for that language's model (--model LANG=DIR), "
        "scored on the articles that model answers",
    )
    #: Set from a ``--shadow-model LANG=DIR`` value only (no flag or variable of its own).
    shadow_language: str | None = Field(
        default=None,
        json_schema_extra={"internal": True},
        description="the language whose model the candidate would replace",
    )
    shadow_topic: str | None = Field(
        default=None,
        min_length=1,
        max_length=249,
        description="publish the candidate's outputs here (same contract, best effort)",
    )

    @model_validator(mode="before")
    @classmethod
    def _shadow_language(cls, values: Any) -> Any:
        if not isinstance(values, dict) or not isinstance(values.get("shadow_model"), str):
            return values
        language, directory = _split_language(values["shadow_model"])
        return {**values, "shadow_model": directory, "shadow_language": language}

    @model_validator(mode="after")
    def _shadow(self) -> Rollout:
        if self.shadow_topic is None:
            return self
        if self.shadow_model is None:
            raise ValueError("--shadow-topic needs --shadow-model")
        return self


class SuggestApi(BaseModel):
    """Suggest API"""

    api_host: str = Field(
        default="127.0.0.1",
        min_length=1,
        description="interface of the suggest API (POST /v1/classify)",
    )
    api_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="port of the suggest API, off unless given (0: any free)",
    )
    #: Bounds memory: requests x body size (8 MiB x 8 = 64 MiB, as --max-in-flight-bytes).
    api_max_request_bytes: int = Field(
        default=8 * 1024 * 1024,
        ge=1024,
        le=1024 * 1024 * 1024,
        description="larger API request bodies are refused with 413",
    )
    api_max_concurrency: int = Field(
        default=8,
        ge=1,
        le=1024,
        description="API requests handled at once; more are refused with 429",
    )


class ApiAuth(BaseModel):
    """Authentication"""

    #: Off by default, for a port on 127.0.0.1 behind what authenticates the CMS; the
    #: service logs a warning when the suggest API (or the desk) listens without it.
    api_tokens_file: Path | None = Field(
        default=None,
        description="file of bearer tokens, one a line (TOKEN or USER:TOKEN, # comments), read "
        "again when it changes: requests without one of them get 401 (default: no "
        "authentication)",
    )

    @model_validator(mode="after")
    def _tokens_readable(self) -> ApiAuth:
        """Checked at start, before anything is loaded; its lines when a server starts."""
        path = self.api_tokens_file
        if path is not None and not (path.is_file() and os.access(path, os.R_OK)):
            raise ValueError(f"--api-tokens-file={str(path)!r}: not a readable file")
        return self


class Feedback(BaseModel):
    """Editor feedback"""

    #: On by default: with no CMS sending corrections it is one idle consumer of its own.
    feedback_topic: str = Field(
        default="articles.feedback",
        max_length=249,
        description="topic of ArticleFeedback events (editor corrections), consumed in the group "
        "<group-id>.feedback; empty: no feedback consumer",
    )
    feedback_max_versions: int = Field(
        default=5,
        ge=1,
        le=100,
        description="model versions that keep feedback quality series (the oldest are removed)",
    )


class RegistryInput(StrEnum):
    """Whether input values carry a Schema Registry schema id (``--registry-input``)."""

    OFF = "off"
    REQUIRED = "required"
    OPTIONAL = "optional"


class SchemaRegistry(BaseModel):
    """Schema Registry"""

    schema_registry_url: str | None = Field(
        default=None,
        min_length=1,
        pattern=r"^https?://",
        description="base URL of a Confluent-compatible Schema Registry API "
        "(e.g. http://registry:8081 or Apicurio's .../apis/ccompat/v7)",
    )
    schema_registry_username: str | None = Field(
        default=None, min_length=1, description="Schema Registry basic-auth user name"
    )
    schema_registry_password: SecretStr | None = Field(
        default=None,
        description="Schema Registry basic-auth password",
    )
    schema_registry_token: SecretStr | None = Field(
        default=None,
        description="Schema Registry bearer token, instead of basic auth",
    )
    schema_registry_cafile: Path | None = Field(
        default=None, description="CA bundle to verify the Schema Registry's certificate"
    )
    schema_registry_timeout_s: float = Field(
        default=10.0, gt=0, le=300, description="bound of one Schema Registry request, in seconds"
    )
    registry_input: RegistryInput = Field(
        default=RegistryInput.OFF,
        description="input values framed with a schema id (magic byte 0 + 4-byte id, or the "
        "__value_schema_id header): off (plain JSON), required (an unframed value is a "
        "schema_id_missing dead letter) or optional (an unframed value is read as plain JSON)",
    )
    registry_input_subjects: CommaList = Field(
        default_factory=list,
        json_schema_extra=shown_as("SUBJECT,..."),
        description="subjects an input schema id must be registered under "
        "(default: <input-topic>-value)",
    )
    registry_output: bool = Field(
        default=False,
        description="register the output JSON Schema at start and frame every output with "
        "its schema id",
    )
    registry_output_subject: str | None = Field(
        default=None,
        min_length=1,
        description="subject the output schema is registered under "
        "(default: <output-topic>-value, the TopicNameStrategy)",
    )

    @model_validator(mode="after")
    def _registry(self) -> SchemaRegistry:
        used = self.registry_input is not RegistryInput.OFF or self.registry_output
        if used and self.schema_registry_url is None:
            raise ValueError("--registry-input and --registry-output need --schema-registry-url")
        if self.schema_registry_password is not None and self.schema_registry_username is None:
            raise ValueError("--schema-registry-password needs --schema-registry-username")
        if self.schema_registry_token is not None and self.schema_registry_username is not None:
            raise ValueError(
                "give either --schema-registry-username/--schema-registry-password or "
                "--schema-registry-token, not both"
            )
        return self
