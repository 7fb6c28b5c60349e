"""A real single-node Apache Kafka (KRaft, controller and broker in one JVM) on 127.0.0.1.

For development and tests: ``article-classifier broker --engine apache-kafka``. Its jars come
from ``devtools.kafka_jars`` (fetched once with Maven, then cached). The log directory is
formatted only when it is not formatted yet, so a broker restarted on the same ``data_dir``
keeps its cluster id, topics, records and committed offsets.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from devtools.kafka_jars import DEFAULT_KAFKA_VERSION, classpath, fetch_kafka, require_tools
from devtools.tansu import BrokerStartError, ManagedBroker, _answers_metadata, free_port

logger = logging.getLogger(__name__)

_HOST = "127.0.0.1"
_HEAP = "-Xmx512m"
_LOG4J2 = """\
status = warn
appender.file.type = Console
appender.file.name = out
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = out
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.state.name = state.change.logger
logger.state.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
"""


def _cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding. Never one that
    starts with "-" (1 in 64): Kafka's tools would read it as an option and refuse it, which
    is why Kafka's own ``Uuid.randomUuid()`` skips those too."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not text.startswith("-"):
            return text


@dataclass(frozen=True)
class OAuthValidation:
    """OAUTHBEARER beside SCRAM on the SASL_SSL listener: tokens are JWTs checked against the
    signing keys at ``jwks_url`` (Kafka's ``OAuthBearerValidatorCallbackHandler``), their
    ``sub`` claim is the principal. With ``reauth_ms``, a connection whose token expired is
    closed by the broker (KIP-368) after at most that long."""

    jwks_url: str
    audience: str
    issuer: str
    reauth_ms: int = 0


@dataclass(frozen=True)
class BrokerSecurity:
    """A secured listener instead of PLAINTEXT: SASL_SSL with SCRAM-SHA-512 and mutual TLS
    for clients, SSL (mutual TLS) between broker and controller, and the StandardAuthorizer
    denying whatever no ACL allows. The certificates are PEM files: ``keystore`` holds the
    broker's private key (unencrypted PKCS#8) followed by its certificate chain; the
    certificate must name 127.0.0.1 and its subject is the broker's principal on the
    controller listener (``User:<subject>``, a super user)."""

    ca_file: Path
    keystore: Path
    broker_subject: str
    #: SCRAM-SHA-512 users created when the log directory is formatted, name -> password.
    users: dict[str, str] = field(default_factory=dict)
    #: The super user of the brokers' own SASL connections (one of ``users``).
    super_user: str = "admin"
    #: Also accept OAUTHBEARER tokens on the SASL_SSL listener.
    oauth: OAuthValidation | None = None

    @property
    def super_users(self) -> str:
        return f"User:{self.super_user};User:{self.broker_subject}"


_OAUTH_ALLOWED_URLS = "org.apache.kafka.sasl.oauthbearer.allowed.urls"
_OAUTH_VALIDATOR = (
    "org.apache.kafka.common.security.oauthbearer.OAuthBearerValidatorCallbackHandler"
)


def _oauth_settings(oauth: OAuthValidation | None) -> dict[str, str]:
    """The listener's OAUTHBEARER settings (none without ``oauth``)."""
    if oauth is None:
        return {}
    prefix = "listener.name.sasl_ssl.oauthbearer."
    return {
        "sasl.enabled.mechanisms": "SCRAM-SHA-512,OAUTHBEARER",
        f"{prefix}sasl.server.callback.handler.class": _OAUTH_VALIDATOR,
        f"{prefix}sasl.jaas.config": (
            "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required ;"
        ),
        "sasl.oauthbearer.jwks.endpoint.url": oauth.jwks_url,
        "sasl.oauthbearer.expected.audience": oauth.audience,
        "sasl.oauthbearer.expected.issuer": oauth.issuer,
        "connections.max.reauth.ms": str(oauth.reauth_ms),
    }


class ApacheKafkaBroker(ManagedBroker):
    """``with ApacheKafkaBroker(data_dir=...) as broker:`` Apache Kafka on
    ``broker.bootstrap_servers``.

    Mirrors ``EmbeddedBroker``: ``port`` is the listener; ``advertised_port`` (default:
    ``port``) is what the broker tells clients to connect to, e.g. a proxy in front of it.
    Without ``data_dir`` the log lives in a temporary directory removed by ``stop()``.
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        advertised_port: int | None = None,
        data_dir: Path | None = None,
        version: str = DEFAULT_KAFKA_VERSION,
        start_timeout_s: float = 120.0,
        stop_timeout_s: float = 30.0,
        log_file: Path | None = None,
        security: BrokerSecurity | None = None,
    ) -> None:
        self.security = security
        self.port = port if port is not None else free_port()
        self.advertised_port = advertised_port if advertised_port is not None else self.port
        self.version = version
        self._controller_port = free_port()
        self._data_dir = data_dir
        self._owns_data_dir = data_dir is None
        self._start_timeout_s = start_timeout_s
        self._stop_timeout_s = stop_timeout_s
        self._log_file = log_file
        self._process: subprocess.Popen[bytes] | None = None
        self._log_start = 0

    @property
    def bootstrap_servers(self) -> str:
        return f"{_HOST}:{self.advertised_port}"

    @property
    def data_dir(self) -> Path:
        """The broker's directory (configuration, KRaft log, broker log); made on first start."""
        if self._data_dir is None:
            self._data_dir = Path(tempfile.mkdtemp(prefix="article-classifier-kafka-"))
        return self._data_dir

    @property
    def log_dir(self) -> Path:
        """The KRaft log directory (``log.dirs``): topic partitions and metadata."""
        return self.data_dir / "kraft-logs"

    @property
    def log_file(self) -> Path:
        """The broker's own log output."""
        return self._log_file or self.data_dir / "broker.log"

    def java_command(self, main_class: str, *args: str, heap: str = "-Xmx256m") -> list[str]:
        """``java -cp <kafka jars> main_class args``: the console tools of this version."""
        oauth = self.security.oauth if self.security is not None else None
        # Kafka 4 fetches OAuth URLs only when this system property allows them.
        allowed = [f"-D{_OAUTH_ALLOWED_URLS}={oauth.jwks_url}"] if oauth is not None else []
        return [
            "java", heap, "-XX:+UseSerialGC", "-Djava.awt.headless=true", *allowed,
            f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.properties'}",
            "-cp", classpath(self.version), main_class, *args,
        ]  # fmt: skip

    def start(self) -> None:
        """Format the log directory if new, start the broker, return once it answers."""
        if self._process is not None:
            raise RuntimeError("broker already started")
        require_tools(self.version)
        fetch_kafka(self.version)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self._write_config()
        if not (self.log_dir / "meta.properties").exists():
            self._format(config)
        self._log_start = self.log_file.stat().st_size if self.log_file.exists() else 0
        log = self.log_file.open("ab")
        try:
            self._process = subprocess.Popen(
                self.java_command("kafka.Kafka", str(config), heap=_HEAP),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        finally:
            log.close()
        deadline = time.monotonic() + self._start_timeout_s
        while not self._ready():
            if self._process.poll() is not None:
                code = self._process.returncode
                self.stop()
                raise BrokerStartError(
                    f"Apache Kafka exited with status {code} on port {self.port}:\n"
                    + self._log_tail()
                )
            if time.monotonic() > deadline:
                self.stop()
                raise BrokerStartError(
                    f"Apache Kafka did not answer on port {self.port} in time:\n" + self._log_tail()
                )
            time.sleep(0.2)
        logger.info(
            "apache kafka ready",
            extra={"bootstrap_servers": self.bootstrap_servers, "kafka_version": self.version},
        )

    def _ready(self) -> bool:
        """Whether the broker answers: a metadata request on the plain listener; the log
        line of a started server on a secured one (no credentials needed to tell)."""
        if self.security is None:
            return _answers_metadata(f"{_HOST}:{self.port}")
        with self.log_file.open("rb") as log:
            log.seek(self._log_start)
            return b"Kafka Server started" in log.read()

    def _write_config(self) -> Path:
        (self.data_dir / "log4j2.properties").write_text(_LOG4J2)
        settings = {**self._common_settings(), **self._listener_settings()}
        config = self.data_dir / "server.properties"
        config.write_text("".join(f"{key}={value}\n" for key, value in settings.items()))
        return config

    def _listener_settings(self) -> dict[str, str]:
        controller = f"CONTROLLER://{_HOST}:{self._controller_port}"
        if self.security is None:
            return {
                "listeners": f"PLAINTEXT://{_HOST}:{self.port},{controller}",
                "advertised.listeners": f"PLAINTEXT://{_HOST}:{self.advertised_port}",
                "inter.broker.listener.name": "PLAINTEXT",
                "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            }
        security = self.security
        password = security.users[security.super_user]
        return {
            "listeners": f"SASL_SSL://{_HOST}:{self.port},{controller}",
            "advertised.listeners": f"SASL_SSL://{_HOST}:{self.advertised_port}",
            "inter.broker.listener.name": "SASL_SSL",
            "listener.security.protocol.map": "CONTROLLER:SSL,SASL_SSL:SASL_SSL",
            "sasl.enabled.mechanisms": "SCRAM-SHA-512",
            "sasl.mechanism.inter.broker.protocol": "SCRAM-SHA-512",
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": (
                "org.apache.kafka.common.security.scram.ScramLoginModule required "
                f'username="{security.super_user}" password="{password}";'
            ),
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(security.keystore),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(security.ca_file),
            "ssl.client.auth": "required",
            # Kafka applies ssl.client.auth to a SASL_SSL listener only listener-prefixed.
            "listener.name.sasl_ssl.ssl.client.auth": "required",
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "allow.everyone.if.no.acl.found": "false",
            "super.users": security.super_users,
            **_oauth_settings(security.oauth),
        }

    def _common_settings(self) -> dict[str, str]:
        return {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{_HOST}:{self._controller_port}",
            "controller.listener.names": "CONTROLLER",
            "log.dirs": str(self.log_dir),
            # Topics are created on purpose (tests, kafka-init in compose), never by a typo.
            "auto.create.topics.enable": "false",
            "num.partitions": "1",
            "default.replication.factor": "1",
            "min.insync.replicas": "1",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "3",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "3",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            # Tests use 6 s session timeouts; Kafka's default floor is 6 s too.
            "group.min.session.timeout.ms": "1000",
            "num.network.threads": "2",
            "num.io.threads": "2",
            "num.recovery.threads.per.data.dir": "1",
            "background.threads": "2",
            "log.retention.hours": "24",
            "log.segment.bytes": str(64 * 1024 * 1024),
            # One node: nothing to hand leadership to, so skip the wait at shutdown.
            "controlled.shutdown.enable": "false",
        }

    def _format(self, config: Path) -> None:
        result = subprocess.run(
            self.java_command(
                "kafka.tools.StorageTool", "format", "--ignore-formatted",
                "--cluster-id", _cluster_id(), "--config", str(config), *self._scram_users(),
            ),
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise BrokerStartError(
                f"formatting {self.log_dir} failed (status {result.returncode}):\n"
                + (result.stdout + result.stderr)[-3000:]
            )

    def _scram_users(self) -> list[str]:
        """``--add-scram`` arguments creating the SCRAM-SHA-512 users at format time."""
        users = {} if self.security is None else self.security.users
        return [
            argument
            for name, password in users.items()
            for argument in ("--add-scram", f"SCRAM-SHA-512=[name={name},password={password}]")
        ]

    def _log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_file.read_text("utf-8", errors="replace")
        except OSError:
            return "(no broker log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM the broker (kill it if it lingers); safe to call twice."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=self._stop_timeout_s)
            except subprocess.TimeoutExpired:
                logger.warning("apache kafka did not stop in time; killing it")
                process.kill()
                process.wait(timeout=10)
        if self._owns_data_dir and self._data_dir is not None:
            shutil.rmtree(self._data_dir, ignore_errors=True)
            self._data_dir = None

    def kill(self) -> None:
        """kill -9 the broker (a crash); the data directory stays for a restart."""
        process, self._process = self._process, None
        if process is not None:
            process.kill()
            process.wait(timeout=10)

    def is_running(self) -> bool:
        """True while the broker's JVM is alive."""
        return self._process is not None and self._process.poll() is None


def run_apache_kafka_forever(port: int, *, data_dir: Path | None, version: str) -> int:
    """``article-classifier broker --engine apache-kafka``: run until Ctrl-C or SIGTERM."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    broker = ApacheKafkaBroker(port, data_dir=data_dir, version=version)
    print(f"starting Apache Kafka {version} (the first run fetches its jars)", flush=True)
    with broker:
        where = str(data_dir) if data_dir is not None else "a temporary directory"
        print(
            f"Apache Kafka {version} broker on {broker.bootstrap_servers} "
            f"(data in {where}; log {broker.log_file}; Ctrl-C to stop)",
            flush=True,
        )
        with contextlib.suppress(KeyboardInterrupt):
            while not stop.wait(1.0):
                if not broker.is_running():
                    print(f"Apache Kafka exited; see {broker.log_file}", flush=True)
                    return 1
    return 0
