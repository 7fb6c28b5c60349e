"""Apache Kafka's jar cache, with stand-ins for java and mvn (no network, no JVM)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from devtools.kafka_jars import ToolMissingError, cache_dir, fetch_kafka, missing_tools
from devtools.tansu import BrokerStartError

VERSION = "9.9.9"

_FAKE_JAVA = """#!/bin/sh
echo 'openjdk version "{major}.0.2" 2026-01-20' >&2
"""
# Records each run, then does what `dependency:copy-dependencies` would: fill the directory.
_FAKE_MVN = """#!/bin/sh
echo run >> "{runs}"
[ -n "{fail}" ] && {{ echo "[ERROR] Could not resolve org.apache.kafka:kafka_2.13"; exit 1; }}
for arg in "$@"; do
  case "$arg" in -DoutputDirectory=*) out="${{arg#-DoutputDirectory=}}" ;; esac
done
sleep 0.5
mkdir -p "$out" && touch "$out/kafka_2.13-{version}.jar" "$out/kafka-clients-{version}.jar"
"""


@pytest.fixture
def tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A PATH holding only stand-in java (17) and mvn, and an empty cache; returns the file
    that counts Maven runs."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    runs = tmp_path / "mvn-runs"
    _script(bin_dir / "java", _FAKE_JAVA.format(major=17))
    _script(bin_dir / "mvn", _FAKE_MVN.format(runs=runs, fail="", version=VERSION))
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return runs


def _script(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o755)


def _runs(counter: Path) -> int:
    return len(counter.read_text().splitlines()) if counter.exists() else 0


def test_jars_are_fetched_once_into_the_cache_and_reused(tools: Path) -> None:
    """The first call runs Maven into ~/.cache/article-classifier/kafka-<V>/libs; later calls
    reuse the cache without Maven."""
    first = fetch_kafka(VERSION)
    assert first == cache_dir(VERSION)
    assert (first / "libs" / f"kafka_2.13-{VERSION}.jar").exists()
    assert fetch_kafka(VERSION) == first
    assert _runs(tools) == 1


def test_concurrent_first_fetches_run_maven_once(tools: Path) -> None:
    """Two first runs at once: one fetches, the other waits for the lock and reuses it."""
    results: list[Path] = []
    threads = [
        threading.Thread(target=lambda: results.append(fetch_kafka(VERSION))) for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert results == [cache_dir(VERSION)] * 2
    assert _runs(tools) == 1
    assert [path.name for path in cache_dir(VERSION).parent.iterdir() if path.is_dir()] == [
        f"kafka-{VERSION}"
    ]


def test_a_failed_fetch_leaves_no_cache_and_says_why(
    tmp_path: Path, tools: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Maven's failure surfaces with its own last lines; nothing half-fetched stays behind."""
    failing = tmp_path / "failing"
    failing.mkdir()
    _script(failing / "mvn", _FAKE_MVN.format(runs=tools, fail="yes", version=VERSION))
    monkeypatch.setenv("PATH", f"{failing}:{tmp_path / 'bin'}:/usr/bin:/bin")
    with pytest.raises(BrokerStartError, match="Could not resolve"):
        fetch_kafka(VERSION)
    assert [p for p in cache_dir(VERSION).parent.iterdir() if p.is_dir()] == []


@pytest.mark.usefixtures("tools")
def test_a_version_that_is_not_one_is_refused() -> None:
    """--kafka-version must look like a release: it ends up in a path and a Maven coordinate."""
    with pytest.raises(BrokerStartError, match="expected a version"):
        fetch_kafka("4.1.1/../../x")


def test_old_java_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Java older than 17 counts as missing, with the version found."""
    _script(tmp_path / "java", _FAKE_JAVA.format(major=11))
    _script(tmp_path / "mvn", "#!/bin/sh\n")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert missing_tools() == ["Java 17+ (found Java 11)"]


def test_missing_maven_matters_only_until_the_jars_are_cached(
    tools: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once the jars are cached, Java alone is enough; before, Maven is named."""
    no_maven = tmp_path / "no-maven"
    no_maven.mkdir()
    (no_maven / "java").symlink_to(tmp_path / "bin" / "java")
    monkeypatch.setenv("PATH", str(no_maven))
    with pytest.raises(ToolMissingError, match="Maven"):
        fetch_kafka(VERSION)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:/usr/bin:/bin")
    fetch_kafka(VERSION)
    monkeypatch.setenv("PATH", str(no_maven))
    assert fetch_kafka(VERSION) == cache_dir(VERSION)
