"""The service against a secured Apache Kafka: SASL_SSL (SCRAM-SHA-512) with mutual TLS and
the StandardAuthorizer denying whatever no ACL allows. Each mode works with exactly the ACLs
``service.kafka.acls`` lists (and ``docs/security.md`` shows); a wrong password, an expired
certificate and a missing ACL each show up by name on ``/readyz`` and in the log, are
retried with a growing delay, and lose nothing once fixed.

One broker for the module (it starts in about ten seconds); each test has its own topics.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from conftest import (
    KAFKA_VERSION,
    Record,
    Topics,
    article_records,
    http_get,
    make_settings,
    require_apache_kafka,
    running_service,
    wait_for,
)
from secured_kafka import AclAdmin, Pki, admin_kwargs, client_settings, make_pki

from devtools.apache_kafka import ApacheKafkaBroker
from devtools.browser import classified_event
from schemas import ArticleFeedback
from service.commands.reclassify import ReplayError, run_reclassify
from service.config.commands import DeskSettings, ReclassifySettings
from service.desk.feeds import DeskReader, VerdictPublisher
from service.desk.state import DeskState
from service.feedback.dataset import DatasetError, Source, build_dataset
from service.kafka.acls import Mode, Operation, Resource, bound

pytestmark = pytest.mark.kafka

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A CA, the broker's and the client's certificates, and an expired client one."""
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def secured(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApacheKafkaBroker]:
    """One secured Apache Kafka for the module."""
    require_apache_kafka()
    directory = tmp_path_factory.mktemp("secured-kafka")
    with ApacheKafkaBroker(
        data_dir=directory / "kafka",
        log_file=directory / "kafka.log",
        version=KAFKA_VERSION,
        security=pki.broker_security(),
    ) as running:
        yield running


@pytest.fixture(scope="module")
def acl_admin(secured: ApacheKafkaBroker, pki: Pki) -> Iterator[AclAdmin]:
    """The super user's admin client: topics and ACLs (gone before the broker stops)."""
    admin = AclAdmin(secured.bootstrap_servers, pki)
    yield admin
    admin.close()


@pytest.fixture
def topics(acl_admin: AclAdmin, request: pytest.FixtureRequest) -> Topics:
    """Fresh topics and group id for one test (created by the super user)."""
    tag = f"{request.node.name[:24]}-{uuid.uuid4().hex[:6]}".replace("[", "-").replace("]", "")
    made = Topics(f"in-{tag}", f"out-{tag}", f"dlq-{tag}", f"group-{tag}")
    acl_admin.create_topics({made.input: 2, made.output: 2, made.dead_letter: 1})
    return made


def names(topics: Topics) -> dict[str, str]:
    """The resources the options of the ACL table name, for ``topics``."""
    return {
        "--input-topic": topics.input,
        "--output-topic": topics.output,
        "--dead-letter-topic": topics.dead_letter,
        "--group-id": topics.group,
        "--transactional-id-prefix": topics.group,
        "--feedback-topic": f"fb-{topics.input}",
        "<--group-id>.feedback": f"{topics.group}.feedback",
        "--feedback": f"fb-{topics.input}",
        "--articles": topics.output,
    }


async def produce(bootstrap: str, pki: Pki, topic: str, records: Sequence[Record]) -> None:
    """Produce as the super user, every record acknowledged."""
    producer = AIOKafkaProducer(**admin_kwargs(bootstrap, pki), acks="all")
    await producer.start()
    try:
        for key, value in records:
            await producer.send_and_wait(topic, key=key, value=value)
    finally:
        await producer.stop()


async def read_ids(
    bootstrap: str, pki: Pki, topic: str, expected: int, *, timeout_s: float = 60.0
) -> list[str]:
    """The article ids on ``topic`` (read as the super user, from the beginning) once at
    least ``expected`` distinct ones arrived or at the deadline."""
    consumer = AIOKafkaConsumer(topic, **admin_kwargs(bootstrap, pki), auto_offset_reset="earliest")
    await consumer.start()
    try:
        ids: list[str] = []
        deadline = time.monotonic() + timeout_s
        while len(set(ids)) < expected and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                ids.extend(json.loads(record.value)["article_id"] for record in records)
        return ids
    finally:
        await consumer.stop()


async def readyz(port: int) -> dict[str, Any]:
    """The ``/readyz`` body."""
    _, body = await http_get(port, "/readyz")
    result: dict[str, Any] = json.loads(body)
    return result


def serve_settings(
    secured: ApacheKafkaBroker, topics: Topics, model_dir: Path, pki: Pki, **overrides: Any
) -> Any:
    """Settings of a service connecting as the ``article-classifier`` user."""
    return make_settings(
        secured.bootstrap_servers, topics, model_dir, **{**client_settings(pki), **overrides}
    )


@pytest.mark.parametrize("mode", [Mode.SERVE, Mode.SERVE_EXACTLY_ONCE])
async def test_serve_works_with_exactly_the_documented_acls(
    secured: ApacheKafkaBroker,
    pki: Pki,
    acl_admin: AclAdmin,
    topics: Topics,
    model_dir: Path,
    predictor: Any,
    mode: Mode,
) -> None:
    """With only its mode's ACLs, serve classifies every input and is ready."""
    acl_admin.grant(bound(mode, names(topics)))
    records = article_records(20, prefix=mode.name.lower())
    await produce(secured.bootstrap_servers, pki, topics.input, records)
    guarantee = "exactly-once" if mode is Mode.SERVE_EXACTLY_ONCE else "at-least-once"
    settings = serve_settings(secured, topics, model_dir, pki, processing_guarantee=guarantee)
    async with running_service(settings, predictor) as service:
        ids = await read_ids(secured.bootstrap_servers, pki, topics.output, len(records))
        assert sorted(ids) == sorted(key.decode() for key, _ in records if key)
        body = await readyz(service.port)
        assert body["ready"], body


def refusals(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """The service's log lines about the broker refusing it."""
    return [r for r in caplog.records if r.getMessage().startswith("the broker refused")]


async def refused_until(
    service: Any, caplog: pytest.LogCaptureFixture, expected: str, count: int = 3
) -> dict[str, Any]:
    """The ``/readyz`` body once the service logged ``count`` refusals; each names
    ``expected``, as ``/readyz`` does, and the delays between them grow."""
    await wait_for(lambda: len(refusals(caplog)) >= count, timeout_s=30)
    body = await readyz(service.port)
    assert not body["ready"]
    assert expected in body["access_denied"], body
    assert "access_granted" in body["failing"]
    lines = refusals(caplog)
    assert all(expected in line.getMessage() for line in lines)
    delays = [getattr(line, "retry_in_s", 0.0) for line in lines]
    assert delays == sorted(delays), delays  # a capped exponential backoff, not a loop
    return body


@pytest.mark.parametrize(
    ("mode", "resource", "operation", "option"),
    [
        (Mode.SERVE, Resource.GROUP, Operation.READ, "--group-id"),
        (Mode.SERVE, Resource.TOPIC, Operation.READ, "--input-topic"),
        (Mode.SERVE, Resource.TOPIC, Operation.WRITE, "--output-topic"),
        (
            Mode.SERVE_EXACTLY_ONCE,
            Resource.TRANSACTIONAL_ID,
            Operation.WRITE,
            "--transactional-id-prefix",
        ),
    ],
    ids=["group-read", "input-read", "output-write", "exactly-once-transactional-id"],
)
async def test_a_missing_acl_is_named_retried_and_loses_nothing(
    secured: ApacheKafkaBroker,
    pki: Pki,
    acl_admin: AclAdmin,
    topics: Topics,
    model_dir: Path,
    predictor: Any,
    mode: Mode,
    resource: Resource,
    operation: Operation,
    option: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Without one of its ACLs serve says which operation on which resource was denied (log
    and /readyz), retries with growing delays, and once granted delivers every input."""
    acls = bound(mode, names(topics))
    withheld = next(
        acl
        for acl in acls
        if (acl.resource, acl.operation, acl.name) == (resource, operation, names(topics)[option])
    )
    acl_admin.grant([acl for acl in acls if acl != withheld])
    records = article_records(12, prefix=operation.value.lower())
    await produce(secured.bootstrap_servers, pki, topics.input, records)
    guarantee = "exactly-once" if mode is Mode.SERVE_EXACTLY_ONCE else "at-least-once"
    settings = serve_settings(secured, topics, model_dir, pki, processing_guarantee=guarantee)
    async with running_service(settings, predictor) as svc:
        # A transactional id is the prefix followed by the input partition.
        name = (
            f"'{withheld.name}" if resource is Resource.TRANSACTIONAL_ID else f"{withheld.name!r}"
        )
        expected = f"authorization_failed: {operation} on {resource} {name}"
        body = await refused_until(svc, caplog, expected)
        assert body["checks"]["broker_reachable"]
        acl_admin.grant([withheld])
        ids = await read_ids(secured.bootstrap_servers, pki, topics.output, len(records))
        assert sorted(set(ids)) == sorted(key.decode() for key, _ in records if key)
        await wait_for(lambda: _ready(svc), timeout_s=40)
        assert (await readyz(svc.port))["access_denied"] is None


async def _ready(service: Any) -> bool:
    return bool((await readyz(service.port))["ready"])


@pytest.mark.parametrize("case", ["wrong-password", "expired-certificate"])
async def test_refused_credentials_are_named_and_retried_and_lose_nothing(
    secured: ApacheKafkaBroker,
    pki: Pki,
    acl_admin: AclAdmin,
    topics: Topics,
    model_dir: Path,
    predictor: Any,
    case: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A wrong password (SASL) or an expired client certificate (TLS) is named on /readyz
    and in the log and retried with growing delays; nothing is consumed, so the service
    started with good credentials delivers every input."""
    acl_admin.grant(bound(Mode.SERVE, names(topics)))
    records = article_records(8, prefix=case)
    await produce(secured.bootstrap_servers, pki, topics.input, records)
    if case == "wrong-password":
        bad = client_settings(pki, password="not-the-password")
        expected = "authentication_failed: SASL SCRAM-SHA-512 login of 'article-classifier'"
    else:
        bad = client_settings(pki, expired=True)
        expected = f"tls_client_certificate: the client certificate {str(pki.expired_cert)!r}"
    settings = make_settings(secured.bootstrap_servers, topics, model_dir, **bad)
    async with running_service(settings, predictor) as svc:
        body = await refused_until(svc, caplog, expected)
        assert not body["checks"]["broker_reachable"]
    async with running_service(serve_settings(secured, topics, model_dir, pki), predictor):
        ids = await read_ids(secured.bootstrap_servers, pki, topics.output, len(records))
        assert sorted(set(ids)) == sorted(key.decode() for key, _ in records if key)


def _sample(registry: Any, name: str, **labels: str) -> float:
    return float(registry.get_sample_value(f"article_classifier_{name}", labels) or 0.0)


async def test_the_feedback_consumer_works_with_exactly_the_documented_acls(
    secured: ApacheKafkaBroker,
    pki: Pki,
    acl_admin: AclAdmin,
    topics: Topics,
    model_dir: Path,
    predictor: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Without its group's ACL the feedback consumer names it; with serve's and its own
    ACLs, a verdict counts and invalid feedback is dead-lettered."""
    resources = names(topics)
    acl_admin.create_topics({resources["--feedback-topic"]: 1})
    feedback_acls = bound(Mode.FEEDBACK, resources)
    group = next(acl for acl in feedback_acls if acl.resource is Resource.GROUP)
    acl_admin.grant(bound(Mode.SERVE, resources) + [a for a in feedback_acls if a != group])
    section = predictor.sections[0]
    verdict = {
        "article_id": "fb-1",
        "model_version": predictor.version,
        "editor": "ed-1",
        "corrected_at": "2026-11-20T08:00:00Z",
        "predicted_section": section,
        "section": section,
    }
    feedback = [(b"fb-1", json.dumps(verdict).encode()), (b"fb-bad", b"{not json")]
    await produce(secured.bootstrap_servers, pki, resources["--feedback-topic"], feedback)
    settings = serve_settings(
        secured, topics, model_dir, pki, feedback_topic=resources["--feedback-topic"]
    )
    async with running_service(settings, predictor) as service:
        registry = service.registry
        # Without its group's ACL the feedback consumer names it and retries.
        await wait_for(lambda: bool(refusals(caplog)), timeout_s=30)
        assert f"Read on group '{topics.group}.feedback' denied" in refusals(caplog)[0].getMessage()
        acl_admin.grant([group])
        await wait_for(
            lambda: (
                _sample(registry, "corrections_total", model_version=predictor.version) == 1
                and _sample(registry, "feedback_records_total") == len(feedback)
            ),
            timeout_s=60,
        )
        assert _sample(registry, "feedback_consumer_running") == 1
    consumer = AIOKafkaConsumer(
        topics.dead_letter,
        **admin_kwargs(secured.bootstrap_servers, pki),
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        fetched = await consumer.getmany(timeout_ms=10_000)
        keys = [record.key for records in fetched.values() for record in records]
    finally:
        await consumer.stop()
    assert keys == [b"fb-bad"]


async def test_reclassify_works_with_exactly_the_documented_acls(
    secured: ApacheKafkaBroker,
    pki: Pki,
    acl_admin: AclAdmin,
    topics: Topics,
    model_dir: Path,
    predictor: Any,
) -> None:
    """Without its group's ACL reclassify stops naming it; with reclassify's ACLs (its own
    --group-id) the whole range is replayed."""
    resources = {**names(topics), "--group-id": f"{topics.group}-replay"}
    acls = bound(Mode.RECLASSIFY, resources)
    group = next(acl for acl in acls if acl.resource is Resource.GROUP)
    acl_admin.grant([acl for acl in acls if acl != group])
    records = article_records(15, prefix="replay")
    await produce(secured.bootstrap_servers, pki, topics.input, records)
    service = serve_settings(secured, topics, model_dir, pki)
    shared = {
        name: value
        for name, value in service.model_dump().items()
        if name in ReclassifySettings.model_fields
    }
    settings = ReclassifySettings(
        **{**shared, "from_beginning": True, "replay_group_id": resources["--group-id"]}
    )
    with pytest.raises(ReplayError, match=f"Read on group '{group.name}' denied"):
        await run_reclassify(
            settings, stop=asyncio.Event(), predictor=predictor, stderr=io.StringIO()
        )
    acl_admin.grant([group])
    status = await run_reclassify(
        settings, stop=asyncio.Event(), predictor=predictor, stderr=io.StringIO()
    )
    assert status == 0
    ids = await read_ids(secured.bootstrap_servers, pki, topics.output, len(records))
    assert sorted(ids) == sorted(key.decode() for key, _ in records if key)


async def test_dataset_reads_topics_with_exactly_the_documented_acls(
    secured: ApacheKafkaBroker,
    pki: Pki,
    acl_admin: AclAdmin,
    topics: Topics,
    model_dir: Path,
    predictor: Any,
    tmp_path: Path,
) -> None:
    """Without Read on a topic dataset names it; with its two Read ACLs the feedback and
    articles topics are read to their end and joined."""
    resources = names(topics)
    acl_admin.create_topics({resources["--feedback"]: 1})
    acls = bound(Mode.DATASET, resources)
    articles_read = next(acl for acl in acls if acl.name == resources["--articles"])
    acl_admin.grant([acl for acl in acls if acl != articles_read])
    article = {"article_id": "d-1", "event_id": "e-1", "title": "Rates", "body": "The bank."}
    verdict = {
        "article_id": "d-1",
        "model_version": predictor.version,
        "editor": "ed-1",
        "corrected_at": "2026-11-20T08:00:00Z",
        "section": predictor.sections[0],
    }
    await produce(
        secured.bootstrap_servers,
        pki,
        resources["--feedback"],
        [(b"d-1", json.dumps(verdict).encode())],
    )
    await produce(
        secured.bootstrap_servers,
        pki,
        resources["--articles"],
        [(b"d-1", json.dumps(article).encode())],
    )
    connection = serve_settings(secured, topics, model_dir, pki)
    denied = f"authorization_failed: Read on topic '{topics.output}' denied"
    with pytest.raises(DatasetError, match=denied):
        await build_dataset(
            [Source(topic=resources["--feedback"])],
            [Source(topic=resources["--articles"])],
            tmp_path / "refused.jsonl",
            bootstrap_servers=secured.bootstrap_servers,
            connection=connection,
            timeout_s=5,
        )
    acl_admin.grant([articles_read])
    report = await build_dataset(
        [Source(topic=resources["--feedback"])],
        [Source(topic=resources["--articles"])],
        tmp_path / "corrections.jsonl",
        bootstrap_servers=secured.bootstrap_servers,
        connection=connection,
        timeout_s=20,
    )
    assert report.joined == 1


async def test_a_write_acl_revoked_while_running_loses_nothing(
    secured: ApacheKafkaBroker,
    pki: Pki,
    acl_admin: AclAdmin,
    topics: Topics,
    model_dir: Path,
    predictor: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Write on the output revoked mid-run: the refusal names it, the records in flight are
    not committed, and once granted again every input arrives."""
    acls = bound(Mode.SERVE, names(topics))
    write = next(
        acl for acl in acls if acl.operation is Operation.WRITE and acl.name == topics.output
    )
    acl_admin.grant(acls)
    first = article_records(10, prefix="before")
    second = article_records(40, prefix="after")
    await produce(secured.bootstrap_servers, pki, topics.input, first)
    async with running_service(serve_settings(secured, topics, model_dir, pki), predictor) as svc:
        assert len(await read_ids(secured.bootstrap_servers, pki, topics.output, 10)) >= 10
        acl_admin.revoke([write])
        await produce(secured.bootstrap_servers, pki, topics.input, second)
        await refused_until(svc, caplog, f"Write on topic {topics.output!r} denied", count=2)
        acl_admin.grant([write])
        expected = sorted(key.decode() for key, _ in [*first, *second] if key)
        ids = await read_ids(secured.bootstrap_servers, pki, topics.output, len(expected))
        assert sorted(set(ids)) == expected


async def test_the_desk_works_with_exactly_the_documented_acls(
    secured: ApacheKafkaBroker, pki: Pki, acl_admin: AclAdmin, topics: Topics
) -> None:
    """With only the desk's ACLs, the desk follows the classified topic, sees what was
    judged, and publishes a verdict (the reader and the publisher of ``desk``)."""
    feedback = names(topics)["--feedback-topic"]
    acl_admin.create_topics({feedback: 1})
    acl_admin.grant(bound(Mode.DESK, names(topics)))
    article = classified_event("desk-1", "Markets rally", section=("business", 0.55))
    await produce(secured.bootstrap_servers, pki, topics.output, [(b"desk-1", article)])
    settings = DeskSettings(
        bootstrap_servers=secured.bootstrap_servers,
        output_topic=topics.output,
        feedback_topic=feedback,
        **client_settings(pki),
    )
    state = DeskState(max_articles=100, max_verdicts=100)
    stop = asyncio.Event()
    reading = asyncio.create_task(DeskReader(settings, state).run(stop))
    publisher = VerdictPublisher(settings)
    try:
        await wait_for(lambda: state.article("desk-1") is not None, timeout_s=40)
        await publisher.start()
        await publisher.publish(
            ArticleFeedback(
                article_id="desk-1",
                section="world",
                editor="alice",
                corrected_at="2026-12-07T12:00:00Z",
            )
        )
        await wait_for(lambda: state.judged_by("desk-1") == "alice", timeout_s=40)
    finally:
        stop.set()
        await publisher.stop()
        await asyncio.wait_for(reading, 20)
    consumer = AIOKafkaConsumer(
        feedback, **admin_kwargs(secured.bootstrap_servers, pki), auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        batch = await consumer.getmany(timeout_ms=10_000)
    finally:
        await consumer.stop()
    (record,) = [record for records in batch.values() for record in records]
    assert json.loads(record.value)["editor"] == "alice"
