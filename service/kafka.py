"""aiokafka clients configured for at-least-once delivery, from ServiceSettings.

Producer: ``acks="all"``; idempotence off (tansu, the dev broker, has no idempotent
producer); aiokafka keeps at most one request in flight per broker connection, so a
retried batch can never overtake a later one: per-partition order holds on retries.
Consumer: no auto-commit (offsets are committed after the outputs are acknowledged) and
fetch limits large enough to fetch an oversize record whole, so it is dead-lettered instead
of stalling its partition.
"""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.helpers import create_ssl_context

from service.settings import SecurityProtocol, ServiceSettings

#: Room for the record batch header and the record's own headers on top of its value.
_REQUEST_OVERHEAD_BYTES = 64 * 1024


def security_kwargs(settings: ServiceSettings) -> dict[str, Any]:
    """The connection and authentication options shared by every client."""
    kwargs: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "security_protocol": settings.security_protocol.value,
    }
    if settings.security_protocol in {SecurityProtocol.SSL, SecurityProtocol.SASL_SSL}:
        kwargs["ssl_context"] = create_ssl_context(
            cafile=settings.ssl_cafile,
            certfile=settings.ssl_certfile,
            keyfile=settings.ssl_keyfile,
        )
    if settings.sasl_mechanism is not None:
        kwargs["sasl_mechanism"] = settings.sasl_mechanism.value
        kwargs["sasl_plain_username"] = settings.sasl_plain_username
        if settings.sasl_plain_password is not None:
            kwargs["sasl_plain_password"] = settings.sasl_plain_password.get_secret_value()
    return kwargs


def make_producer(settings: ServiceSettings) -> AIOKafkaProducer:
    """One producer for outputs and dead letters."""
    return AIOKafkaProducer(
        **security_kwargs(settings),
        client_id=f"{settings.client_id}-producer",
        acks="all",
        enable_idempotence=False,
        linger_ms=5,
        max_batch_size=256 * 1024,
        # A dead letter forwards an oversize input unchanged: allow the largest record the
        # consumer can fetch. The dead-letter topic's max.message.bytes must allow it too.
        max_request_size=settings.fetch_limit_bytes + _REQUEST_OVERHEAD_BYTES,
        request_timeout_ms=30_000,
        retry_backoff_ms=200,
    )


def make_consumer(settings: ServiceSettings) -> AIOKafkaConsumer:
    """The group consumer; subscribe it with a rebalance listener before starting."""
    return AIOKafkaConsumer(
        **security_kwargs(settings),
        client_id=f"{settings.client_id}-consumer",
        group_id=settings.group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_uncommitted",
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
