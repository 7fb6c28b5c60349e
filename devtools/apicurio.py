"""Apicurio Registry (in-memory storage) on 127.0.0.1, for tests and development.

Its Confluent-compatible API (``/apis/ccompat/v7``) is what the service's
``--schema-registry-url`` and confluent-kafka's ``SchemaRegistryClient`` talk to. The
distribution (``io.apicurio:apicurio-registry-app:<V>:tar.gz:all`` on Maven Central, a
Quarkus application) is fetched once with Maven into
``~/.cache/article-classifier/apicurio-<V>`` (a file lock, then a rename of a complete
staging directory, as ``devtools.kafka_jars`` does) and run with Java. 3.0.9 runs on
Java 17; the 3.1 and later releases are built for Java 21 (3.3.3 stops at start on Java 17
with ``UnsupportedClassVersionError``: class file version 65.0). Its storage is the default
in-memory H2 database: everything registered is gone when it stops.

``python -m devtools.apicurio [--port P]`` fetches it and runs it until Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import fcntl
import logging
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from devtools.kafka_jars import ToolMissingError, missing_tools
from devtools.tansu import BrokerStartError, ManagedBroker, free_port

logger = logging.getLogger(__name__)

#: The newest release that runs on the Java 17 the project installs (see the docstring).
DEFAULT_APICURIO_VERSION = "3.0.9"
CCOMPAT_PATH = "/apis/ccompat/v7"
_HOST = "127.0.0.1"


def cache_dir(version: str) -> Path:
    """Where the distribution of Apicurio ``version`` is unpacked."""
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "article-classifier" / f"apicurio-{version}"


def _runner(directory: Path) -> Path | None:
    """The jar to run: ``quarkus-run.jar`` (fast-jar, 3.1+) or ``*-runner.jar`` (3.0)."""
    fast = directory / "quarkus-run.jar"
    if fast.exists():
        return fast
    return next(iter(sorted(directory.glob("*-runner.jar"))), None)


def require_tools(version: str = DEFAULT_APICURIO_VERSION) -> None:
    """Raise ToolMissingError naming what to install; Maven only until it is cached."""
    problems = missing_tools(need_maven=_runner(cache_dir(version)) is None)
    if problems:
        raise ToolMissingError(
            "Apicurio Registry needs " + " and ".join(problems) + ": install what is missing, "
            "e.g. `apt-get install -y openjdk-17-jre-headless maven`"
        )


def fetch_apicurio(version: str = DEFAULT_APICURIO_VERSION, *, timeout_s: float = 900.0) -> Path:
    """The unpacked distribution of Apicurio ``version``, fetched with Maven if missing."""
    target = cache_dir(version)
    if _runner(target) is not None:
        return target
    require_tools(version)
    target.parent.mkdir(parents=True, exist_ok=True)
    with (target.parent / f"apicurio-{version}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _runner(target) is not None:
            return target
        staging = Path(tempfile.mkdtemp(prefix=f"apicurio-{version}.", dir=target.parent))
        try:
            archive = _maven_copy(version, staging, timeout_s)
            unpacked = staging / "dist"
            with tarfile.open(archive) as tar:
                tar.extractall(unpacked, filter="data")
            if _runner(unpacked) is None:
                raise BrokerStartError(f"apicurio-registry-app {version}: no runner jar inside")
            if target.exists():
                shutil.rmtree(target)
            unpacked.rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    logger.info("apicurio fetched", extra={"apicurio_version": version, "path": str(target)})
    return target


def _maven_copy(version: str, staging: Path, timeout_s: float) -> Path:
    artifact = f"io.apicurio:apicurio-registry-app:{version}:tar.gz:all"
    command = [
        "mvn", "-B", "-q", "dependency:copy", f"-Dartifact={artifact}",
        f"-DoutputDirectory={staging}", "-Dmdep.useBaseVersion=true",
    ]  # fmt: skip
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout_s, check=False, cwd=staging
        )
    except subprocess.TimeoutExpired:
        raise BrokerStartError(f"Maven did not fetch {artifact} in {timeout_s:.0f} s") from None
    archives = sorted(staging.glob("*.tar.gz"))
    if result.returncode != 0 or not archives:
        tail = (result.stdout + result.stderr).strip().splitlines()[-15:]
        raise BrokerStartError(
            f"Maven could not fetch {artifact} (status {result.returncode}):\n" + "\n".join(tail)
        )
    return archives[0]


class ApicurioRegistry(ManagedBroker):
    """``with ApicurioRegistry() as registry:`` Apicurio on ``registry.ccompat_url``."""

    def __init__(
        self,
        port: int | None = None,
        *,
        version: str = DEFAULT_APICURIO_VERSION,
        log_file: Path | None = None,
        start_timeout_s: float = 180.0,
    ) -> None:
        self.port = port if port is not None else free_port()
        self.version = version
        self.log_file = log_file or Path(tempfile.gettempdir()) / f"apicurio-{self.port}.log"
        self._start_timeout_s = start_timeout_s
        self._process: subprocess.Popen[bytes] | None = None
        #: Seconds from starting the JVM to the first answer of the ccompat API.
        self.startup_s: float | None = None

    @property
    def url(self) -> str:
        """The registry's base URL."""
        return f"http://{_HOST}:{self.port}"

    @property
    def ccompat_url(self) -> str:
        """The Confluent-compatible API (what a Schema Registry client is given)."""
        return self.url + CCOMPAT_PATH

    def start(self) -> None:
        """Start the JVM; return once the ccompat API answers."""
        if self._process is not None:
            raise RuntimeError("registry already started")
        require_tools(self.version)
        directory = fetch_apicurio(self.version)
        runner = _runner(directory)
        assert runner is not None  # fetch_apicurio checked
        command = [
            "java", "-Xmx384m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
            f"-Dquarkus.http.port={self.port}", f"-Dquarkus.http.host={_HOST}",
            "-jar", str(runner),
        ]  # fmt: skip
        started = time.monotonic()
        with self.log_file.open("ab") as log:
            self._process = subprocess.Popen(
                command, cwd=directory, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )  # fmt: skip
        deadline = started + self._start_timeout_s
        while not self._answers():
            if self._process.poll() is not None:
                code = self._process.returncode
                self.stop()
                raise BrokerStartError(
                    f"Apicurio Registry {self.version} exited with status {code}:\n"
                    + self._log_tail()
                )
            if time.monotonic() > deadline:
                self.stop()
                raise BrokerStartError(
                    f"Apicurio Registry did not answer on port {self.port} in time:\n"
                    + self._log_tail()
                )
            time.sleep(0.25)
        self.startup_s = time.monotonic() - started
        logger.info(
            "apicurio ready",
            extra={"url": self.ccompat_url, "startup_s": round(self.startup_s, 1)},
        )

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.ccompat_url + "/subjects", timeout=2) as answer:  # noqa: S310 - our own http URL
                return bool(answer.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def _log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_file.read_text("utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def is_running(self) -> bool:
        """True while the registry's JVM is alive."""
        return self._process is not None and self._process.poll() is None

    def stop(self) -> None:
        """SIGTERM the JVM (kill it if it lingers); safe to call twice."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def main(argv: list[str] | None = None) -> int:
    """``python -m devtools.apicurio``: fetch Apicurio and run it until Ctrl-C
    (``--fetch-only``: fetch and print where it is, as CI does before the tests)."""
    parser = argparse.ArgumentParser(prog="python -m devtools.apicurio", description=__doc__)
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--version", default=DEFAULT_APICURIO_VERSION)
    parser.add_argument("--fetch-only", action="store_true")
    args = parser.parse_args(argv)
    try:
        if args.fetch_only:
            print(fetch_apicurio(args.version))
            return 0
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        with ApicurioRegistry(args.port, version=args.version) as registry:
            print(f"Apicurio Registry {args.version}: {registry.ccompat_url}", flush=True)
            while not stop.wait(1.0):
                if not registry.is_running():
                    print(f"Apicurio Registry exited; see {registry.log_file}", flush=True)
                    return 1
    except BrokerStartError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2 if isinstance(error, ToolMissingError) else 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
