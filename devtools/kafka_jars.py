"""Apache Kafka's jars, fetched once with Maven into a cache, and the tools that needs.

``org.apache.kafka:kafka_2.13`` (the broker) and ``kafka-tools`` (the console tools) with
their runtime dependencies land in ``~/.cache/article-classifier/kafka-<V>/libs`` (or under
``$XDG_CACHE_HOME``) and are reused afterwards. Concurrent first runs are safe: a file lock,
then a rename of a complete staging directory into place. Java 17+ runs them; Maven is
needed only until the jars are cached. ``python -m devtools.kafka_jars [V]`` fetches only.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from devtools.tansu import BrokerStartError

logger = logging.getLogger(__name__)

#: The version the tests, CI and docker-compose.yml run (image apache/kafka:<this>).
DEFAULT_KAFKA_VERSION = "4.1.1"
MIN_JAVA_MAJOR = 17
_INSTALL_HINT = (
    "the apache-kafka engine needs {what}: install what is missing, e.g. "
    "`apt-get install -y openjdk-17-jre-headless maven`"
)
# The broker's own logging library and its SLF4J binding: kafka_2.13's POM leaves the
# binding to the distribution, and without one the broker logs nothing.
_EXTRA_ARTIFACTS = (
    ("org.slf4j", "slf4j-api", "2.0.17"),
    ("org.apache.logging.log4j", "log4j-slf4j2-impl", "2.24.3"),
)


class ToolMissingError(BrokerStartError):
    """Java or Maven is missing; the message names what to install."""


def missing_tools(*, need_maven: bool = True) -> list[str]:
    """What the apache-kafka engine lacks on this machine, as install hints ([] when ready)."""
    problems: list[str] = []
    java = shutil.which("java")
    if java is None:
        problems.append(f"Java {MIN_JAVA_MAJOR}+ (`java` not found)")
    else:
        major = _java_major(java)
        if major is not None and major < MIN_JAVA_MAJOR:
            problems.append(f"Java {MIN_JAVA_MAJOR}+ (found Java {major})")
    if need_maven and shutil.which("mvn") is None:
        problems.append("Maven (`mvn` not found)")
    return problems


def require_tools(version: str = DEFAULT_KAFKA_VERSION) -> None:
    """Raise ToolMissingError naming what to install; Maven only until the jars are cached."""
    problems = missing_tools(need_maven=not _is_fetched(cache_dir(version)))
    if problems:
        raise ToolMissingError(_INSTALL_HINT.format(what=" and ".join(problems)))


def _java_major(java: str) -> int | None:
    try:
        result = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', result.stderr + result.stdout)
    if match is None:
        return None
    major = int(match.group(1))
    # Java 8 and older call themselves "1.8".
    return int(match.group(2) or 0) if major == 1 else major


def cache_dir(version: str) -> Path:
    """Where the jars of Kafka ``version`` live: ``$XDG_CACHE_HOME/article-classifier/...``."""
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "article-classifier" / f"kafka-{version}"


def _is_fetched(directory: Path) -> bool:
    return (directory / "libs" / f"kafka_2.13-{directory.name.removeprefix('kafka-')}.jar").exists()


def fetch_kafka(version: str = DEFAULT_KAFKA_VERSION, *, timeout_s: float = 900.0) -> Path:
    """The cache directory with ``libs/*.jar`` for Kafka ``version``, fetched if missing."""
    if not re.fullmatch(r"\d+\.\d+\.\d+(-[A-Za-z0-9.]+)?", version):
        raise BrokerStartError(f"--kafka-version={version!r}: expected a version like 4.1.1")
    target = cache_dir(version)
    if _is_fetched(target):
        return target
    require_tools(version)
    target.parent.mkdir(parents=True, exist_ok=True)
    with (target.parent / f"kafka-{version}.lock").open("w") as lock:
        # Another process may be fetching the same version: wait for it, then reuse.
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _is_fetched(target):
            return target
        staging = Path(tempfile.mkdtemp(prefix=f"kafka-{version}.", dir=target.parent))
        try:
            _maven_copy_dependencies(version, staging, timeout_s)
            if target.exists():  # a half-written leftover from an older layout
                shutil.rmtree(target)
            staging.rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    logger.info("kafka jars fetched", extra={"kafka_version": version, "path": str(target)})
    return target


def _maven_copy_dependencies(version: str, staging: Path, timeout_s: float) -> None:
    artifacts = [
        ("org.apache.kafka", "kafka_2.13", version),
        ("org.apache.kafka", "kafka-tools", version),
        *_EXTRA_ARTIFACTS,
    ]
    dependencies = "".join(
        f"<dependency><groupId>{g}</groupId><artifactId>{a}</artifactId>"
        f"<version>{v}</version></dependency>"
        for g, a, v in artifacts
    )
    (staging / "pom.xml").write_text(
        '<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>'
        "<groupId>local.article-classifier</groupId><artifactId>kafka-jars</artifactId>"
        f"<version>1</version><packaging>pom</packaging><dependencies>{dependencies}"
        "</dependencies></project>\n"
    )
    command = [
        "mvn", "-B", "-q", "-f", str(staging / "pom.xml"),
        "dependency:copy-dependencies", "-DincludeScope=runtime",
        f"-DoutputDirectory={staging / 'libs'}",
    ]  # fmt: skip
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired:
        message = f"Maven did not fetch Kafka {version} in {timeout_s:.0f} s"
        raise BrokerStartError(message) from None
    if result.returncode != 0:
        tail = (result.stdout + result.stderr).strip().splitlines()[-15:]
        raise BrokerStartError(
            f"Maven could not fetch Kafka {version} (status {result.returncode}):\n"
            + "\n".join(tail)
        )


def classpath(version: str = DEFAULT_KAFKA_VERSION) -> str:
    """The Java class path of Kafka ``version`` (fetched if missing), for brokers and tools."""
    return str(fetch_kafka(version) / "libs" / "*")


def main() -> int:
    """``python -m devtools.kafka_jars [VERSION]``: fetch the jars (CI does this before the
    tests) and print where they are."""
    version = sys.argv[1] if len(sys.argv) > 1 else DEFAULT_KAFKA_VERSION
    try:
        print(fetch_kafka(version))
    except BrokerStartError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2 if isinstance(error, ToolMissingError) else 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
