"""Hot swap: the service changes its model while running, and refuses a bad one.

The unit tests swap a classifier directly or through the reloader (no broker); one test
sends SIGHUP to a real ``serve`` process; the load test swaps under thousands of events
flowing through the embedded broker, a broken artifact among the swaps.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    DEMO_CORPUS,
    ROOT,
    Topics,
    article_records,
    http_get,
    make_settings,
    produce,
    running_service,
    settle,
    wait_for,
)
from prometheus_client import CollectorRegistry, generate_latest

from devtools.tansu import EmbeddedBroker, free_port
from model import (
    ArtifactError,
    ArtifactTrust,
    ArtifactTrustError,
    Predictor,
    TrainedModel,
    artifact_digest,
    generate_key_pair,
    load_labelled,
    save_artifact,
    sign_artifact,
    train,
)
from schemas import ArticleEvent, Classification, ClassifiedArticleEvent
from service.config.cli import parse_settings
from service.config.commands import ConfigError, ServeSettings
from service.core.records import Topics as OutTopics
from service.models.loading import (
    ModelSpec,
    SmokeTestError,
    TrustPolicy,
    read_pin_file,
    smoke_test,
)
from service.models.reload import ModelReloader, show_models
from service.models.workers import (
    ModelClassifier,
    ProcessClassifier,
    ThreadClassifier,
    WireRecord,
    WorkerKind,
)
from service.observe.health import Health
from service.observe.metrics import ServiceMetrics

OUT = OutTopics(output="out", dead_letter="dlq")


@pytest.fixture(scope="module")
def trained() -> TrainedModel:
    """The demo model, trained once for this module."""
    return train(load_labelled([DEMO_CORPUS]).records, name="demo", version="v1")


def _save(trained: TrainedModel, directory: Path, version: str) -> Path:
    manifest = trained.manifest.model_copy(update={"version": version})
    return save_artifact(dataclasses.replace(trained, manifest=manifest), directory)


@pytest.fixture
def versions(trained: TrainedModel, tmp_path: Path) -> dict[str, Path]:
    """Artifacts v1, v2, v3 and a broken copy of v2 (a changed data file), side by side."""
    made = {v: _save(trained, tmp_path / "models" / v, v) for v in ("v1", "v2", "v3")}
    broken = Path(shutil.copytree(made["v2"], tmp_path / "models" / "broken"))
    data = bytearray((broken / "arrays.npz").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (broken / "arrays.npz").write_bytes(bytes(data))
    made["broken"] = broken
    return made


def _point(link: Path, target: Path) -> None:
    """Flip ``link`` to ``target`` atomically, as deployment tools do (rename over it)."""
    staging = link.with_name(link.name + ".new")
    staging.unlink(missing_ok=True)
    staging.symlink_to(target)
    staging.replace(link)


@pytest.fixture
def current(versions: dict[str, Path]) -> Path:
    """A symlink ``current`` -> v1."""
    link = versions["v1"].parent / "current"
    _point(link, versions["v1"])
    return link


def _wire(count: int, first: int = 0) -> list[WireRecord]:
    value = b'{"article_id": "a%d", "title": "Striker scores twice as city win the cup final"}'
    return [
        WireRecord("in", 0, offset, 1_700_000_000_000, b"a%d" % offset, value % offset)
        for offset in range(first, first + count)
    ]


def _versions_of(outgoing: Sequence[Any]) -> set[str]:
    return {
        ClassifiedArticleEvent.model_validate_json(item.value).classification.model.version
        for item in outgoing
        if item.reason is None
    }


def _classifier(kind: WorkerKind, model: Path, **kwargs: Any) -> ModelClassifier:
    if kind is WorkerKind.THREAD:
        return ThreadClassifier(model, topics=OUT, max_event_bytes=4096, **kwargs)
    return ProcessClassifier(model, topics=OUT, max_event_bytes=4096, log_level="INFO", **kwargs)


class _Gated:
    """A predictor that waits for ``gate`` before classifying (a batch held in flight)."""

    def __init__(self, inner: Predictor) -> None:
        self._inner = inner
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.name, self.version = inner.name, inner.version

    def predict(self, articles: Sequence[ArticleEvent]) -> list[Classification]:
        self.entered.set()
        assert self.gate.wait(30), "the test never opened the gate"
        return self._inner.predict(articles)


async def test_a_batch_in_flight_finishes_with_the_old_model_the_next_uses_the_new(
    versions: dict[str, Path],
) -> None:
    """A swap during a batch lets that batch finish with the old model; the next batch
    uses the new one, and no batch mixes the two."""
    gated = _Gated(Predictor.load(versions["v1"]))
    classifier = ThreadClassifier(versions["v1"], topics=OUT, max_event_bytes=4096, predictor=gated)
    try:
        await classifier.start()
        in_flight = asyncio.create_task(classifier.classify(_wire(5)))
        await wait_for(gated.entered.is_set)
        swapped = await classifier.swap(ModelSpec(versions["v2"]))
        assert swapped.primary.version == "v2"
        gated.gate.set()
        assert _versions_of((await in_flight).outgoing) == {"v1"}
        assert _versions_of((await classifier.classify(_wire(5, 5))).outgoing) == {"v2"}
    finally:
        gated.gate.set()
        classifier.close()


async def test_process_mode_swaps_its_worker_process(versions: dict[str, Path]) -> None:
    """In process mode a new worker loads the new model; the old worker exits, and a
    worker that dies after the swap is replaced by one loading the new artifact."""
    classifier = ProcessClassifier(
        versions["v1"], topics=OUT, max_event_bytes=4096, log_level="INFO"
    )
    try:
        await classifier.start()
        (old_worker,) = classifier._pool._processes.values()
        assert _versions_of((await classifier.classify(_wire(3))).outgoing) == {"v1"}
        swapped = await classifier.swap(ModelSpec(versions["v2"]))
        assert swapped.primary[:3] == ("demo", "v2", artifact_digest(versions["v2"]))
        assert _versions_of((await classifier.classify(_wire(3))).outgoing) == {"v2"}
        await wait_for(lambda: not old_worker.is_alive())
        (new_pid,) = classifier._pool._processes
        os.kill(new_pid, signal.SIGKILL)
        assert _versions_of((await classifier.classify(_wire(3))).outgoing) == {"v2"}
        assert classifier.spec.trust == ArtifactTrust(sha256=artifact_digest(versions["v2"]))
    finally:
        classifier.close()


@pytest.mark.parametrize("kind", [WorkerKind.THREAD, WorkerKind.PROCESS])
async def test_a_broken_artifact_is_refused_and_the_old_model_keeps_serving(
    versions: dict[str, Path], kind: WorkerKind
) -> None:
    """Swapping to an artifact that fails verification raises; the old model serves on."""
    classifier = _classifier(kind, versions["v1"])
    try:
        await classifier.start()
        with pytest.raises(ArtifactError, match=r"arrays\.npz"):
            await classifier.swap(ModelSpec(versions["broken"]))
        assert classifier.models.primary.version == "v1"
        assert _versions_of((await classifier.classify(_wire(3))).outgoing) == {"v1"}
    finally:
        classifier.close()


@pytest.mark.parametrize("kind", [WorkerKind.THREAD, WorkerKind.PROCESS])
async def test_classify_articles_uses_the_serving_model(
    versions: dict[str, Path], kind: WorkerKind
) -> None:
    """The method for callers outside the stream classifies with the model serving now."""
    classifier = _classifier(kind, versions["v1"])
    events = [ArticleEvent(article_id="x1", title="Striker scores twice in the cup final")]
    try:
        await classifier.start()
        (before,) = await classifier.classify_articles(events)
        await classifier.swap(ModelSpec(versions["v2"]))
        (after,) = await classifier.classify_articles(events)
    finally:
        classifier.close()
    assert isinstance(before, Classification)
    assert isinstance(after, Classification)
    assert (before.model.version, after.model.version) == ("v1", "v2")
    assert before.section == after.section


class _Failing:
    name, version = "demo", "bad"

    def predict(self, articles: Sequence[ArticleEvent]) -> list[Classification]:
        raise ValueError("broken weights")


class _Mislabelled:
    """Claims one version, but its outputs carry another."""

    name, version = "demo", "v9"

    def __init__(self, inner: Predictor) -> None:
        self._inner = inner

    def predict(self, articles: Sequence[ArticleEvent]) -> list[Classification]:
        return self._inner.predict(articles)


def test_the_smoke_test_refuses_a_model_failing_on_the_sample_articles(
    versions: dict[str, Path],
) -> None:
    """A model that raises on the samples, or whose outputs carry another version, fails
    the smoke test with a message naming the problem; a good one passes."""
    smoke_test(Predictor.load(versions["v1"]))
    with pytest.raises(SmokeTestError, match="sample article 1 of 8"):
        smoke_test(_Failing())
    with pytest.raises(SmokeTestError, match="output says model version 'v1'"):
        smoke_test(_Mislabelled(Predictor.load(versions["v1"])))


# -- the reloader: polling, SIGHUP, trust rules, metrics -------------------------------


class _Harness:
    def __init__(self, classifier: ThreadClassifier, reloader: ModelReloader) -> None:
        self.classifier = classifier
        self.reloader = reloader
        self.registry = CollectorRegistry()

    def value(self, name: str, labels: dict[str, str] | None = None) -> float:
        found = self.registry.get_sample_value(f"article_classifier_{name}", labels or {})
        return found or 0.0


async def _harness(
    link: Path, policy: TrustPolicy, *, shadow: Path | None = None
) -> tuple[_Harness, Health]:
    registry = CollectorRegistry()
    metrics = ServiceMetrics(registry)
    health = Health()
    spec = ModelSpec(
        link,
        policy.for_model(link),
        shadow=shadow,
        shadow_trust=policy.for_candidate(shadow) if shadow else None,
    )
    classifier = ThreadClassifier(link, topics=OUT, max_event_bytes=4096, spec=spec)
    await classifier.start()
    show_models(metrics, health, classifier.models)
    reloader = ModelReloader(
        classifier,
        model_path=link,
        shadow_path=shadow,
        policy=policy,
        poll_s=0,
        metrics=metrics,
        health=health,
        on_swapped=lambda models: show_models(metrics, health, models),
    )
    harness = _Harness(classifier, reloader)
    harness.registry = registry
    return harness, health


async def test_a_flipped_symlink_is_swapped_to_and_shown_everywhere(
    versions: dict[str, Path], current: Path
) -> None:
    """Pointing --model at another artifact swaps to it at the next check: outputs,
    model_info (the old label set gone), /readyz and model_reloads_total follow."""
    harness, health = await _harness(current, TrustPolicy())
    try:
        await harness.reloader.check()
        assert harness.value("model_reloads_total", {"model": "primary"}) == 0
        _point(current, versions["v2"])
        await harness.reloader.check()
        assert harness.value("model_reloads_total", {"model": "primary"}) == 1
        assert _versions_of((await harness.classifier.classify(_wire(3))).outgoing) == {"v2"}
        exposed = generate_latest(harness.registry).decode()
        assert 'article_classifier_model_info{name="demo",version="v2"} 1.0' in exposed
        assert 'version="v1"' not in exposed
        assert (health.model_version, health.model_sha256) == (
            "v2",
            artifact_digest(versions["v2"]),
        )
        await harness.reloader.check()  # unchanged: no second swap
        assert harness.value("model_reloads_total", {"model": "primary"}) == 1
    finally:
        harness.classifier.close()


async def test_a_model_given_in_memory_is_swapped_only_when_its_path_changes(
    versions: dict[str, Path], current: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A predictor handed over in memory (no artifact digest) keeps serving while polls
    find its path unchanged; a flip of the path swaps it like any other model."""
    import service.models.reload as reload_module  # noqa: PLC0415

    looks: list[Path] = []
    target = reload_module._target

    def counted(path: Path, pins: Path | None) -> Any:
        looks.append(path)
        return target(path, pins)

    monkeypatch.setattr(reload_module, "_target", counted)
    in_memory = _Gated(Predictor.load(versions["v1"]))
    in_memory.gate.set()
    registry = CollectorRegistry()
    metrics = ServiceMetrics(registry)
    classifier = ThreadClassifier(current, topics=OUT, max_event_bytes=4096, predictor=in_memory)
    await classifier.start()
    reloader = ModelReloader(
        classifier,
        model_path=current,
        shadow_path=None,
        policy=TrustPolicy(),
        poll_s=0.01,
        metrics=metrics,
        health=Health(),
    )
    watching = asyncio.create_task(reloader.run())
    reloads = "article_classifier_model_reloads_total"
    try:
        await wait_for(lambda: len(looks) >= 5)
        assert registry.get_sample_value(reloads, {"model": "primary"}) is None
        assert classifier.models.primary.version == "v1"
        _point(current, versions["v2"])
        await wait_for(lambda: registry.get_sample_value(reloads, {"model": "primary"}) == 1)
        assert classifier.models.primary.version == "v2"
    finally:
        watching.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watching
        classifier.close()


async def test_a_broken_target_is_counted_once_and_retried_on_request(
    versions: dict[str, Path], current: Path
) -> None:
    """A refused artifact is counted with its reason, the old model keeps serving and
    readiness is untouched; polling does not retry it, a forced reload (SIGHUP) does."""
    harness, health = await _harness(current, TrustPolicy())
    health.model_loaded = True
    try:
        _point(current, versions["broken"])
        await harness.reloader.check()
        await harness.reloader.check()
        failures = {"model": "primary", "reason": "artifact"}
        assert harness.value("model_reload_failures_total", failures) == 1
        assert health.model_version == "v1"
        assert health.checks()["model_loaded"] is True
        assert _versions_of((await harness.classifier.classify(_wire(3))).outgoing) == {"v1"}
        await harness.reloader.check(force=True)
        assert harness.value("model_reload_failures_total", failures) == 2
        _point(current, versions["v3"])
        await harness.reloader.check()
        assert harness.value("model_reloads_total", {"model": "primary"}) == 1
        assert health.model_version == "v3"
    finally:
        harness.classifier.close()


async def test_a_model_failing_its_smoke_test_is_refused(
    versions: dict[str, Path], current: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An artifact that loads but fails on the sample articles is refused (smoke_test)."""
    harness, health = await _harness(current, TrustPolicy())
    try:
        monkeypatch.setattr("service.models.loading.load_predictor", lambda *_, **__: _Failing())
        _point(current, versions["v2"])
        await harness.reloader.check()
        failures = {"model": "primary", "reason": "smoke_test"}
        assert harness.value("model_reload_failures_total", failures) == 1
        assert health.model_version == "v1"
    finally:
        harness.classifier.close()


async def test_a_single_pinned_digest_refuses_every_other_artifact(
    versions: dict[str, Path], current: Path
) -> None:
    """--model-sha256 pins one artifact: a swap to another is refused (reason trust), a
    forced reload of the same bytes is accepted."""
    harness, health = await _harness(current, TrustPolicy(sha256=artifact_digest(versions["v1"])))
    try:
        _point(current, versions["v2"])
        await harness.reloader.check()
        failures = {"model": "primary", "reason": "trust"}
        assert harness.value("model_reload_failures_total", failures) == 1
        assert health.model_version == "v1"
        _point(current, versions["v1"])
        await harness.reloader.check(force=True)
        assert harness.value("model_reloads_total", {"model": "primary"}) == 1
    finally:
        harness.classifier.close()


async def test_a_pin_file_accepts_the_digests_it_lists_read_at_every_swap(
    versions: dict[str, Path], current: Path, tmp_path: Path
) -> None:
    """--model-sha256-file: an unlisted artifact is refused; once its digest is added to
    the file, the next check swaps to it without SIGHUP (and the rollback stays listed)."""
    pins = tmp_path / "accepted.sha256"
    pins.write_text(f"# release 1\n{artifact_digest(versions['v1'])}\n")
    harness, health = await _harness(current, TrustPolicy(sha256_file=pins))
    try:
        _point(current, versions["v2"])
        await harness.reloader.check()
        assert (
            harness.value("model_reload_failures_total", {"model": "primary", "reason": "trust"})
            == 1
        )
        with pins.open("a") as handle:
            handle.write(f"{artifact_digest(versions['v2']).upper()}  # release 2\n")
        await harness.reloader.check()
        assert health.model_version == "v2"
        _point(current, versions["v1"])
        await harness.reloader.check()
        assert health.model_version == "v1"
        assert harness.value("model_reloads_total", {"model": "primary"}) == 2
    finally:
        harness.classifier.close()


def test_a_pin_file_that_lists_nothing_usable_is_refused(tmp_path: Path) -> None:
    """A malformed or empty pin file is a trust error naming the file and line."""
    pins = tmp_path / "pins"
    pins.write_text("# nothing yet\n\n")
    with pytest.raises(ArtifactTrustError, match="lists no sha256 digest"):
        read_pin_file(pins)
    pins.write_text("abc\n")
    with pytest.raises(ArtifactTrustError, match=r"pins:1: must be a sha256 digest"):
        read_pin_file(pins)
    with pytest.raises(ArtifactTrustError, match="cannot read it"):
        read_pin_file(tmp_path / "missing")


async def test_with_a_public_key_swaps_need_a_signature(
    versions: dict[str, Path], current: Path, tmp_path: Path
) -> None:
    """--model-public-key: a signed artifact is swapped to, an unsigned one refused."""
    private, public = generate_key_pair(tmp_path / "keys")
    sign_artifact(versions["v1"], private)
    sign_artifact(versions["v2"], private)
    from model.trust import load_public_key  # noqa: PLC0415

    harness, health = await _harness(current, TrustPolicy(public_key=load_public_key(public)))
    try:
        _point(current, versions["v3"])
        await harness.reloader.check()
        assert (
            harness.value("model_reload_failures_total", {"model": "primary", "reason": "trust"})
            == 1
        )
        _point(current, versions["v2"])
        await harness.reloader.check()
        assert health.model_version == "v2"
    finally:
        harness.classifier.close()


def test_swap_options_are_validated() -> None:
    """A pin and a pin file together, or a shadow topic without a shadow model, are
    configuration errors naming the options."""
    base: dict[str, Any] = {"model": "m"}
    with pytest.raises(ConfigError, match="give one of them"):
        parse_settings(ServeSettings, {**base, "model_sha256": "a" * 64, "model_sha256_file": "f"})
    with pytest.raises(ConfigError, match="--shadow-topic needs --shadow-model"):
        parse_settings(ServeSettings, {**base, "shadow_topic": "t"})
    with pytest.raises(ConfigError, match="--model-poll-s"):
        parse_settings(ServeSettings, {**base, "model_poll_s": "-1"})


# -- a real serve process: SIGHUP ---------------------------------------------------------


def _spawn(command: list[str], log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARTICLE_CLASSIFIER_")}
    with log.open("wb") as sink:
        return subprocess.Popen(command, cwd=ROOT, env=env, stdout=sink, stderr=sink)


async def test_sighup_makes_serve_swap_to_what_the_model_path_points_to(
    versions: dict[str, Path], current: Path, tmp_path: Path
) -> None:
    """With polling off, SIGHUP makes a running `serve` swap to the artifact the flipped
    symlink points to; /readyz then names the new version (no broker needed)."""
    port = free_port()
    command = [
        sys.executable, "-m", "service", "serve", "--model", str(current),
        "--model-poll-s", "0", "--bootstrap-servers", f"127.0.0.1:{free_port()}",
        "--metrics-host", "127.0.0.1", "--metrics-port", str(port),
    ]  # fmt: skip
    log = tmp_path / "serve.log"
    process = _spawn(command, log)
    try:

        async def version() -> str | None:
            try:
                _, body = await http_get(port, "/readyz")
            except OSError:
                return None
            model = json.loads(body)["model"]
            return model["version"] if model else None

        async def serving(expected: str) -> bool:
            return await version() == expected

        await wait_for(lambda: serving("v1"), timeout_s=60)
        _point(current, versions["v2"])
        process.send_signal(signal.SIGHUP)
        await wait_for(lambda: serving("v2"), timeout_s=60)
    finally:
        process.send_signal(signal.SIGTERM)
        status = process.wait(timeout=60)
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    swapped = [line for line in lines if line.get("event") == "model swapped"]
    assert swapped, log.read_text()[-2000:]
    assert (swapped[0]["old_version"], swapped[0]["new_version"]) == ("v1", "v2")
    assert status == 0


# -- under load, through the broker -------------------------------------------------------


@pytest.mark.kafka
@pytest.mark.parametrize("kind", [WorkerKind.THREAD, WorkerKind.PROCESS])
async def test_swaps_under_load_lose_and_duplicate_nothing(
    broker: EmbeddedBroker,
    topics: Topics,
    versions: dict[str, Path],
    current: Path,
    kind: WorkerKind,
) -> None:
    """Thousands of events flow while the model is swapped v1 -> v2 -> broken -> v3 (by
    polling and by request): every input comes out exactly once, the versions on the
    outputs never go back within a partition, the broken artifact never serves, and the
    refusal is counted while the service stays ready."""
    settings = make_settings(
        broker.bootstrap_servers,
        topics,
        current,
        classify_in=kind,
        model_poll_s=0.2,
        batch_size=100,
    )
    chunks = [article_records(600, prefix=f"load{n}") for n in range(5)]
    total = sum(len(chunk) for chunk in chunks)
    async with running_service(settings, None, timeout_s=60) as service:

        def value(name: str, labels: dict[str, str] | None = None) -> float:
            found = service.registry.get_sample_value(f"article_classifier_{name}", labels or {})
            return found or 0.0

        reloads = {"model": "primary"}
        refused = {"model": "primary", "reason": "artifact"}
        await produce(broker.bootstrap_servers, topics.input, chunks[0])
        await wait_for(lambda: value("articles_published_total") > 200, timeout_s=120)
        _point(current, versions["v2"])
        await produce(broker.bootstrap_servers, topics.input, chunks[1])
        await wait_for(lambda: value("model_reloads_total", reloads) == 1, timeout_s=120)
        _point(current, versions["broken"])
        await produce(broker.bootstrap_servers, topics.input, chunks[2])
        await wait_for(lambda: value("model_reload_failures_total", refused) == 1, timeout_s=120)
        assert value("ready") == 1
        _point(current, versions["v3"])
        await produce(broker.bootstrap_servers, topics.input, chunks[3])
        await wait_for(lambda: value("model_reloads_total", reloads) == 2, timeout_s=120)
        await produce(broker.bootstrap_servers, topics.input, chunks[4])
        outputs = await settle(broker.bootstrap_servers, topics.output, total)
        assert value("dead_letters_total", {"reason": "classification_error"}) == 0

    ids = [json.loads(record.value)["article_id"] for record in outputs]
    assert len(ids) == total
    assert len(set(ids)) == total
    order = {"v1": 1, "v2": 2, "v3": 3}
    by_partition: dict[int, list[int]] = {}
    for record in sorted(outputs, key=lambda r: (r.partition, r.offset)):
        version = json.loads(record.value)["classification"]["model"]["version"]
        by_partition.setdefault(record.partition, []).append(order[version])
    for partition, seen in by_partition.items():
        assert seen == sorted(seen), f"partition {partition} went back to an older model"
    assert {v for seen in by_partition.values() for v in seen} == {1, 2, 3}
