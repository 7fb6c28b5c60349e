"""aiokafka clients configured for at-least-once delivery, from a command's settings.

Producer: ``acks="all"``; idempotent when the connected broker supports it (checked at each
start: its ApiVersions must list InitProducerId and a probe InitProducerId must succeed;
Apache Kafka does, tansu, the dev broker, lists it but fails it), so a retried batch is
never written twice; either way aiokafka keeps at most one request in flight per broker
connection, so a retried batch can never overtake a later one: per-partition order holds on
retries. Outputs and dead letters are compressed as ``--compression-type`` says.
Consumer: no auto-commit (offsets are committed after the outputs are acknowledged) and
fetch limits large enough to fetch an oversize record whole, so it is dead-lettered instead
of stalling its partition.
Limits: ``topic_message_limits`` reads the output topics' ``max.message.bytes`` at session
start so an output that cannot fit is dead-lettered before it is produced.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaClient, AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError, TopicAuthorizationFailedError, for_code
from aiokafka.helpers import create_ssl_context
from aiokafka.producer.transaction_manager import TransactionManager
from aiokafka.protocol.admin import ApiVersionRequest
from aiokafka.protocol.metadata import MetadataRequest
from aiokafka.protocol.transaction import InitProducerIdRequest

from service.config.commands import (
    PipelineSettings,
    ServeSettings,
)
from service.config.options import (
    CompressionType,
    KafkaConnection,
    SaslMechanism,
    SecurityProtocol,
    client_keywords,
)
from service.kafka.oauth import token_provider

logger = logging.getLogger(__name__)

#: Room for the record batch header and the record's own headers on top of its value.
_REQUEST_OVERHEAD_BYTES = 64 * 1024


def security_kwargs(settings: KafkaConnection) -> dict[str, Any]:
    """The connection and authentication options shared by every client, with the
    ``--kafka-client-options`` every client accepts."""
    kwargs: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "security_protocol": settings.security_protocol.value,
        **client_options(settings, "AIOKafkaClient"),
    }
    if settings.security_protocol in {SecurityProtocol.SSL, SecurityProtocol.SASL_SSL}:
        kwargs["ssl_context"] = ssl_context(settings)
    if settings.sasl_mechanism is not None:
        kwargs["sasl_mechanism"] = settings.sasl_mechanism.value
        kwargs["sasl_plain_username"] = settings.sasl_plain_username
        if settings.sasl_plain_password is not None:
            kwargs["sasl_plain_password"] = settings.sasl_plain_password.get_secret_value()
        if settings.sasl_mechanism is SaslMechanism.OAUTHBEARER:
            kwargs["sasl_oauth_token_provider"] = token_provider(settings)
    return kwargs


def ssl_context(settings: KafkaConnection) -> ssl.SSLContext:
    """The TLS context of every client: the CA, the client certificate and its key (and
    the key's password), hostname verification unless turned off."""
    password = settings.ssl_key_password
    context: ssl.SSLContext = create_ssl_context(
        cafile=settings.ssl_cafile,
        certfile=settings.ssl_certfile,
        keyfile=settings.ssl_keyfile,
        password=None if password is None else password.get_secret_value(),
    )
    context.check_hostname = settings.ssl_check_hostname
    return context


def client_options(settings: KafkaConnection, client: str) -> dict[str, Any]:
    """The ``--kafka-client-options`` the aiokafka class named ``client`` accepts, beyond
    those every client accepts (which ``security_kwargs`` already passes)."""
    accepted = client_keywords(client)
    if client != "AIOKafkaClient":
        accepted = accepted - client_keywords("AIOKafkaClient")
    return {key: value for key, value in settings.kafka_client_options.items() if key in accepted}


def make_producer(settings: PipelineSettings) -> AIOKafkaProducer:
    """One producer for outputs and dead letters; idempotent where the broker allows."""
    return ServiceProducer(
        **_producer_options(settings),
        client_id=f"{settings.client_id}-producer",
        enable_idempotence=False,
    )


def _producer_options(settings: PipelineSettings) -> dict[str, Any]:
    """What the plain and the transactional producers share."""
    compression = settings.compression_type
    return {
        **security_kwargs(settings),
        **client_options(settings, "AIOKafkaProducer"),
        "acks": "all",
        "compression_type": None if compression is CompressionType.NONE else compression.value,
        "linger_ms": 5,
        "max_batch_size": 256 * 1024,
        # A dead letter forwards an oversize input unchanged: allow the largest record the
        # consumer can fetch. The dead-letter topic's max.message.bytes must allow it too.
        "max_request_size": settings.fetch_limit_bytes + _REQUEST_OVERHEAD_BYTES,
        "request_timeout_ms": 30_000,
        "retry_backoff_ms": 200,
    }


#: How long a transaction may stay open before the coordinator aborts it (Kafka's default).
TRANSACTION_TIMEOUT_MS = 60_000


def make_transactional_producer(settings: ServeSettings, topic: str, partition: int) -> Any:
    """The producer of one input partition's transactions (exactly-once); ``start()`` fences
    any earlier producer with the same transactional id and completes its open transaction."""
    return AIOKafkaProducer(
        **_producer_options(settings),
        client_id=f"{settings.client_id}-producer-{partition}",
        transactional_id=settings.transactional_id(topic, partition),
        transaction_timeout_ms=TRANSACTION_TIMEOUT_MS,
    )


def make_consumer(settings: PipelineSettings) -> AIOKafkaConsumer:
    """The group consumer; subscribe it with a rebalance listener before starting."""
    return AIOKafkaConsumer(
        **security_kwargs(settings),
        **client_options(settings, "AIOKafkaConsumer"),
        client_id=f"{settings.client_id}-consumer",
        group_id=settings.consumer_group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        # Exactly-once reads committed input only: an aborted upstream write is not an input.
        isolation_level="read_committed" if settings.exactly_once else "read_uncommitted",
        max_poll_records=settings.batch_size,
        max_partition_fetch_bytes=settings.fetch_limit_bytes,
        fetch_max_bytes=max(52_428_800, settings.fetch_limit_bytes),
        fetch_max_wait_ms=max(10, settings.batch_max_wait_ms),
        retry_backoff_ms=200,
        session_timeout_ms=settings.session_timeout_ms,
        heartbeat_interval_ms=max(500, settings.session_timeout_ms // 5),
        # A revoked partition's in-flight work is drained in the rebalance listener: give
        # the drain as long as a shutdown's.
        rebalance_timeout_ms=int(settings.shutdown_timeout_s * 1000),
        # Classification is off the event loop and bounded, so a long gap between polls
        # means something is wrong: leave the group and let the others take over.
        max_poll_interval_ms=300_000,
    )


#: How long the session start waits for the broker to describe the topics' limits.
_DESCRIBE_TIMEOUT_S = 10.0
_MAX_MESSAGE_BYTES = "max.message.bytes"


async def topic_message_limits(
    settings: PipelineSettings, topics: Sequence[str]
) -> dict[str, int | None]:
    """Each topic's ``max.message.bytes`` as the broker describes it, or None for a topic
    whose limit it does not report (tansu does not answer describe-configs at all)."""
    limits: dict[str, int | None] = dict.fromkeys(topics)
    admin = AIOKafkaAdminClient(
        **security_kwargs(settings), client_id=f"{settings.client_id}-admin"
    )
    try:
        await asyncio.wait_for(admin.start(), _DESCRIBE_TIMEOUT_S)
        resources = [
            ConfigResource(ConfigResourceType.TOPIC, topic, {_MAX_MESSAGE_BYTES: None})
            for topic in topics
        ]
        responses = await asyncio.wait_for(admin.describe_configs(resources), _DESCRIBE_TIMEOUT_S)
    except (KafkaError, OSError, TimeoutError) as error:
        logger.warning(
            "the broker did not describe the topics' max.message.bytes; using the fallback",
            extra={"topics": list(topics), "error": repr(error)},
        )
        return limits
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(admin.close(), _DESCRIBE_TIMEOUT_S)
    for response in responses:
        for resource in response.resources:
            error_code, _, _, name, entries = resource[:5]
            if error_code or name not in limits:
                continue
            for entry in entries:
                if entry[0] == _MAX_MESSAGE_BYTES and entry[1] and str(entry[1]).isdigit():
                    limits[name] = int(entry[1])
    return limits


#: Kafka API key of InitProducerId, which an idempotent producer needs.
_INIT_PRODUCER_ID = 22
_PROBE_ATTEMPTS = 20
_PROBE_BACKOFF_S = 0.25
#: aiokafka's "no transactional id" and "no transaction timeout" for a plain idempotent producer.
_NO_TRANSACTION_TIMEOUT_MS = 2_147_483_647


class ServiceProducer(AIOKafkaProducer):  # type: ignore[misc]  # aiokafka has no type hints
    """An AIOKafkaProducer that turns idempotence on at start when the broker supports it."""

    idempotent: bool = False

    async def start(self) -> None:
        await self.client.bootstrap()
        reason = await idempotence_unsupported(self.client)
        if reason is None:
            _enable_idempotence(self)
            logger.info("producer idempotence on", extra={"idempotent": True})
        else:
            logger.info(
                "producer idempotence off: the broker does not support it",
                extra={"idempotent": False, "reason": reason},
            )
        await super().start()


def _enable_idempotence(producer: ServiceProducer) -> None:
    """What ``AIOKafkaProducer(enable_idempotence=True)`` sets up (acks is already "all"):
    one transaction manager, without a transactional id, shared by accumulator and sender.
    Done before the sender starts, so the producer id is fetched before the first send."""
    manager = TransactionManager(None, _NO_TRANSACTION_TIMEOUT_MS)
    producer._txn_manager = manager
    producer._message_accumulator._txn_manager = manager
    producer._sender._txn_manager = manager
    producer.idempotent = True


async def idempotence_unsupported(client: AIOKafkaClient) -> str | None:
    """None when the broker behind ``client`` (bootstrapped) gives idempotent producers an
    id; otherwise why not. A retriable error that outlasts the probe is raised."""
    node_id = client.get_random_node()
    versions = await client.send(node_id, ApiVersionRequest())
    if _INIT_PRODUCER_ID not in {api_key for api_key, *_ in versions.api_versions}:
        return "ApiVersions does not list InitProducerId"
    for _ in range(_PROBE_ATTEMPTS):
        response = await client.send(
            node_id, InitProducerIdRequest(None, _NO_TRANSACTION_TIMEOUT_MS)
        )
        error = for_code(response.error_code)
        if response.error_code == 0 and response.producer_id >= 0:
            return None
        if not error.retriable:
            return f"InitProducerId failed: {error.__name__} ({response.error_code})"
        await asyncio.sleep(_PROBE_BACKOFF_S)
    raise KafkaError(f"InitProducerId kept failing with {error.__name__}; retrying later")


#: The APIs a transactional producer needs besides InitProducerId: AddPartitionsToTxn,
#: AddOffsetsToTxn, EndTxn, TxnOffsetCommit.
_TRANSACTION_APIS = {
    24: "AddPartitionsToTxn",
    25: "AddOffsetsToTxn",
    26: "EndTxn",
    28: "TxnOffsetCommit",
}


async def transactions_unsupported(settings: PipelineSettings) -> str | None:
    """None when the broker supports transactions; otherwise why not. Checked like
    idempotence: ApiVersions must list the transaction APIs, and a probe InitProducerId must
    succeed (tansu lists it but fails it). A broker that cannot be reached raises."""
    client = AIOKafkaClient(**security_kwargs(settings), client_id=f"{settings.client_id}-probe")
    try:
        await client.bootstrap()
        versions = await client.send(client.get_random_node(), ApiVersionRequest())
        listed = {api_key for api_key, *_ in versions.api_versions}
        missing = [name for key, name in sorted(_TRANSACTION_APIS.items()) if key not in listed]
        if missing:
            return f"ApiVersions does not list {', '.join(missing)}"
        return await idempotence_unsupported(client)
    finally:
        await client.close()


async def missing_topics(settings: ServeSettings, topics: Sequence[str]) -> list[str]:
    """The ``topics`` the broker's metadata does not list, in the given order.

    Checked before subscribing: a consumer subscribed to a topic that does not exist waits
    inside ``start()`` for the request timeout (40 s), deaf to a shutdown, and aiokafka logs
    an error every retry. A broker that cannot be reached raises; a topic the service may not
    describe (no ACL) raises ``TopicAuthorizationFailedError`` naming it, not "missing"."""
    client = AIOKafkaClient(**security_kwargs(settings), client_id=f"{settings.client_id}-meta")
    try:
        await client.bootstrap()
        listed = (await client.fetch_all_metadata()).topics()
        unlisted = [topic for topic in topics if topic not in listed]
        await raise_unauthorized(client, unlisted)
        return unlisted
    finally:
        await client.close()


async def raise_unauthorized(client: AIOKafkaClient, topics: Sequence[str]) -> None:
    """``TopicAuthorizationFailedError`` for the first of ``topics`` the principal may not
    describe. Metadata of all topics leaves those out as if they did not exist; asked by
    name, the broker says which are not authorized."""
    if not topics:
        return
    # Never True: asked by name, a broker with auto.create.topics.enable creates the topic.
    request = MetadataRequest(list(topics), allow_auto_topic_creation=False)
    answer = await client.send(client.get_random_node(), request)
    for topic_data in answer.topics:
        error_code, topic = topic_data[0], topic_data[1]
        if error_code == TopicAuthorizationFailedError.errno:
            raise TopicAuthorizationFailedError(topic)


async def start_unless_stopped(
    client: AIOKafkaConsumer, stop: asyncio.Event, *, within_s: float | None = None
) -> bool:
    """``await client.start()``, abandoned when ``stop`` is set first (joining a group can
    wait on the broker for its request timeout); True when the client started. Past
    ``within_s`` the start is abandoned too and TimeoutError raised."""
    starting = asyncio.ensure_future(client.start())
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait(
            {starting, stopping}, timeout=within_s, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        stopping.cancel()
    if starting.done():
        starting.result()  # raises the start's error
        return True
    starting.cancel()
    with contextlib.suppress(asyncio.CancelledError, KafkaError):
        await starting
    if not stop.is_set():
        raise TimeoutError(f"the consumer did not start within {within_s:g} s")
    return False
