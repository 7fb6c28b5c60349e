"""Refusals as values: what the broker refused is named from the error, the certificate's
dates and the restart rules, without a broker."""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import logging
from pathlib import Path

import pytest
from aiokafka.errors import (
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    TopicAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
)
from secured_kafka import make_pki

from service.config.commands import ServeSettings
from service.core.backoff import Backoff
from service.core.errors import AccessReason, DeliveryError
from service.kafka.access import authorization, certificate_problem
from service.kafka.publish import Sent
from service.kafka.supervisor import Restart


def test_a_denied_write_is_named_through_the_delivery_error() -> None:
    """A topic refused behind a DeliveryError is Write on that output topic."""
    try:
        try:
            raise TopicAuthorizationFailedError("out")
        except TopicAuthorizationFailedError as cause:
            raise DeliveryError("a record was not acknowledged") from cause
    except DeliveryError as error:
        denied = authorization(error, outputs=["out", "dlq"])
    assert denied is not None
    assert denied.reason is AccessReason.AUTHORIZATION_FAILED
    assert (denied.operation, denied.resource_type, denied.resource) == ("Write", "topic", "out")
    assert str(denied).startswith("authorization_failed: Write on topic 'out' denied")


@pytest.mark.parametrize(
    ("error", "named"),
    [
        (TopicAuthorizationFailedError("in"), "Read on topic 'in'"),
        (GroupAuthorizationFailedError("g"), "Read on group 'g'"),
        (TransactionalIdAuthorizationFailed("g-in-0"), "Write on transactional-id 'g-in-0'"),
    ],
)
def test_each_authorization_error_names_operation_and_resource(
    error: Exception, named: str
) -> None:
    """Input topics are Read, groups Read, transactional ids Write."""
    denied = authorization(error, outputs=["out"])
    assert denied is not None
    assert named in str(denied)


def test_a_connection_failure_is_no_authorization_failure() -> None:
    """A broker that is down is not a refusal."""
    assert authorization(KafkaConnectionError("Unable to bootstrap")) is None


def test_an_expired_client_certificate_is_named_with_its_date(tmp_path: Path) -> None:
    """The certificate's own dates tell an expired one (the broker only closes)."""
    pki = make_pki(tmp_path)
    settings = ServeSettings(
        security_protocol="SSL", ssl_cafile=pki.ca, ssl_certfile=pki.expired_cert,
        ssl_keyfile=pki.expired_key, feedback_topic="", model=tmp_path,
    )  # fmt: skip
    denied = certificate_problem(settings)
    assert denied is not None
    assert denied.reason is AccessReason.TLS_CLIENT_CERTIFICATE
    assert "expired at" in str(denied)
    assert str(pki.expired_cert) in str(denied)
    current = settings.model_copy(update={"ssl_certfile": pki.client_cert})
    assert certificate_problem(current) is None
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=30)
    assert certificate_problem(current, now=later) is not None


def test_a_refusal_after_a_quiet_spell_starts_the_delays_over() -> None:
    """Delays grow while refusals follow each other, and start over after a quiet spell."""
    restart = Restart(
        (Exception,), "access_denied", Backoff(1.0, 30.0, full_jitter=False, uniform=max),
        message="m", quiet_reset_s=60.0,
    )  # fmt: skip
    assert [restart.next_delay(t) for t in (0.0, 1.0, 3.0, 7.0)] == [1.0, 2.0, 4.0, 8.0]
    assert restart.next_delay(100.0) == 1.0


async def test_a_batch_future_failing_unawaited_logs_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A queued batch whose session ended before it was confirmed fails quietly."""
    future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
    Sent(future, "out", 0, [], 0)
    future.set_exception(TopicAuthorizationFailedError("out"))
    await asyncio.sleep(0)
    del future
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        gc.collect()
    assert not [r for r in caplog.records if "never retrieved" in r.getMessage()]
