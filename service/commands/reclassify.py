"""``article-classifier reclassify``: replay a range of a topic through a model, resumably.

The range (``service.kafka.replay_range``) is planned at the first start and stored with the
group's commits; the records in it go through the service's own ``Pipeline`` (decode,
classify, publish with the same key and contract, dead letters, metrics), with the hooks of
``service.kafka.replay_gate`` bounding it to the range, limiting the rate and committing progress.
Delivery is the service's: at least once, an offset committed only after its outputs are
acknowledged, so an interrupted run (SIGINT, SIGTERM, a crash) resumes from the last commit
when the same command runs again. The run ends with status 0 once every partition's
committed offset reached the end of its range.

``--from-dead-letters`` replays the dead-letter topic instead: the key and value are the
original record's, records that now pass are published, the rest are dead-lettered again
to the same topic with their original ``source.*`` headers (``--reason`` picks which).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any, TextIO, TypeVar

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from prometheus_client import CollectorRegistry

from service.commands.wiring import (
    Observers,
    build_classifier,
    build_observers,
    trust_policy,
)
from service.config.commands import ReclassifySettings
from service.core.backoff import Backoff
from service.core.errors import (
    BreakerOpenError,
    BrokerUnavailableError,
    DeliveryError,
    GroupJoinStuckError,
    RegistryUnavailableError,
    ServiceError,
)
from service.http.server import HealthServer
from service.kafka.access import access_backoff, access_restart, authorization, raise_denied
from service.kafka.clients import (
    client_options,
    make_consumer,
    make_producer,
    security_kwargs,
    topic_message_limits,
)
from service.kafka.pipeline import Pipeline
from service.kafka.registry import RegistryFraming, build_registry_framing
from service.kafka.replay_gate import Progress, RateLimit, ReplayGate
from service.kafka.replay_range import (
    PartitionRange,
    ReplayRange,
    decode_metadata,
    encode_metadata,
    plan_range,
)
from service.kafka.supervisor import Restart, Supervisor
from service.models.workers import BatchClassifier
from service.observe.health import Assignment, Health
from service.observe.logs import configure_logging
from service.observe.metrics import ServiceMetrics

logger = logging.getLogger(__name__)

EXIT_DONE = 0
_BACKOFF_INITIAL_S = 0.5
_BACKOFF_MAX_S = 10.0
_CLIENT_CLOSE_TIMEOUT_S = 10.0
_METADATA_TIMEOUT_S = 30.0
_PREPARE_RETRY_S = 60.0
_T = TypeVar("_T")
_GROUP_PREFIX = "article-classifier-reclassify-"
_RECOVERABLE = (
    KafkaError,
    BrokerUnavailableError,
    DeliveryError,
    BreakerOpenError,
    GroupJoinStuckError,
    OSError,
)


class ReplayError(ServiceError):
    """The replay cannot start as asked (a missing topic, a group holding another range)."""


# -- running -----------------------------------------------------------------------------


def reclassify(settings: ReclassifySettings) -> int:
    """Run until the range is done (0) or SIGINT/SIGTERM (128 + the signal number)."""
    configure_logging(settings.log_level.value)
    return asyncio.run(_reclassify_until_signal(settings))


async def _reclassify_until_signal(settings: ReclassifySettings) -> int:
    stop = asyncio.Event()
    received: list[int] = []
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        logger.info("signal received; finishing in-flight work", extra={"signal": signum})
        received.append(signum)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        status = await run_reclassify(settings, stop=stop)
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
    if status != EXIT_DONE and received:
        return 128 + received[0]
    return status


async def run_reclassify(
    settings: ReclassifySettings,
    *,
    stop: asyncio.Event,
    registry: CollectorRegistry | None = None,
    predictor: Any = None,
    stderr: TextIO | None = None,
) -> int:
    """Replay the range; 0 when it is done, 1 when ``stop`` ended the run before that.

    ``predictor``, if given, classifies in a worker thread instead of a loaded artifact.
    """
    stderr = stderr or sys.stderr
    registry = registry if registry is not None else CollectorRegistry()
    observers = build_observers(registry, settings)
    metrics, health = observers.metrics, observers.health
    classifier = build_classifier(settings, trust_policy(settings), predictor=predictor)
    # Built from the live topics: the allowed input subject stays <input-topic>-value when
    # --from-dead-letters reads the dead letters of that input.
    framing = build_registry_framing(settings)
    async with AsyncExitStack() as stack:
        stack.callback(classifier.close)
        if framing is not None:
            stack.push_async_callback(framing.client.close)
        stack.callback(observers.traces.close)
        if settings.replay_metrics_port is not None:
            await stack.enter_async_context(
                HealthServer(
                    settings.metrics_host,
                    settings.replay_metrics_port,
                    registry=registry,
                    health=health,
                )
            )
        model = await classifier.start()
        metrics.model_info.info({"name": model.name, "version": model.version})
        health.model_loaded = True
        # With models per language, each one's version names the job too (without, the
        # default model's version alone, as before).
        versions = ",".join(
            [model.version]
            + [f"{language}={m.version}" for language, m in classifier.models.languages]
        )
        job = settings.job(versions)
        group = settings.replay_group_id or _GROUP_PREFIX + job
        # Replaying dead letters reads the dead-letter topic and writes failures back to it:
        # the range's fixed end keeps that from looping, unlike the live service.
        service = settings.model_copy(
            update={"replay_group_id": group, "input_topic": settings.source_topic}
        )
        try:
            replay_range, committed = await _prepare(settings, service, job)
        except KafkaError as error:
            raise ReplayError(f"the broker did not answer: {error!r}") from error
        progress = Progress(replay_range, committed)
        print(
            f"reclassify: {settings.source_topic} -> {service.output_topic} with model"
            f" {model.name} {model.version}, group {group}: {progress.render()}",
            file=stderr,
            flush=True,
        )
        if progress.all_done():
            print("reclassify: the range is done; nothing to replay", file=stderr, flush=True)
            return EXIT_DONE
        printer = asyncio.create_task(_print_progress(progress, settings, stderr))
        stack.push_async_callback(_cancel, printer)
        done = await _sessions(
            settings,
            service,
            classifier=classifier,
            progress=progress,
            job=job,
            stop=stop,
            metrics=metrics,
            health=health,
            observers=observers,
            framing=framing,
        )
        state = "done" if done else "interrupted; run the same command again to resume"
        print(f"reclassify: {state}: {progress.render()}", file=stderr, flush=True)
        return EXIT_DONE if done else 1
    raise AssertionError("unreachable")  # pragma: no cover - mypy: the stack may swallow


async def _prepare(
    settings: ReclassifySettings, service: ReclassifySettings, job: str
) -> tuple[ReplayRange, dict[TopicPartition, int]]:
    """The range (stored by an earlier run, else planned and stored now) and the group's
    committed offsets in it."""
    topic = settings.source_topic
    planner = AIOKafkaConsumer(
        **security_kwargs(service),
        **client_options(service, "AIOKafkaConsumer"),
        client_id=f"{service.client_id}-planner",
        enable_auto_commit=False,
    )
    try:
        await planner.start()
        partitions, stored = await _retrying(lambda: _committed(service, topic))
        replay_range: ReplayRange = {}
        for tp, (_, metadata) in stored.items():
            decoded = decode_metadata(metadata)
            if decoded is None:
                continue
            stored_job, part = decoded
            if stored_job != job:
                raise ReplayError(
                    f"group {service.consumer_group!r} holds the progress of another replay (job"
                    f" {stored_job}, this one is {job}): give another --group-id"
                )
            replay_range[tp] = part
        missing = [tp for tp in partitions if tp not in replay_range]
        if missing:
            planned = await plan_range(
                planner, missing, from_ms=settings.from_timestamp, until_ms=settings.until_timestamp
            )
            replay_range.update(planned)
    finally:
        await _close(planner)
    committed = {tp: offset for tp, (offset, _) in stored.items() if offset >= 0}
    unstored = [tp for tp in partitions if tp not in committed]
    if len(committed) > 0 and missing:
        logger.warning(
            "the group's commits hold no stored range (the broker drops commit metadata, or"
            " the group was not made by reclassify): the range was planned again",
            extra={"group_id": service.consumer_group, "partitions": len(missing)},
        )
    if unstored:
        await _store(service, job, {tp: replay_range[tp] for tp in unstored})
        committed.update({tp: replay_range[tp].start for tp in unstored})
    logger.info(
        "replay range",
        extra={
            "group_id": service.consumer_group,
            "job": job,
            "range": {
                f"{tp.topic}:{tp.partition}": [p.start, p.end] for tp, p in replay_range.items()
            },
        },
    )
    return replay_range, committed


async def _retrying(call: Callable[[], Awaitable[_T]]) -> _T:
    """``call()``, retried on retriable broker errors (a group coordinator still loading)
    for up to ``_PREPARE_RETRY_S``; then, or on another broker error, a ReplayError."""
    backoff = Backoff(_BACKOFF_INITIAL_S, _BACKOFF_MAX_S)
    deadline = time.monotonic() + _PREPARE_RETRY_S
    while True:
        try:
            return await call()
        except KafkaError as error:
            denied = authorization(error)
            if denied is not None:
                # A person has to grant it: a clear error now, not a wait.
                raise ReplayError(f"the broker refused the replay's plan: {denied}") from error
            if not error.retriable or time.monotonic() > deadline:
                raise ReplayError(f"the broker did not answer: {error!r}") from error
            delay = backoff.delay()
            logger.warning(
                "broker not ready for the replay's plan; retrying",
                extra={"error": repr(error), "retry_in_s": round(delay, 2)},
            )
            await asyncio.sleep(delay)


async def _committed(
    service: ReclassifySettings, topic: str
) -> tuple[list[TopicPartition], dict[TopicPartition, tuple[int, str]]]:
    """The topic's partitions, and the group's committed offsets and metadata in them."""
    admin = AIOKafkaAdminClient(**security_kwargs(service), client_id=f"{service.client_id}-admin")
    try:
        await admin.start()
        described = await asyncio.wait_for(admin.describe_topics([topic]), _METADATA_TIMEOUT_S)
        numbers = sorted(
            int(part["partition"])
            for item in described
            if item["topic"] == topic and not item["error_code"]
            for part in item["partitions"]
        )
        if not numbers:
            raise ReplayError(f"topic {topic!r} does not exist")
        partitions = [TopicPartition(topic, number) for number in numbers]
        answer = await asyncio.wait_for(
            admin.list_consumer_group_offsets(service.consumer_group, partitions=partitions),
            _METADATA_TIMEOUT_S,
        )
    finally:
        with contextlib.suppress(Exception):
            await admin.close()
    stored = {tp: (int(item.offset), item.metadata or "") for tp, item in answer.items()}
    return partitions, stored


async def _store(
    service: ReclassifySettings, job: str, parts: dict[TopicPartition, PartitionRange]
) -> None:
    """Commit each partition's start with its range, before any member joins the group."""
    consumer = AIOKafkaConsumer(
        **security_kwargs(service),
        **client_options(service, "AIOKafkaConsumer"),
        client_id=f"{service.client_id}-planner",
        group_id=service.consumer_group,
        enable_auto_commit=False,
    )
    try:
        await consumer.start()
        consumer.assign(list(parts))
        await consumer.commit(
            {tp: (part.start, encode_metadata(job, part)) for tp, part in parts.items()}
        )
    finally:
        await _close(consumer)


async def _sessions(
    settings: ReclassifySettings,
    service: ReclassifySettings,
    *,
    classifier: BatchClassifier,
    progress: Progress,
    job: str,
    stop: asyncio.Event,
    metrics: ServiceMetrics,
    health: Health,
    observers: Observers,
    framing: RegistryFraming | None = None,
) -> bool:
    """Consumer sessions until the range is done (True) or ``stop`` is set (False); a
    failed session restarts from the last commit after a jittered backoff."""
    backoff = Backoff(_BACKOFF_INITIAL_S, _BACKOFF_MAX_S)
    # Reset only by the registry's next answer (serve does the same).
    registry_backoff = Backoff(1.0, 60.0)
    if framing is not None:
        framing.on_answer = registry_backoff.reset
    rate_limit = RateLimit(settings.rate_limit)
    message = "replay session failed; resuming from the last commit"
    supervisor = Supervisor(
        [
            access_restart(access_backoff(), then=lambda error: _refused(health, error)),
            Restart((GroupJoinStuckError,), "group_join_stuck", backoff, message=message),
            Restart((RegistryUnavailableError,), "schema_registry", registry_backoff, message=str),
            Restart(_RECOVERABLE, "broker", backoff, message=message),
        ],
        stop=stop,
        count=lambda cause: metrics.session_restarts.labels(cause).inc(),
        log=logger,
    )

    async def session() -> bool:
        try:
            await run_session()
        except _RECOVERABLE as error:
            outputs = (service.output_topic, service.dead_letter_topic)
            await raise_denied(error, service, outputs)
            raise
        return True

    async def run_session() -> None:
        await _session(
            settings,
            service,
            classifier=classifier,
            progress=progress,
            job=job,
            rate_limit=rate_limit,
            stop=stop,
            metrics=metrics,
            health=health,
            observers=observers,
            on_started=backoff.reset,
            framing=framing,
        )

    # A session that ends with the range unfinished (and no stop) is followed by another.
    while not stop.is_set() and not progress.all_done():
        await supervisor.run(session, until=progress.all_done)
    return progress.all_done()


def _refused(health: Health, error: Exception) -> None:
    """Show the broker's refusal on /readyz (with --metrics-port)."""
    health.access_denied = str(error)
    health.broker_error = str(error)


async def _session(
    settings: ReclassifySettings,
    service: ReclassifySettings,
    *,
    classifier: BatchClassifier,
    progress: Progress,
    job: str,
    rate_limit: RateLimit,
    stop: asyncio.Event,
    metrics: ServiceMetrics,
    health: Health,
    observers: Observers,
    on_started: Any,
    framing: RegistryFraming | None = None,
) -> bool:
    async with AsyncExitStack() as stack:
        stack.callback(setattr, health, "assignment", Assignment.STOPPED)
        producer = make_producer(service)
        stack.push_async_callback(_close, producer)
        await producer.start()
        limits = await _limits(service)
        if framing is not None:
            await framing.start()
        consumer = make_consumer(service)
        stack.push_async_callback(_close, consumer)
        finished = asyncio.Event()
        gate = ReplayGate(
            consumer,
            progress,
            job=job,
            rate_limit=rate_limit,
            on_done=finished.set,
            reasons=tuple(reason.value for reason in settings.reason),
            dead_letters=settings.from_dead_letters,
        )
        pipeline = Pipeline(
            consumer,
            producer,
            classifier,
            settings=service,
            metrics=metrics,
            health=health,
            observers=observers.batches,
            traces=observers.traces,
            limits=limits,
            bounds=gate,
            framing=framing,
        )
        consumer.subscribe([service.input_topic], listener=pipeline.listener())
        await consumer.start()
        health.broker_reachable = True
        health.assignment = Assignment.WAITING
        on_started()
        relay = asyncio.create_task(_relay(stop, finished))
        stack.push_async_callback(_cancel, relay)
        return await pipeline.run(finished)
    raise AssertionError("unreachable")  # pragma: no cover


async def _relay(source: asyncio.Event, target: asyncio.Event) -> None:
    await source.wait()
    target.set()


async def _limits(service: ReclassifySettings) -> dict[str, int]:
    described = await topic_message_limits(
        service, [service.output_topic, service.dead_letter_topic]
    )
    return {
        topic: service.max_output_bytes if limit is None else limit
        for topic, limit in described.items()
    }


async def _print_progress(progress: Progress, settings: ReclassifySettings, stderr: TextIO) -> None:
    """One progress line per interval (overwritten in place on a terminal)."""
    tty = stderr.isatty()
    interval = 1.0 if tty else settings.progress_interval_s
    while True:
        await asyncio.sleep(interval)
        line = f"reclassify: {progress.render()}"
        print(f"\r{line}\x1b[K" if tty else line, end="" if tty else "\n", file=stderr, flush=True)


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _close(client: Any) -> None:
    try:
        await asyncio.wait_for(client.stop(), _CLIENT_CLOSE_TIMEOUT_S)
    except (TimeoutError, KafkaError) as error:
        logger.warning("kafka client did not close cleanly", extra={"error": repr(error)})
