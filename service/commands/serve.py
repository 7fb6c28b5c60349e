"""The service's lifecycle: HTTP -> model -> (producer -> consumer -> pipeline), in reverse out.

Delivery is at least once. An input offset is committed only after the broker has
acknowledged (acks=all) every output and dead letter of the records up to it, so a crash
at any moment means reprocessing, never a skipped record. The duplicate window is the
records fetched after the last successful commit: at most ``max_in_flight_batches x
batch_size`` records per instance (1,024 with the defaults), re-published after a crash,
a failed commit, a lost group membership, or a shutdown drain that overran its timeout.
A clean shutdown (SIGTERM/SIGINT) and a rebalance drain and commit first, so they cause
no duplicates. Outputs are deterministic for a model version (except ``classified_at``),
so downstream de-duplicates on ``(article_id, event_id, classification.model.version)``.
Per-partition order holds on both output topics (the output keeps the input key, so per
article); after a restart a re-published record can follow a later one for the same key:
the last copy of each is in order.

When the broker cannot be reached (at start or later), the session is closed, the
service reports not-ready on ``/readyz``, and it retries with a capped exponential
backoff with full jitter (reset once a session starts), resuming from the last committed
offsets by itself. Any other failure of a session is logged with its traceback and
handled the same way; an open circuit breaker waits a growing delay first. Nothing but a
stop request ends the session loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from contextlib import AsyncExitStack

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError
from prometheus_client import CollectorRegistry

from service.commands.wiring import (
    Observers,
    build_classifier,
    build_observers,
    trust_policy,
)
from service.config.commands import ServeSettings
from service.core.backoff import Backoff
from service.core.errors import (
    AccessDenied,
    AccessDeniedError,
    AccessReason,
    BreakerOpenError,
    BrokerUnavailableError,
    DeliveryError,
    GroupJoinStuckError,
    MissingTopicError,
    RegistryUnavailableError,
    TransactionsUnsupportedError,
)
from service.core.records import ArticlePredictor, ShadowBatch
from service.feedback.consumer import quality_tracker, run_feedback
from service.feedback.quality import QualityTracker, serving_labels
from service.http.api import ApiServer
from service.http.server import HealthServer
from service.kafka.access import access_backoff, access_restart, raise_denied
from service.kafka.clients import (
    make_consumer,
    make_producer,
    missing_topics,
    start_unless_stopped,
    topic_message_limits,
    transactions_unsupported,
)
from service.kafka.pipeline import Pipeline
from service.kafka.registry import RegistryFraming, build_registry_framing
from service.kafka.shadow import ShadowPublisher
from service.kafka.supervisor import Restart, Supervisor
from service.kafka.transactions import PartitionTransactions
from service.models.loading import ModelSetIdentity
from service.models.reload import ModelReloader, show_models
from service.models.workers import BatchClassifier, ModelClassifier, ModelIdentity
from service.observe.health import Assignment, Health
from service.observe.logs import configure_logging
from service.observe.metrics import ServiceMetrics
from service.observe.shadow import ShadowObserver

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_DRAIN_TIMEOUT = 1
#: Exactly-once asked for on a broker without transactions: a configuration error.
EXIT_CONFIG = 2
_BACKOFF_INITIAL_S = 0.5
_BACKOFF_MAX_S = 10.0
_REGISTRY_BACKOFF_INITIAL_S = 1.0
_REGISTRY_BACKOFF_MAX_S = 60.0
_CLIENT_CLOSE_TIMEOUT_S = 10.0
#: Failures of the broker or of delivery: counted in broker_errors_total, once per session.
_BROKER_ERRORS = (KafkaError, BrokerUnavailableError, DeliveryError, OSError)


async def run_service(
    settings: ServeSettings,
    *,
    predictor: ArticlePredictor | None = None,
    stop: asyncio.Event | None = None,
    registry: CollectorRegistry | None = None,
    http_port: asyncio.Future[int] | None = None,
    api_port: asyncio.Future[int] | None = None,
    reload: asyncio.Event | None = None,
) -> int:
    """Serve until ``stop`` is set; return the exit status (0 after a clean drain).

    Setting ``reload`` (SIGHUP does) reloads the models now; ``settings.model_poll_s``
    also swaps to whatever ``settings.model`` points to once it changes.

    ``predictor``, if given, is used in a worker thread; by default the model is loaded
    from ``settings.model`` where ``settings.classify_in`` says. ``http_port``,
    if given, receives the bound metrics port (useful with ``metrics_port=0``); ``api_port``
    the suggest API's, once the model is loaded (with ``settings.api_port`` set).
    """
    stop = stop or asyncio.Event()
    registry = registry if registry is not None else CollectorRegistry()
    observers = build_observers(registry, settings)
    metrics, health = observers.metrics, observers.health
    policy = trust_policy(settings)
    shadow = _Shadow(settings, metrics)
    classifier = build_classifier(
        settings,
        policy,
        predictor=predictor,
        rollout=settings,
        on_shadow=shadow.on_batch if settings.shadow_model is not None else None,
    )
    framing = build_registry_framing(settings)
    async with AsyncExitStack() as stack:
        stack.callback(classifier.close)
        stack.callback(observers.traces.close)
        stack.push_async_callback(shadow.close)
        if framing is not None:
            stack.push_async_callback(framing.client.close)
        server = await stack.enter_async_context(
            HealthServer(
                settings.metrics_host, settings.metrics_port, registry=registry, health=health
            )
        )
        if http_port is not None and not http_port.done():
            http_port.set_result(server.port)
        model = await classifier.start()
        models = _models(classifier, model)
        show_models(metrics, health, models)
        health.model_loaded = True
        if settings.api_port is not None:
            # Started once the model is loaded, so it never answers without one; stopped
            # before the classifier closes (the stack unwinds in reverse).
            api = await stack.enter_async_context(
                ApiServer(settings, classifier, registry=registry)
            )
            if api_port is not None and not api_port.done():
                api_port.set_result(api.port)
        _log_loaded(models, settings.classify_in.value if predictor is None else "thread")
        quality = None
        if settings.feedback_topic:
            # Its own group and session loop: nothing it meets reaches the article pipeline.
            quality = quality_tracker(settings, metrics, predictor)
            await run_feedback(stack, settings, metrics, quality, stop)
        if hasattr(classifier, "swap"):
            reloader = ModelReloader(
                classifier,
                model_path=settings.model,
                shadow_path=settings.shadow_model,
                policy=policy,
                language_paths=settings.language_dirs,
                poll_s=settings.model_poll_s,
                metrics=metrics,
                health=health,
                on_swapped=_learning_labels(shadow.swapped(health), quality, classifier),
            )
            _watch_models(stack, reloader, reload)
        return await _sessions(
            settings,
            classifier=classifier,
            stop=stop,
            metrics=metrics,
            health=health,
            observers=observers,
            framing=framing,
        )
    raise AssertionError("unreachable")  # pragma: no cover - mypy: the stack may swallow


def _log_loaded(models: ModelSetIdentity, classify_in: str) -> None:
    logger.info(
        "model loaded",
        extra={
            "model_name": models.primary.name,
            "model_version": models.primary.version,
            "model_sha256": models.primary.sha256,
            "classify_in": classify_in,
            "shadow_version": models.shadow.version if models.shadow else None,
            "language_models": {
                language: f"{identity.name} {identity.version}"
                for language, identity in models.languages
            }
            or None,
        },
    )


def _watch_models(
    stack: AsyncExitStack, reloader: ModelReloader, reload: asyncio.Event | None
) -> None:
    """Swap models as --model-poll-s and SIGHUP (``reload``) say, until the stack closes."""
    watching = asyncio.create_task(reloader.run(), name="model-reloader")
    stack.push_async_callback(_cancel, watching)
    if reload is not None:
        stack.push_async_callback(_cancel, asyncio.create_task(_relay(reload, reloader)))


class _Shadow:
    """The event-loop side of ``--shadow-model``: metrics and the optional shadow topic."""

    def __init__(self, settings: ServeSettings, metrics: ServiceMetrics) -> None:
        self._observer = ShadowObserver(metrics)
        self._publisher = (
            ShadowPublisher(
                lambda: make_producer(settings), on_failure=metrics.shadow_publish_failures.inc
            )
            if settings.shadow_topic is not None
            else None
        )
        self._metrics = metrics

    def on_batch(self, batch: ShadowBatch) -> None:
        self._observer.observe(batch)
        if self._publisher is not None:
            self._publisher.submit(batch.outgoing)

    def swapped(self, health: Health) -> Callable[[ModelSetIdentity], None]:
        def show(models: ModelSetIdentity) -> None:
            self._observer.forget()  # the series of the old pair of versions go
            show_models(self._metrics, health, models)

        return show

    async def close(self) -> None:
        if self._publisher is not None:
            await self._publisher.close()


def _learning_labels(
    show: Callable[[ModelSetIdentity], None],
    quality: QualityTracker | None,
    classifier: ModelClassifier,
) -> Callable[[ModelSetIdentity], None]:
    """``show``, then (with feedback metrics) the labels of the models now serving added
    to the feedback quality series' label set, so a swapped-in model's new labels count
    under their own names."""
    if quality is None:
        return show

    def after(models: ModelSetIdentity) -> None:
        show(models)
        spec = classifier.spec
        directories = [spec.primary, *(model.directory for model in spec.languages)]
        quality.add_labels(*serving_labels(directories))

    return after


def _models(classifier: BatchClassifier, started: ModelIdentity) -> ModelSetIdentity:
    models: ModelSetIdentity | None = getattr(classifier, "models", None)
    return models if isinstance(models, ModelSetIdentity) else ModelSetIdentity(started)


async def _relay(requests: asyncio.Event, reloader: ModelReloader) -> None:
    while True:
        await requests.wait()
        requests.clear()
        reloader.request()


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _sessions(
    settings: ServeSettings,
    *,
    classifier: BatchClassifier,
    stop: asyncio.Event,
    metrics: ServiceMetrics,
    health: Health,
    observers: Observers,
    framing: RegistryFraming | None = None,
) -> int:
    """Run consumer-group sessions until stopped, restarting after any failure.

    No exception type ends the service but a configuration error: a broker failure, an
    open circuit breaker or any other error closes the session, is logged (with its
    traceback when nobody expected it) and is retried from the last commit after a
    jittered, growing delay. The reconnect backoff resets once a session has started; the
    breaker's once it closes.
    """
    backoff = Backoff(_BACKOFF_INITIAL_S, _BACKOFF_MAX_S)
    # Its own delay, reset only by the registry's next answer: a session start does not
    # reset it, so an outage does not make the consumer rejoin its group in a tight loop.
    registry_backoff = Backoff(_REGISTRY_BACKOFF_INITIAL_S, _REGISTRY_BACKOFF_MAX_S)
    if framing is not None:

        def answered() -> None:
            health.registry_error = None
            registry_backoff.reset()

        framing.on_answer = answered
        framing.on_request = lambda request, outcome: metrics.schema_registry_requests.labels(
            request, outcome
        ).inc()
    breaker = _BreakerState(
        Backoff(settings.breaker_backoff_s, settings.breaker_backoff_max_s, full_jitter=False)
    )
    access = _AccessState(health)
    supervisor = Supervisor(
        [access.restart(metrics), *_restarts(backoff, breaker, metrics, health, registry_backoff)],
        stop=stop,
        count=lambda cause: metrics.session_restarts.labels(cause).inc(),
        fatal=(TransactionsUnsupportedError,),
        context={"bootstrap_servers": settings.bootstrap_servers},
        log=logger,
    )

    def started() -> None:
        backoff.reset()
        access.started()

    async def session() -> bool:
        try:
            return await _session(
                settings,
                classifier=classifier,
                stop=stop,
                metrics=metrics,
                health=health,
                observers=observers,
                on_started=started,
                half_open=breaker.half_open,
                on_breaker_closed=breaker.closed,
                framing=framing,
            )
        except _BROKER_ERRORS as error:
            await raise_denied(error, settings, (settings.output_topic, settings.dead_letter_topic))
            raise

    try:
        drained = await supervisor.run(session)
    except TransactionsUnsupportedError as error:
        # A configuration error: one clear line, no traceback.
        logger.error(str(error), extra={"bootstrap_servers": settings.bootstrap_servers})  # noqa: TRY400
        return EXIT_CONFIG
    if drained is None or drained:
        return EXIT_OK
    return EXIT_DRAIN_TIMEOUT


class _AccessState:
    """The broker's last refusal, shown on ``/readyz`` until it is shown to be lifted: a
    session that starts proves the login and the consumer's ACLs, a delivered batch the
    producer's (the pipeline clears it then)."""

    def __init__(self, health: Health) -> None:
        self._health = health
        self._denied: AccessDenied | None = None
        self.backoff = access_backoff()

    def restart(self, metrics: ServiceMetrics) -> Restart:
        def denied(error: Exception) -> None:
            if not isinstance(error, AccessDeniedError):  # pragma: no cover
                return
            self._denied = error.denied
            metrics.broker_errors.inc()
            self._health.access_denied = str(error.denied)
            self._health.broker_error = str(error.denied)
            self._health.broker_reachable = error.denied.reason is AccessReason.AUTHORIZATION_FAILED

        return access_restart(self.backoff, then=denied)

    def started(self) -> None:
        if self._denied is not None and self._denied.operation == "Write":
            return
        self._denied = None
        self._health.access_denied = None


class _BreakerState:
    """After the breaker opened, the next session starts half open; it closes on success."""

    def __init__(self, backoff: Backoff) -> None:
        self.backoff = backoff
        self.half_open = False

    def opened(self, _: Exception) -> None:
        self.half_open = True

    def closed(self) -> None:
        self.half_open = False
        self.backoff.reset()


def _restarts(
    backoff: Backoff,
    breaker: _BreakerState,
    metrics: ServiceMetrics,
    health: Health,
    registry_backoff: Backoff | None = None,
) -> list[Restart]:
    """How the article sessions restart, by cause (the first that matches applies)."""

    def topic_missing(error: Exception) -> None:
        health.broker_reachable = True
        health.broker_error = None
        health.missing_topics = tuple(getattr(error, "topics", ()))

    def registry_failed(error: Exception) -> None:
        health.registry_error = str(error)

    def broker_failed(error: Exception) -> None:
        metrics.broker_errors.inc()
        health.broker_reachable = False
        health.broker_error = repr(error)

    return [
        Restart(
            (MissingTopicError,),
            "missing_topic",
            backoff,
            message=str,
            then=topic_missing,
            details=lambda error: {"topics": getattr(error, "topics", [])},
        ),
        Restart(
            (GroupJoinStuckError,),
            "group_join_stuck",
            backoff,
            message=str,
            details=lambda error: {"joining_s": round(getattr(error, "joining_s", 0.0), 1)},
        ),
        Restart(
            (BreakerOpenError,),
            "breaker",
            breaker.backoff,
            message="circuit breaker open; the session restarts from the last commit later",
            then=breaker.opened,
        ),
        Restart(
            (RegistryUnavailableError,),
            "schema_registry",
            registry_backoff or backoff,
            message=str,
            then=registry_failed,
        ),
        Restart(
            _BROKER_ERRORS,
            "broker",
            backoff,
            message="broker session failed; retrying",
            then=broker_failed,
        ),
        Restart(
            (Exception,),
            "error",
            backoff,
            message="session failed on an unexpected error; restarting from the last commit",
            traceback=True,
        ),
    ]


async def _session(
    settings: ServeSettings,
    *,
    classifier: BatchClassifier,
    stop: asyncio.Event,
    metrics: ServiceMetrics,
    health: Health,
    observers: Observers,
    on_started: Callable[[], None] = lambda: None,
    half_open: bool = False,
    on_breaker_closed: Callable[[], None] | None = None,
    framing: RegistryFraming | None = None,
) -> bool:
    """One producer + consumer pair; True when it stopped after a complete drain."""
    missing = await missing_topics(settings, [settings.input_topic])
    if missing:
        raise MissingTopicError(missing)
    health.missing_topics = ()
    if framing is not None:
        await framing.start()
    async with AsyncExitStack() as stack:
        stack.callback(_mark_stopped, health)
        producer = None
        transactions = None
        if settings.exactly_once:
            unsupported = await transactions_unsupported(settings)
            if unsupported is not None:
                raise TransactionsUnsupportedError(
                    "--processing-guarantee exactly-once needs a broker with transactions"
                    f" (Apache Kafka); this one has none: {unsupported}"
                )
        else:
            producer = make_producer(settings)
            # Registered before start: a client whose start failed must still be closed.
            stack.push_async_callback(_close, producer, "producer")
            await producer.start()
        limits = await _output_limits(settings)
        if settings.exactly_once:
            transactions = PartitionTransactions(settings, metrics, limits)
            # Closed after the consumer has left the group (the stack unwinds in reverse).
            stack.push_async_callback(transactions.close)
        consumer = make_consumer(settings)
        # Closing the stack stops the consumer first: it leaves the group after the drain.
        stack.push_async_callback(_close, consumer, "consumer")
        pipeline = Pipeline(
            consumer,
            producer,
            classifier,
            settings=settings,
            metrics=metrics,
            health=health,
            observers=observers.batches,
            traces=observers.traces,
            limits=limits,
            half_open=half_open,
            on_breaker_closed=on_breaker_closed,
            transactions=transactions,
            framing=framing,
        )
        consumer.subscribe([settings.input_topic], listener=pipeline.listener())
        join_bound_s = settings.group_join_bound_s
        try:
            if not await start_unless_stopped(consumer, stop, within_s=join_bound_s):
                return True  # stopped while joining: nothing was fetched
        except TimeoutError:
            raise GroupJoinStuckError(join_bound_s, join_bound_s) from None
        health.broker_reachable = True
        health.broker_error = None
        if health.assignment is Assignment.STOPPED:
            # The rebalance listener may already have seen an assignment during start().
            health.assignment = Assignment.WAITING
        # Re-testing after the breaker's delay: ready again; the pipeline closes it.
        health.breaker_open = None
        on_started()
        logger.info(
            "consumer started",
            extra={"group_id": settings.group_id, "topic": settings.input_topic},
        )
        return await pipeline.run(stop)
    raise AssertionError("unreachable")  # pragma: no cover


async def _output_limits(settings: ServeSettings) -> dict[str, int]:
    """max.message.bytes of the output and dead-letter topics, or ``--max-output-bytes``."""
    topics = [settings.output_topic, settings.dead_letter_topic]
    described = await topic_message_limits(settings, topics)
    limits = {
        topic: settings.max_output_bytes if limit is None else limit
        for topic, limit in described.items()
    }
    logger.info(
        "output size limits",
        extra={
            "limits": limits,
            "from_broker": sorted(t for t, limit in described.items() if limit is not None),
        },
    )
    return limits


async def _close(client: AIOKafkaConsumer | AIOKafkaProducer, name: str) -> None:
    """Stop a client, bounded: with the broker gone, leaving the group or flushing could
    otherwise wait for ever."""
    try:
        await asyncio.wait_for(client.stop(), _CLIENT_CLOSE_TIMEOUT_S)
    except TimeoutError:
        logger.warning("kafka client did not close in time", extra={"client": name})
    except KafkaError as error:
        logger.warning(
            "kafka client closed with an error", extra={"client": name, "error": repr(error)}
        )


def _mark_stopped(health: Health) -> None:
    health.assignment = Assignment.STOPPED


def serve(settings: ServeSettings) -> int:
    """Run the service until SIGTERM or SIGINT; return the exit status."""
    configure_logging(settings.log_level.value)
    return asyncio.run(_serve(settings))


async def _serve(settings: ServeSettings) -> int:
    stop = asyncio.Event()
    reload = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, _on_signal, stop, signum)
    loop.add_signal_handler(signal.SIGHUP, _on_reload_signal, reload)
    service = asyncio.create_task(run_service(settings, stop=stop, reload=reload))
    try:
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({service, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        # The drain has its own bound; this one also covers closing the clients.
        done, _ = await asyncio.wait({service}, timeout=settings.shutdown_timeout_s + 10)
        if not done:
            logger.error("shutdown overran its bound; exiting without a clean close")
            service.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await service
            return EXIT_DRAIN_TIMEOUT
        return service.result()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(signum)


def _on_signal(stop: asyncio.Event, signum: int) -> None:
    logger.info("signal received; shutting down", extra={"signal": signal.Signals(signum).name})
    stop.set()


def _on_reload_signal(reload: asyncio.Event) -> None:
    logger.info("SIGHUP received; reloading the model", extra={"signal": "SIGHUP"})
    reload.set()
