"""OAUTHBEARER against Apache Kafka: tokens from a client credentials endpoint, validated by
the broker against the endpoint's JWKS, short-lived enough to expire during the test.

aiokafka cannot re-authenticate a live connection (KIP-368), so when a token expires the
broker (``connections.max.reauth.ms``) closes the connection; the client reconnects with a
fresh token. That must cost nothing but the reconnect: every article delivered, nothing
duplicated beyond the at-least-once bound.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    KAFKA_VERSION,
    Topics,
    article_records,
    make_settings,
    require_apache_kafka,
    running_service,
    wait_for,
)
from oauth_idp import AUDIENCE, ISSUER, TokenIssuer, serving
from secured_kafka import CLIENT, AclAdmin, Pki, make_pki
from test_secured_kafka import names, produce, read_ids, readyz, refusals

from devtools.apache_kafka import ApacheKafkaBroker, OAuthValidation
from service.kafka.acls import Mode, bound

pytestmark = pytest.mark.kafka

#: Tokens live this long; the broker closes a connection once its token expired.
TOKEN_LIFETIME_S = 6
CLIENT_SECRET = "oauth-client-secret"


@pytest.fixture(scope="module")
def idp() -> Iterator[TokenIssuer]:
    """The token endpoint and JWKS; the client id is the principal the ACLs name."""
    issuer = TokenIssuer({CLIENT: CLIENT_SECRET}, token_lifetime_s=TOKEN_LIFETIME_S)
    with serving(issuer) as running:
        yield running


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def broker(
    pki: Pki, idp: TokenIssuer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApacheKafkaBroker]:
    require_apache_kafka()
    directory = tmp_path_factory.mktemp("oauth-kafka")
    # A session lasts until its token expires (at most 10 minutes), as on managed clusters.
    oauth = OAuthValidation(idp.jwks_url, AUDIENCE, ISSUER, reauth_ms=600_000)
    with ApacheKafkaBroker(
        data_dir=directory / "kafka",
        log_file=directory / "kafka.log",
        version=KAFKA_VERSION,
        security=replace(pki.broker_security(), oauth=oauth),
    ) as running:
        yield running


@pytest.fixture(scope="module")
def acl_admin(broker: ApacheKafkaBroker, pki: Pki) -> Iterator[AclAdmin]:
    admin = AclAdmin(broker.bootstrap_servers, pki)
    yield admin
    admin.close()


@pytest.fixture
def topics(acl_admin: AclAdmin) -> Topics:
    tag = uuid.uuid4().hex[:8]
    made = Topics(f"in-{tag}", f"out-{tag}", f"dlq-{tag}", f"group-{tag}")
    acl_admin.create_topics({made.input: 2, made.output: 2, made.dead_letter: 1})
    return made


def oauth_settings(pki: Pki, idp: TokenIssuer, tmp_path: Path, secret: str) -> dict[str, Any]:
    """The service's connection: mutual TLS, and OAUTHBEARER with credentials from files."""
    return {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "OAUTHBEARER",
        "sasl_oauthbearer_token_endpoint_url": idp.token_url,
        "sasl_oauthbearer_client_id": CLIENT,
        "sasl_oauthbearer_client_secret": secret,
        "ssl_cafile": pki.ca,
        "ssl_certfile": pki.client_cert,
        "ssl_keyfile": pki.client_key,
    }


async def test_expiring_tokens_cost_only_reconnects(
    broker: ApacheKafkaBroker,
    pki: Pki,
    idp: TokenIssuer,
    acl_admin: AclAdmin,
    topics: Topics,
    model_dir: Path,
    predictor: Any,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Articles trickle in for several token lifetimes: the broker drops each connection
    whose token expired, and every article still arrives, none twice."""
    caplog.set_level(logging.INFO, logger="aiokafka.conn")
    acl_admin.grant(bound(Mode.SERVE, names(topics)))
    records = article_records(240, prefix="oauth")
    settings = make_settings(
        broker.bootstrap_servers,
        topics,
        model_dir,
        **oauth_settings(pki, idp, tmp_path, CLIENT_SECRET),
    )
    asked_before = len(idp.requests)
    started = time.monotonic()
    async with running_service(settings, predictor) as service:
        await wait_for(lambda: _ready(service), timeout_s=60)
        logins_when_ready = _logins(caplog)
        for start in range(0, len(records), 12):  # 20 rounds over ~3 token lifetimes
            await produce(broker.bootstrap_servers, pki, topics.input, records[start : start + 12])
            await asyncio.sleep(0.9)
        ids = await read_ids(broker.bootstrap_servers, pki, topics.output, len(records))
        relogins = _logins(caplog) - logins_when_ready
    elapsed = time.monotonic() - started
    counts = Counter(ids)
    assert sorted(counts) == sorted(key.decode() for key, _ in records if key)
    assert max(counts.values()) == 1, [i for i, n in counts.items() if n > 1]
    fetched = len(idp.requests) - asked_before
    assert elapsed > 3 * TOKEN_LIFETIME_S
    assert fetched >= 3, "new tokens were fetched as the old ones expired"
    assert relogins >= 3, "the broker closed connections whose token expired"
    assert all(client == CLIENT for client, _ in idp.requests[asked_before:])


async def test_a_refused_client_secret_is_named_and_retried(
    broker: ApacheKafkaBroker,
    pki: Pki,
    idp: TokenIssuer,
    acl_admin: AclAdmin,
    topics: Topics,
    model_dir: Path,
    predictor: Any,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    acl_admin.grant(bound(Mode.SERVE, names(topics)))
    settings = make_settings(
        broker.bootstrap_servers, topics, model_dir, **oauth_settings(pki, idp, tmp_path, "wrong")
    )
    async with running_service(settings, predictor) as service:
        await wait_for(lambda: len(refusals(caplog)) >= 2, timeout_s=40)
        body = await readyz(service.port)
    assert not body["ready"]
    assert "authentication_failed: SASL OAUTHBEARER: token endpoint" in body["access_denied"]
    assert "HTTP 401 invalid_client" in body["access_denied"]


def _logins(caplog: pytest.LogCaptureFixture) -> int:
    """Connections aiokafka authenticated with a token so far."""
    return sum(r.getMessage() == "Authenticated via OAUTHBEARER" for r in caplog.records)


async def _ready(service: Any) -> bool:
    return bool((await readyz(service.port))["ready"])
