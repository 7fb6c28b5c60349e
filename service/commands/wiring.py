"""The composition root: the parts every command that classifies builds the same way.

``serve`` and ``reclassify`` (and whatever command comes next) get the model loader with the
deployment's whole trust rule (a pinned digest, a pin file read again at every load, a
signature), the classifier running it off the event loop where ``--classify-in`` says,
and the observers (metrics, health). A command asks for these here instead of assembling
them itself, so none can forget a check that another applies.
"""

from __future__ import annotations

from typing import NamedTuple

from prometheus_client import CollectorRegistry

from model.trust import load_public_key, normalize_sha256
from service.config.commands import PipelineSettings
from service.config.options import ModelTrust, Rollout
from service.core.deadletter import DeadLetterReason
from service.core.records import ArticlePredictor, BatchObserver, Topics
from service.models.loading import LanguageModel, ModelSpec, TrustPolicy
from service.models.workers import ModelClassifier, ShadowSink, make_classifier
from service.observe.batches import BatchMetrics
from service.observe.drift import DriftObserver, DriftTracker
from service.observe.health import Health
from service.observe.metrics import ServiceMetrics
from service.observe.tracing import Traces, tracing_from_environment


class Observers(NamedTuple):
    """What watches a running command: its metrics, the health its probes report, and the
    observers of the pipeline's batches."""

    metrics: ServiceMetrics
    health: Health
    batches: tuple[BatchObserver, ...]
    #: The service's span in each record's trace (``OTEL_*`` variables; off by default).
    traces: Traces


def build_observers(
    registry: CollectorRegistry, settings: PipelineSettings, traces: Traces | None = None
) -> Observers:
    """Fresh metrics in ``registry``, a health whose readiness is also a gauge, the batch
    observers (the metrics of what the model said and delivered, and the drift signals),
    and the trace stamping the ``OTEL_*`` variables ask for unless ``traces`` is given."""
    metrics = ServiceMetrics(registry)
    metrics.show_dead_letter_reasons(reason.value for reason in DeadLetterReason)
    health = Health()
    metrics.ready.set_function(lambda: float(health.is_ready()))
    batches = (
        BatchMetrics(metrics, settings.low_confidence_threshold),
        DriftObserver(DriftTracker(metrics.drift_gauges), settings.drift_window),
    )
    traces = traces if traces is not None else tracing_from_environment()
    return Observers(metrics, health, batches, traces)


def trust_policy(settings: ModelTrust) -> TrustPolicy:
    """The deployment's rule for every model load, at start and at each swap."""
    key = (
        load_public_key(settings.model_public_key)
        if settings.model_public_key is not None
        else None
    )
    sha256 = normalize_sha256(settings.model_sha256) if settings.model_sha256 else None
    return TrustPolicy(sha256=sha256, sha256_file=settings.model_sha256_file, public_key=key)


def model_spec(
    settings: ModelTrust,
    policy: TrustPolicy,
    rollout: Rollout | None = None,
    *,
    section_floor: float | None = None,
) -> ModelSpec:
    """What to load at start: the live model and, with a ``rollout`` naming one, the
    candidate, each with what its artifact must satisfy (the pin file and the candidate's
    digest are read now), the models per language (``--model de=DIR``, each checked as the
    live model is), and the ``--section-floor`` all are loaded with."""
    shadow = rollout.shadow_model if rollout is not None else None
    return ModelSpec(
        primary=settings.model,
        trust=policy.for_model(settings.model),
        shadow=shadow,
        shadow_trust=policy.for_candidate(shadow) if shadow is not None else None,
        shadow_topic=rollout.shadow_topic if rollout is not None else None,
        shadow_language=rollout.shadow_language if rollout is not None else None,
        section_floor=section_floor,
        languages=tuple(
            LanguageModel(language, directory, policy.for_model(directory))
            for language, directory in settings.language_models
        ),
    )


def build_classifier(
    settings: PipelineSettings,
    policy: TrustPolicy,
    *,
    predictor: ArticlePredictor | None = None,
    rollout: Rollout | None = None,
    on_shadow: ShadowSink | None = None,
) -> ModelClassifier:
    """The models of ``settings`` (and of ``rollout``'s candidate) under ``policy``, run
    where ``--classify-in`` says.

    ``predictor``, if given, is used in a worker thread instead of loading the artifact
    (tests and the demo); its artifact is still what ``policy`` checks at a swap."""
    return make_classifier(
        settings.classify_in,
        topics=Topics(settings.output_topic, settings.dead_letter_topic),
        max_event_bytes=settings.max_event_bytes,
        log_level=settings.log_level.value,
        predictor=predictor,
        max_deaths=settings.worker_max_deaths,
        limits=settings.record_limits,
        explain=settings.explain,
        spec=model_spec(settings, policy, rollout, section_floor=settings.section_floor),
        on_shadow=on_shadow,
    )
