"""Exactly-once processing (``--processing-guarantee exactly-once``): one transaction per
input partition of each batch, zombies fenced by per-partition transactional ids.

Checked on Apache Kafka with a read_committed reader over whole topics
(``chaos.ledger.audit``): every input exactly once on the output or dead-letter topic, per
key in input order, across kill -9, SIGTERM and joins; tansu, without transactions, is
refused at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from conftest import (
    Broker,
    Topics,
    article_records,
    make_broker,
    make_settings,
    produce,
    running_service,
    wait_for,
)
from instances import Instance, spawn_instance, wait_until_consumed, wait_until_status
from prometheus_client import CollectorRegistry

from chaos.ledger import Audit, Feeder, audit_topics, await_delivery, read_topic
from devtools.tansu import ensure_topics, free_port
from service.commands.serve import EXIT_CONFIG, run_service
from service.config.cli import parse_settings
from service.config.commands import ConfigError, ServeSettings
from service.config.options import (
    ProcessingGuarantee,
)

EVENTS = 20_000
KILLS = 3
#: About 400 events/s: input keeps flowing through every kill, restart and join.
CHUNK, PAUSE_S = 40, 0.1
EXACTLY_ONCE = {"processing_guarantee": "exactly-once"}


def needs_transactions(engine: str) -> None:
    """Skip the tansu run of a test that needs Kafka transactions."""
    if engine == "tansu":
        pytest.skip("tansu has no transactions")


def metric(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels or None) or 0.0


# -- settings ------------------------------------------------------------------------------


def test_transactional_ids_are_per_input_partition_and_default_to_the_group() -> None:
    """Every instance derives the same id for a partition (so its next owner fences the
    last one); the prefix defaults to the group id and can be set."""
    settings = parse_settings(ServeSettings, {"model": "m", "group_id": "g", **EXACTLY_ONCE})
    assert settings.processing_guarantee is ProcessingGuarantee.EXACTLY_ONCE
    assert settings.exactly_once
    assert settings.transactional_id("articles", 2) == "g-articles-2"
    prefixed = parse_settings(
        ServeSettings, {"model": "m", "transactional_id_prefix": "eu1", **EXACTLY_ONCE}
    )
    assert prefixed.transactional_id("articles", 0) == "eu1-articles-0"
    assert not parse_settings(ServeSettings, {"model": "m"}).exactly_once


def test_an_unknown_processing_guarantee_names_the_option() -> None:
    """A typo is a configuration error naming the option and the value."""
    with pytest.raises(ConfigError, match=r"--processing-guarantee='exactly_once'"):
        parse_settings(ServeSettings, {"model": "m", "processing_guarantee": "exactly_once"})


# -- one instance in process ---------------------------------------------------------------


@pytest.mark.kafka
async def test_tansu_refuses_exactly_once_at_start(
    broker_engine: str, broker: Broker, topics: Topics, model_dir: Path, predictor: Any
) -> None:
    """On a broker without transactions the service does not start: exit status 2 and a
    log line saying why, before any record is consumed."""
    if broker_engine != "tansu":
        pytest.skip("Apache Kafka has transactions (the other tests here run on it)")
    settings = make_settings(broker.bootstrap_servers, topics, model_dir, **EXACTLY_ONCE)
    registry = CollectorRegistry()
    status = await asyncio.wait_for(
        run_service(settings, predictor=predictor, registry=registry), 60
    )
    assert status == EXIT_CONFIG
    assert metric(registry, "article_classifier_records_consumed_total") == 0


@pytest.mark.kafka
async def test_exactly_once_commits_outputs_dead_letters_and_offsets_together(
    broker_engine: str, broker: Broker, topics: Topics, model_dir: Path, predictor: Any
) -> None:
    """Valid and poison records: a read_committed reader sees each once on its topic, the
    group's offsets reach the input's end, transactions are counted and none aborted."""
    needs_transactions(broker_engine)
    records = article_records(300, keys=40)
    records += [(b"bad-1", b"{not json"), (b"bad-2", b'{"article_id": "x"}')]
    await produce(broker.bootstrap_servers, topics.input, records)
    settings = make_settings(broker.bootstrap_servers, topics, model_dir, **EXACTLY_ONCE)
    async with running_service(settings, predictor) as service:

        async def done() -> bool:
            result = await audit_topics(
                broker.bootstrap_servers,
                topics.input,
                topics.output,
                topics.dead_letter,
                isolation_level="read_committed",
            )
            return not result.lost

        await wait_for(done, timeout_s=90, interval_s=1.0)
        registry = service.registry
    result = await audit_topics(
        broker.bootstrap_servers,
        topics.input,
        topics.output,
        topics.dead_letter,
        isolation_level="read_committed",
    )
    assert result.ok, result.summary()
    assert (result.outputs, result.dead_letters, result.duplicates) == (300, 2, 0)
    assert metric(registry, "article_classifier_transactions_committed_total") >= 1
    aborted = sum(
        metric(registry, "article_classifier_transactions_aborted_total", cause=cause)
        for cause in ("fenced", "refused", "error")
    )
    assert aborted == 0


@pytest.mark.kafka
async def test_a_record_the_broker_refuses_in_a_transaction_is_dead_lettered(
    broker_engine: str, broker: Broker, topics: Topics, model_dir: Path, predictor: Any
) -> None:
    """The output topic's limit shrinks after the session read it: the transaction holding
    the now-too-large output is aborted, the record is isolated in an aborted probe and
    becomes an output_rejected dead letter; its neighbours come out once, in order."""
    needs_transactions(broker_engine)
    settings = make_settings(broker.bootstrap_servers, topics, model_dir, **EXACTLY_ONCE)
    small = article_records(20, prefix="s")
    big_body = "word " * 6_000
    big = (b"big", json.dumps({"article_id": "big", "event_id": "big", "title": "t",
                               "body": big_body}).encode())  # fmt: skip
    async with running_service(settings, predictor) as service:
        await produce(broker.bootstrap_servers, topics.input, small[:10])
        await wait_for(
            lambda: metric(service.registry, "article_classifier_articles_published_total") >= 10,
            timeout_s=60,
        )
        await _set_max_message_bytes(broker.bootstrap_servers, topics.output, 20_000)
        await produce(broker.bootstrap_servers, topics.input, [*small[10:15], big, *small[15:]])
        await wait_for(
            lambda: (
                metric(
                    service.registry,
                    "article_classifier_dead_letters_total",
                    reason="output_rejected",
                )
                >= 1
            ),
            timeout_s=60,
        )
        await wait_for(
            lambda: metric(service.registry, "article_classifier_articles_published_total") >= 20,
            timeout_s=60,
        )
        refused = metric(
            service.registry, "article_classifier_transactions_aborted_total", cause="refused"
        )
    assert refused >= 1
    outputs = await read_topic(
        broker.bootstrap_servers, topics.output, isolation_level="read_committed"
    )
    dead = await read_topic(
        broker.bootstrap_servers, topics.dead_letter, isolation_level="read_committed"
    )
    published = sorted(ident for part in outputs.values() for _, ident in part)
    assert published == sorted(f"e-{i}" for i in range(20))
    assert [ident for part in dead.values() for _, ident in part] == ["big"]


RESTART_EVENTS = 10_000


@pytest.mark.kafka
async def test_broker_killed_and_restarted_mid_run_stays_exactly_once(
    broker_engine: str, model_dir: Path, predictor: Any, tmp_path: Path
) -> None:
    """kill -9 of the broker with transactions in flight and a restart on the same data
    directory: the service recovers by itself and a read_committed reader sees every input
    exactly once, per key in input order."""
    needs_transactions(broker_engine)
    crashing = make_broker(broker_engine, tmp_path / "crashing")
    records = article_records(RESTART_EVENTS, prefix="restart", keys=300)
    half = RESTART_EVENTS // 2
    topics = Topics("in-eos-restart", "out-eos-restart", "dlq-eos-restart", "group-eos-restart")
    async with crashing:
        bootstrap = crashing.bootstrap_servers
        await ensure_topics(bootstrap, {topics.input: 3, topics.output: 3, topics.dead_letter: 1})
        await produce(bootstrap, topics.input, records[:half])
        settings = make_settings(bootstrap, topics, model_dir, **EXACTLY_ONCE)
        async with running_service(settings, predictor, timeout_s=60) as service:
            await wait_for(
                lambda: (
                    metric(service.registry, "article_classifier_articles_published_total") >= 1_500
                ),
                timeout_s=120,
            )
            await asyncio.to_thread(crashing.kill)
            await asyncio.to_thread(crashing.start)
            await produce(bootstrap, topics.input, records[half:])
            result = await await_delivery(
                bootstrap,
                topics.input,
                topics.output,
                topics.dead_letter,
                timeout_s=240,
                isolation_level="read_committed",
            )
            uncommitted = await audit_topics(
                bootstrap, topics.input, topics.output, topics.dead_letter
            )
    print(
        f"exactly-once, broker restart:\n  read_committed:   {result.summary()}\n"
        f"  read_uncommitted: {uncommitted.summary()}"
    )
    assert result.inputs == RESTART_EVENTS
    assert result.ok, result.summary()
    assert result.duplicates == 0, result.summary()


async def _set_max_message_bytes(bootstrap_servers: str, topic: str, limit: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        await admin.alter_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic, {"max.message.bytes": str(limit)})]
        )
    finally:
        await admin.close()


# -- instances as subprocesses -------------------------------------------------------------


class Group:
    """Exactly-once instances of one group, started and stopped by name."""

    def __init__(self, broker: Broker, topics: Topics, model_dir: Path, logs: Path):
        self.broker, self.topics, self.model_dir, self.logs = broker, topics, model_dir, logs
        self.instances: dict[str, Instance] = {}
        self.starts = 0

    async def start(self, name: str) -> Instance:
        settings = make_settings(
            self.broker.bootstrap_servers,
            self.topics,
            self.model_dir,
            metrics_port=free_port(),
            **EXACTLY_ONCE,
        )
        self.starts += 1
        instance = spawn_instance(settings, self.logs, f"{name}-{self.starts}")
        self.instances[name] = instance
        await wait_until_status(instance, 200, timeout_s=90)
        return instance

    def tails(self) -> str:
        return "\n".join(instance.tail(2500) for instance in self.instances.values())

    async def close(self) -> None:
        for instance in self.instances.values():
            if instance.alive():
                await instance.stop(signal.SIGKILL)


async def acked(feeder: Feeder, count: int) -> None:
    await wait_for(lambda: feeder.acked >= count, timeout_s=180, interval_s=0.1)


async def in_transaction(instance: Instance) -> None:
    """Best effort: wait for fetched, uncommitted work, so a kill lands mid-transaction."""

    async def busy() -> bool:
        return await instance.metric("article_classifier_in_flight_records") > 0

    with contextlib.suppress(AssertionError):
        await wait_for(busy, timeout_s=10, interval_s=0.02)


async def run_group(
    broker: Broker,
    topics: Topics,
    model_dir: Path,
    logs: Path,
    steps: Callable[[Group, Feeder], Awaitable[None]],
) -> tuple[Audit, Audit, float, Group]:
    """Feed EVENTS (1 in 100 poison) to two instances while ``steps`` run; return the
    read_committed and read_uncommitted audits and the seconds to the last output."""
    group = Group(broker, topics, model_dir, logs)
    try:
        await group.start("a")
        await group.start("b")
        feeder = Feeder(
            broker.bootstrap_servers,
            topics.input,
            total=EVENTS,
            keys=500,
            chunk=CHUNK,
            pause_s=PAUSE_S,
            poison_every=100,
        )
        started = time.monotonic()
        feeding = asyncio.create_task(feeder.run())
        try:
            await steps(group, feeder)
            await asyncio.wait_for(feeding, 180)
        finally:
            feeder.stop()
            await asyncio.wait_for(feeding, 60)
        committed = await await_delivery(
            broker.bootstrap_servers,
            topics.input,
            topics.output,
            topics.dead_letter,
            timeout_s=180,
            isolation_level="read_committed",
        )
        elapsed = time.monotonic() - started
        uncommitted = await audit_topics(
            broker.bootstrap_servers, topics.input, topics.output, topics.dead_letter
        )
        return committed, uncommitted, elapsed, group
    finally:
        await group.close()


@pytest.mark.kafka
async def test_kill_9_three_times_then_sigterm_and_a_join_stay_exactly_once(
    broker_engine: str, broker: Broker, topics: Topics, model_dir: Path, tmp_path: Path
) -> None:
    """Two instances share 20,000 events; one is killed with -9 mid-transaction three
    times and restarted, then a third joins and one leaves with SIGTERM: a read_committed
    reader sees every input exactly once, per key in input order (a read_uncommitted
    reader may see the aborted copies)."""
    needs_transactions(broker_engine)
    exits: list[int] = []

    async def steps(group: Group, feeder: Feeder) -> None:
        for kill in range(KILLS):
            await acked(feeder, 2_000 + kill * 3_000)
            victim = group.instances["b" if kill % 2 == 0 else "a"]
            name = "b" if kill % 2 == 0 else "a"
            consumed = await victim.metric("article_classifier_records_consumed_total")
            await wait_until_consumed(victim, consumed + 1, timeout_s=90)
            await in_transaction(victim)
            exits.append(await victim.stop(signal.SIGKILL))
            await group.start(name)
        await acked(feeder, 11_000)
        third = await group.start("c")
        await wait_until_consumed(third, 1, timeout_s=90)
        await acked(feeder, 14_000)
        exits.append(await group.instances["a"].stop(signal.SIGTERM))

    committed, uncommitted, elapsed, group = await run_group(
        broker, topics, model_dir, tmp_path, steps
    )
    print(
        f"exactly-once, {KILLS} kills + SIGTERM + join, {elapsed:.1f} s\n"
        f"  read_committed:   {committed.summary()}\n"
        f"  read_uncommitted: {uncommitted.summary()}"
    )
    assert exits == [-signal.SIGKILL] * KILLS + [0], group.tails()
    assert committed.inputs == EVENTS
    assert not committed.lost, committed.summary() + "\n" + group.tails()
    assert committed.duplicates == 0, committed.summary() + "\n" + group.tails()
    assert not committed.out_of_order, committed.summary()
    assert committed.outputs + committed.dead_letters == EVENTS
