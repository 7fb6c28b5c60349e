"""Hot swap: notice that ``--model`` (any of them: the default model and each language's) or
``--shadow-model`` points to another artifact, or
that SIGHUP asked for a reload, and swap the classifier's models without a restart.

A change is detected cheaply: every ``--model-poll-s`` seconds the path is resolved (a
symlink that deployment tools flip, or a directory replaced in place) and the sha256 of
its ``model.json`` bytes is compared with the serving model's. SIGHUP checks at once and
reloads even when nothing seems to have changed. The classifier loads, verifies (the
deployment's ``TrustPolicy``, as at start) and smoke-tests the new artifact off the batch
path and switches at a batch boundary. A refused artifact leaves the old model serving;
the refusal is logged with its reason and counted (``model_reload_failures_total``), and
readiness is untouched. The same target is not retried until it changes again, the pin
file changes, or SIGHUP asks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path

from model.errors import ArtifactError, ArtifactTrustError, ModelError
from service.models.loading import (
    Fingerprint,
    ModelIdentity,
    ModelSetIdentity,
    ModelSpec,
    SmokeTestError,
    TrustPolicy,
    fingerprint,
    pin_file_digest,
)
from service.models.workers import ModelClassifier
from service.observe.health import Health
from service.observe.metrics import ServiceMetrics

logger = logging.getLogger(__name__)

PRIMARY, SHADOW = "primary", "shadow"


class ModelReloader:
    """Watches the model paths and swaps the classifier's models (one swap at a time)."""

    def __init__(
        self,
        classifier: ModelClassifier,
        *,
        model_path: Path,
        shadow_path: Path | None,
        policy: TrustPolicy,
        language_paths: Mapping[str, Path] | None = None,
        poll_s: float,
        metrics: ServiceMetrics,
        health: Health,
        on_swapped: Callable[[ModelSetIdentity], None] = lambda _: None,
    ) -> None:
        self._classifier = classifier
        #: The watched paths: the live (default) model, the candidate, and each language's
        #: model under its language (``de``), which is also its ``model`` label.
        self._paths: dict[str, Path | None] = {
            PRIMARY: model_path,
            SHADOW: shadow_path,
            **(language_paths or {}),
        }
        self._policy = policy
        self._poll_s = poll_s
        self._metrics = metrics
        self._health = health
        self._on_swapped = on_swapped
        self._requested = asyncio.Event()
        self._lock = asyncio.Lock()
        #: The last target tried per model (with the pin file's digest): not retried as is.
        self._seen: dict[str, tuple[Fingerprint, str | None]] = {}

    def request(self) -> None:
        """Ask for a reload now, even of an unchanged artifact (SIGHUP)."""
        self._requested.set()

    async def run(self) -> None:
        """Check at every poll interval and at every request, until cancelled."""
        await self._baseline()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._requested.wait(), self._poll_s or None)
            forced = self._requested.is_set()
            self._requested.clear()
            try:
                await self.check(force=forced)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug here must not end the service
                logger.exception("model reload check failed")

    async def check(self, *, force: bool = False) -> None:
        """Swap each model whose path points to another artifact (each, with ``force``)."""
        async with self._lock:
            for which, path in self._paths.items():
                if path is None:
                    continue
                target = await asyncio.to_thread(_target, path, self._policy.sha256_file)
                if not force and not self._changed(which, target):
                    continue
                self._seen[which] = target
                await self._swap(which, target[0], forced=force)

    async def _baseline(self) -> None:
        """A model given in memory has no digest to compare with: only a later change of
        its path (or SIGHUP) swaps it. A loaded one is compared with its path at once, so
        a flip between its load and this first look is not missed."""
        for which, path in self._paths.items():
            serving = self._serving(which)
            if path is not None and serving is not None and serving[1] is None:
                self._seen[which] = await asyncio.to_thread(_target, path, self._policy.sha256_file)

    def _changed(self, which: str, target: tuple[Fingerprint, str | None]) -> bool:
        if target == self._seen.get(which):
            return False
        serving = self._serving(which)
        if serving is None:
            return True
        path, sha256 = serving
        return (target[0].path, target[0].sha256) != (path, sha256)

    def _serving(self, which: str) -> tuple[Path, str | None] | None:
        spec, models = self._classifier.spec, self._classifier.models
        if which == PRIMARY:
            return spec.primary.resolve(), models.primary.sha256
        if which != SHADOW:
            model = next((m for m in spec.languages if m.language == which), None)
            identity = dict(models.languages).get(which)
            if model is None or identity is None:
                return None
            return model.directory.resolve(), identity.sha256
        if spec.shadow is None or models.shadow is None:
            return None
        return spec.shadow.resolve(), models.shadow.sha256

    async def _swap(self, which: str, target: Fingerprint, *, forced: bool) -> None:
        before = self._classifier.models
        started = time.monotonic()
        try:
            spec = await asyncio.to_thread(self._spec_for, which, target.path)
            after = await self._classifier.swap(spec)
        except MemoryError:
            raise
        except Exception as error:
            reason = _reason(error)
            self._metrics.model_reload_failures.labels(which, reason).inc()
            logger.error(  # noqa: TRY400 - the reason is the message; no traceback needed
                "model swap refused; the serving model stays",
                extra={
                    "model": which,
                    "reason": reason,
                    "error": str(error) or type(error).__name__,
                    "path": str(target.path),
                    "serving_version": _version(before, which),
                },
            )
            return
        self._metrics.model_reloads.labels(which).inc()
        self._on_swapped(after)
        logger.info(
            "model swapped",
            extra={
                "model": which,
                "forced": forced,
                "path": str(target.path),
                "old_version": _version(before, which),
                "new_version": _version(after, which),
                "new_sha256": _sha(after, which),
                "swap_s": round(time.monotonic() - started, 3),
            },
        )

    def _spec_for(self, which: str, directory: Path) -> ModelSpec:
        """The serving spec with one model replaced; the other stays pinned to its bytes."""
        current = self._classifier.spec
        if which == PRIMARY:
            return replace(current, primary=directory, trust=self._policy.for_model(directory))
        if which != SHADOW:
            languages = tuple(
                replace(model, directory=directory, trust=self._policy.for_model(directory))
                if model.language == which
                else model
                for model in current.languages
            )
            return replace(current, languages=languages)
        return replace(
            current, shadow=directory, shadow_trust=self._policy.for_candidate(directory)
        )


def show_models(metrics: ServiceMetrics, health: Health, models: ModelSetIdentity) -> None:
    """Make ``model_info``, the shadow's info and ``/readyz`` name the serving models."""
    primary = models.primary
    # Info keeps one label set: the old model's series is replaced, not kept beside it.
    metrics.model_info.info({"name": primary.name, "version": primary.version})
    metrics.show_sections(primary.sections)
    for language, identity in models.languages:
        metrics.show_sections(identity.sections, language)
    # At 0 even without models per language, so that the dashboard's panel has a series.
    metrics.show_language_fallbacks(("no_model", "undetected"))
    health.model_name, health.model_version = primary.name, primary.version
    health.model_sha256 = primary.sha256
    if models.shadow is not None:
        metrics.shadow_model_info.info(
            {"name": models.shadow.name, "version": models.shadow.version}
        )


def _target(path: Path, pin_file: Path | None) -> tuple[Fingerprint, str | None]:
    return fingerprint(path), pin_file_digest(pin_file)


def _reason(error: BaseException) -> str:
    if isinstance(error, ArtifactTrustError):
        return "trust"
    if isinstance(error, SmokeTestError):
        return "smoke_test"
    if isinstance(error, ArtifactError | ModelError):
        return "artifact"
    return "error"


def _identity(models: ModelSetIdentity, which: str) -> ModelIdentity | None:
    if which == PRIMARY:
        return models.primary
    if which == SHADOW:
        return models.shadow
    return dict(models.languages).get(which)


def _version(models: ModelSetIdentity, which: str) -> str | None:
    identity = _identity(models, which)
    return identity.version if identity else None


def _sha(models: ModelSetIdentity, which: str) -> str | None:
    identity = _identity(models, which)
    return identity.sha256 if identity else None
