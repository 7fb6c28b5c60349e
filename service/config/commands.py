"""One settings class per command, each made of the option groups it honours
(``service.config.options``): a command offers exactly these options, from flags or from
``ARTICLE_CLASSIFIER_<FIELD>`` environment variables (flags win), and a secret also from
the file ``ARTICLE_CLASSIFIER_<FIELD>_FILE`` names, as container platforms mount them.

Every class is frozen: built once in ``main()`` and passed down.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BeforeValidator, Field, SecretStr, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from service.config.options import (
    ApiAuth,
    ArticleTopics,
    Batching,
    Breaker,
    BreakerBackoff,
    CommaList,
    Delivery,
    EpochMs,
    Explaining,
    Feedback,
    GroupTiming,
    KafkaConnection,
    LogLevel,
    MetricsPort,
    ModelRunning,
    ModelTrust,
    Observing,
    OutputCaps,
    PathList,
    PerSecond,
    RecordCaps,
    Rollout,
    SchemaRegistry,
    SectionFloor,
    ServiceGroup,
    SuggestApi,
    flag,
    shown_as,
    split_commas,
)
from service.core.deadletter import DeadLetterReason

ENV_PREFIX = "ARTICLE_CLASSIFIER_"
#: The suffix of a variable naming a file that holds a secret's value.
FILE_SUFFIX = "_FILE"


class ConfigError(ValueError):
    """The configuration cannot work; the message names the option and the bad value."""


class _SecretFiles(PydanticBaseSettingsSource):
    """``ARTICLE_CLASSIFIER_<SECRET>_FILE``: the secret's value is the named file's content
    (one trailing newline removed), for the fields typed ``SecretStr``."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name in secret_fields(self.settings_cls):
            variable = env_name(name) + FILE_SUFFIX
            path = os.environ.get(variable)
            if not path:
                continue
            try:
                text = Path(path).read_text(encoding="utf-8")
            except OSError as error:
                raise ConfigError(f"{variable}={path!r}: cannot read it: {error}") from None
            values[name] = text.removesuffix("\n").removesuffix("\r")
        return values


class CommandSettings(BaseSettings):
    """Base of every command's settings: frozen, no unknown fields, the shared prefix."""

    model_config = SettingsConfigDict(
        frozen=True, extra="forbid", env_prefix=ENV_PREFIX, case_sensitive=False
    )
    #: The group title of the options a command declares itself.
    own_group: ClassVar[str] = "Options"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Flags, then the environment, then secret files, then the defaults."""
        return init_settings, env_settings, _SecretFiles(settings_cls)

    @model_validator(mode="before")
    @classmethod
    def _empty_means_unset(cls, values: Any) -> Any:
        """An empty value (``ARTICLE_CLASSIFIER_MODEL_SHA256=``) leaves the default, except
        for a plain text option, where empty is a value (``--feedback-topic ''``: off)."""
        if not isinstance(values, dict):
            return values
        return {
            name: value
            for name, value in values.items()
            if value != "" or _plain_text(cls.model_fields.get(name))
        }


def _plain_text(field: FieldInfo | None) -> bool:
    return field is not None and field.annotation is str


def env_name(field_name: str) -> str:
    """The environment variable of a field."""
    return ENV_PREFIX + field_name.upper()


def secret_fields(settings_cls: type[BaseSettings]) -> list[str]:
    """The fields whose value may also come from a ``..._FILE`` variable."""
    return [
        name
        for name, field in settings_cls.model_fields.items()
        if field.annotation in (SecretStr, SecretStr | None)
    ]


# -- the Kafka commands ------------------------------------------------------------------


class PipelineSettings(
    KafkaConnection,
    ArticleTopics,
    GroupTiming,
    ModelTrust,
    SectionFloor,
    ModelRunning,
    Explaining,
    RecordCaps,
    OutputCaps,
    Batching,
    Breaker,
    Observing,
    CommandSettings,
):
    """What the consume-classify-publish pipeline honours, shared by serve and reclassify."""

    @property
    def consumer_group(self) -> str:
        """The consumer group the article consumer joins."""
        raise NotImplementedError

    @property
    def exactly_once(self) -> bool:
        """Delivery is at least once unless the command offers --processing-guarantee."""
        return False

    @property
    def fetch_limit_bytes(self) -> int:
        """Largest record the consumer fetches and the producer forwards: room for an
        oversize record (over ``max_event_bytes``) to be fetched whole and dead-lettered."""
        return max(4 * self.max_event_bytes, 8 * 1024 * 1024)


class ServeSettings(
    ServiceGroup,
    MetricsPort,
    BreakerBackoff,
    Delivery,
    Rollout,
    SuggestApi,
    ApiAuth,
    Feedback,
    SchemaRegistry,
    PipelineSettings,
):
    """``serve``: everything the long-running service honours."""

    @model_validator(mode="after")
    def _distinct(self) -> ServeSettings:
        topics = self.article_topics
        if self.shadow_topic is not None and self.shadow_topic in topics:
            raise ValueError(
                f"--shadow-topic={self.shadow_topic!r} must differ from the input, output "
                "and dead-letter topics"
            )
        if self.feedback_topic and self.feedback_topic in topics:
            raise ValueError(
                f"--feedback-topic={self.feedback_topic!r} must differ from the input, output "
                "and dead-letter topics"
            )
        if self.api_port and self.api_port == self.metrics_port:
            raise ValueError(
                f"--api-port={self.api_port} must differ from --metrics-port={self.metrics_port}"
            )
        language = self.shadow_language
        if language is not None and language not in self.language_dirs:
            raise ValueError(
                f"--shadow-model {language}=...: no --model {language}=DIR to compare it with"
            )
        return self

    def transactional_id(self, topic: str, partition: int) -> str:
        """The transactional id of the producer for one input partition: the same on every
        instance, so the partition's next owner fences the previous one."""
        prefix = self.transactional_id_prefix or self.group_id
        return f"{prefix}-{topic}-{partition}"


class ReclassifySettings(SchemaRegistry, PipelineSettings):
    """``reclassify``: the pipeline's options plus the replay's own. Its group and metrics
    port have variables of their own (``..._REPLAY_GROUP_ID``, ``..._REPLAY_METRICS_PORT``),
    so the live service's in the same environment never reach a replay."""

    own_group: ClassVar[str] = "Replay"

    from_timestamp: EpochMs | None = Field(
        default=None,
        json_schema_extra=shown_as("TS"),
        description="first record time replayed: RFC 3339 with an offset or epoch ms",
    )
    from_beginning: bool = Field(default=False, description="replay from the start of the log")
    until_timestamp: EpochMs | None = Field(
        default=None,
        json_schema_extra=shown_as("TS"),
        description="records at or after this time are not replayed (default: the end of the "
        "log at the first start)",
    )
    from_dead_letters: bool = Field(
        default=False,
        description="replay the dead-letter topic (--dead-letter-topic); failures go back to it",
    )
    reason: Annotated[list[DeadLetterReason], NoDecode, BeforeValidator(split_commas)] = Field(
        default_factory=list,
        description="with --from-dead-letters: only dead letters with this error.reason; "
        "repeatable",
    )
    rate_limit: PerSecond | None = Field(
        default=None,
        gt=0,
        description="most records replayed per second, on average, as N or N/s (default: no limit)",
    )
    replay_group_id: str | None = Field(
        default=None,
        min_length=1,
        json_schema_extra=flag("group-id"),
        description="consumer group holding the progress (default: derived from the topic, the "
        "range and the model version, so the same command resumes)",
    )
    replay_metrics_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        json_schema_extra=flag("metrics-port"),
        description="serve /metrics, /healthz, /readyz on this port (default: no HTTP server)",
    )
    progress_interval_s: float = Field(
        default=5.0, gt=0, le=3600, description="seconds between progress lines off a terminal"
    )

    @property
    def consumer_group(self) -> str:
        """The replay's group: given, or set from the job once the model is loaded."""
        return self.replay_group_id or ""

    @property
    def source_topic(self) -> str:
        """The topic replayed: the input topic, or the dead-letter topic."""
        return self.dead_letter_topic if self.from_dead_letters else self.input_topic

    def job(self, model_version: str) -> str:
        """A short digest naming this replay: topic, range bounds, reasons and model."""
        spec = [
            self.source_topic,
            self.from_dead_letters,
            self.from_timestamp,
            self.until_timestamp,
            sorted(self.reason),
            model_version,
        ]
        return hashlib.sha256(json.dumps(spec).encode()).hexdigest()[:12]

    @model_validator(mode="after")
    def _a_range(self) -> ReclassifySettings:
        if (self.from_timestamp is None) == (not self.from_beginning):
            raise ValueError(
                "reclassify needs --from-timestamp TS or --from-beginning (one of them)"
            )
        if (
            self.from_timestamp is not None
            and self.until_timestamp is not None
            and self.until_timestamp <= self.from_timestamp
        ):
            raise ValueError("--until-timestamp must be after --from-timestamp")
        if self.reason and not self.from_dead_letters:
            raise ValueError("--reason only applies with --from-dead-letters")
        return self


class DeskSettings(KafkaConnection, ApiAuth, CommandSettings):
    """``desk``: the editors' web desk; Kafka and HTTP only, no model."""

    own_group: ClassVar[str] = "Desk"

    output_topic: str = Field(
        default="articles.classified",
        min_length=1,
        max_length=249,
        description="topic of ClassifiedArticleEvents",
    )
    feedback_topic: str = Field(
        default="articles.feedback",
        min_length=1,
        max_length=249,
        description="topic of ArticleFeedback events: read for what was judged, written with "
        "each verdict",
    )
    desk_host: str = Field(
        default="127.0.0.1", min_length=1, description="interface of the desk's HTTP server"
    )
    desk_port: int = Field(
        default=8090, ge=0, le=65535, description="port of the desk (0: any free)"
    )
    desk_max_articles: int = Field(
        default=2000,
        ge=10,
        le=200_000,
        description="recent classified articles kept in memory (the feed and the queue)",
    )
    desk_max_verdicts: int = Field(
        default=5000,
        ge=10,
        le=1_000_000,
        description="recent verdicts kept for the quality view",
    )
    desk_user_header: str | None = Field(
        default=None,
        min_length=1,
        max_length=100,
        description="trust this request header (e.g. X-Forwarded-User) as the signed-in editor, "
        "set by an authenticating proxy in front of the desk (default: off)",
    )
    desk_secure_cookie: bool = Field(
        default=False,
        description="mark the session cookie Secure (the desk is reached over HTTPS)",
    )
    log_level: LogLevel = Field(default=LogLevel.INFO, description="log level")

    @model_validator(mode="after")
    def _distinct_topics(self) -> DeskSettings:
        if self.output_topic == self.feedback_topic:
            raise ValueError("--output-topic and --feedback-topic must differ")
        return self


# -- the offline commands ----------------------------------------------------------------


class TrainSettings(CommandSettings):
    """``train``"""

    own_group: ClassVar[str] = "Training"

    data: PathList = Field(
        description="labelled JSONL file; repeat to combine corpora (env: comma-separated)"
    )
    artifact_out: Path = Field(
        json_schema_extra=flag("out"), description="artifact directory to write"
    )
    model_name: str = Field(
        default="article-classifier",
        json_schema_extra=flag("name"),
        description="model name in the manifest",
    )
    model_version: str | None = Field(
        default=None,
        json_schema_extra=flag("version"),
        description="model version (default: derived from the training data and time)",
    )
    skip_invalid: bool = Field(
        default=False,
        description="skip and count invalid lines instead of failing on the first one",
    )
    features: Literal["word", "char", "word+char", "auto"] | None = Field(
        default=None,
        description="the features: word n-grams, character n-grams within word boundaries, "
        "both side by side, or auto (the cheapest within 0.002 of the best cross-validated "
        "score). Default: from the data: word+char when the records carry section labels and "
        "no tags (the best cross-validated section model), word as soon as any record has "
        "tags; the manifest's params.features_chosen_by says how it was chosen",
    )


class EvaluateSettings(ModelTrust, CommandSettings):
    """``evaluate``"""

    own_group: ClassVar[str] = "Evaluation"

    data: PathList = Field(description="labelled JSONL file; repeatable")
    as_json: bool = Field(
        default=False, json_schema_extra=flag("json"), description="print one JSON object"
    )
    skip_invalid: bool = Field(default=False, description="skip and count invalid lines")


class ClassifySettings(ModelTrust, SectionFloor, Explaining, RecordCaps, CommandSettings):
    """``classify``"""

    own_group: ClassVar[str] = "Files"

    input_file: str = Field(
        default="-", json_schema_extra=flag("input"), description="input JSONL (-: stdin)"
    )
    output_file: str = Field(
        default="-", json_schema_extra=flag("output"), description="output JSONL (-: stdout)"
    )
    strict: bool = Field(
        default=False, description="exit with status 1 when any input line was invalid"
    )


class CompareSettings(CommandSettings):
    """``compare``"""

    own_group: ClassVar[str] = "Comparison"

    models: PathList = Field(
        json_schema_extra=flag("model"),
        min_length=2,
        max_length=2,
        description="artifact directory; give it twice, A then B",
    )
    data: PathList = Field(description="JSONL articles, labelled or not; repeatable")
    as_json: bool = Field(
        default=False, json_schema_extra=flag("json"), description="print one JSON object"
    )
    top: int = Field(default=10, ge=0, description="section flips listed with both scores")


class DatasetSettings(KafkaConnection, CommandSettings):
    """``dataset``"""

    own_group: ClassVar[str] = "Dataset"

    feedback: CommaList = Field(
        description="ArticleFeedback JSONL file or topic; repeatable (env: comma-separated)"
    )
    articles: CommaList = Field(
        description="article JSONL file or topic (e.g. the classified topic); repeatable"
    )
    dataset_out: Path = Field(
        json_schema_extra=flag("out"), description="LabelledArticle JSONL to write"
    )
    #: Optional here: without it every source is a file (the connection's other options
    #: apply only when a source is a topic).
    bootstrap_servers: str | None = Field(  # type: ignore[assignment]
        default=None,
        min_length=1,
        description="Kafka bootstrap servers; a FILE|TOPIC value naming no file is then a topic",
    )
    dataset_timeout_s: float = Field(
        default=30.0,
        gt=0,
        json_schema_extra=flag("timeout-s"),
        description="longest wait for the broker or for progress reading a topic",
    )


class SignSettings(CommandSettings):
    """``sign``"""

    own_group: ClassVar[str] = "Signing"

    model: Path = Field(description="artifact directory")
    signing_key: Path = Field(
        json_schema_extra=flag("key"), description="Ed25519 private key (PEM)"
    )


class KeygenSettings(CommandSettings):
    """``keygen``"""

    own_group: ClassVar[str] = "Keys"

    keys_out: Path = Field(
        json_schema_extra=flag("out"), description="directory for the two key files"
    )


#: Every command's settings class, by command name.
COMMANDS: dict[str, type[CommandSettings]] = {
    "train": TrainSettings,
    "evaluate": EvaluateSettings,
    "classify": ClassifySettings,
    "compare": CompareSettings,
    "serve": ServeSettings,
    "dataset": DatasetSettings,
    "reclassify": ReclassifySettings,
    "sign": SignSettings,
    "keygen": KeygenSettings,
    "desk": DeskSettings,
}
