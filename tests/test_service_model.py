"""Which model the service serves: verified where it is loaded, and visible on /readyz.

No broker is needed: the model is loaded and /readyz answers before the first broker
connection, which here goes to a port nobody listens on.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from conftest import DEMO_CORPUS, http_get, wait_for
from prometheus_client import CollectorRegistry

from devtools.tansu import free_port
from model import (
    ArtifactTrust,
    ArtifactTrustError,
    artifact_digest,
    load_labelled,
    save_artifact,
    train,
)
from service.commands.serve import run_service
from service.config.commands import (
    ServeSettings,
)
from service.config.options import (
    WorkerKind,
)
from service.core.records import Topics
from service.models.workers import ProcessClassifier, ThreadClassifier

TOPICS = Topics(output="out", dead_letter="dlq")


@pytest.fixture
def own_model(model_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the demo model that a test may replace."""
    return Path(shutil.copytree(model_dir, tmp_path / "model"))


@pytest.mark.parametrize("kind", [WorkerKind.THREAD, WorkerKind.PROCESS])
async def test_readyz_names_the_pinned_model(own_model: Path, kind: WorkerKind) -> None:
    """/readyz shows the loaded model's name, version and digest, even while not ready."""
    digest = artifact_digest(own_model)
    settings = ServeSettings(
        model=own_model,
        model_sha256=digest.upper(),
        bootstrap_servers=f"127.0.0.1:{free_port()}",
        metrics_host="127.0.0.1",
        metrics_port=0,
        classify_in=kind,
    )
    stop = asyncio.Event()
    port: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        run_service(settings, stop=stop, registry=CollectorRegistry(), http_port=port)
    )
    try:
        await asyncio.wait_for(asyncio.shield(port), 30)
        body: dict[str, Any] = {}

        async def model_shown() -> bool:
            nonlocal body
            status, text = await http_get(port.result(), "/readyz")
            body = json.loads(text)
            return status == 503 and body["model"] is not None

        await wait_for(model_shown, timeout_s=60)
        assert body["model"] == {
            "name": "demo",
            "version": body["model"]["version"],
            "sha256": digest,
        }
        assert body["checks"]["model_loaded"] is True
        assert "broker_reachable" in body["failing"]
    finally:
        stop.set()
        assert await asyncio.wait_for(task, 60) == 0


async def test_readyz_shows_no_model_before_one_is_loaded() -> None:
    """Before the model is loaded, /readyz says so with model null."""
    from service.observe.health import Health  # noqa: PLC0415

    report = Health().report()
    assert report["model"] is None
    assert "model_loaded" in report["failing"]  # type: ignore[operator]


async def test_a_thread_worker_applies_the_trust_settings(own_model: Path) -> None:
    """A thread worker refuses a model that is not the pinned one."""
    classifier = ThreadClassifier(
        own_model, topics=TOPICS, max_event_bytes=4096, trust=ArtifactTrust(sha256="0" * 64)
    )
    try:
        with pytest.raises(ArtifactTrustError, match="is not the pinned"):
            await classifier.start()
    finally:
        classifier.close()


async def test_a_replacement_worker_process_loads_only_the_model_it_started_with(
    own_model: Path,
) -> None:
    """A model replaced on disk after start is refused by a replacement worker process,
    so the service never serves a model other than the one it reported."""
    classifier = ProcessClassifier(own_model, topics=TOPICS, max_event_bytes=4096, log_level="INFO")
    try:
        started = await classifier.start()
        assert started.sha256 == artifact_digest(own_model)
        save_artifact(
            train(load_labelled([DEMO_CORPUS]).records, name="other", version="v2"), own_model
        )
        classifier._replace_pool()
        with pytest.raises(ArtifactTrustError, match=f"is not the pinned {started.sha256}"):
            await classifier.classify([])
    finally:
        classifier.close()
