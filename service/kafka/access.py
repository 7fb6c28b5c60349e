"""What the broker refused, as a value: authentication, the client certificate, or an ACL.

aiokafka reports a refused SASL login or TLS handshake only in its own log and then raises
``KafkaConnectionError("Unable to bootstrap ...")``, the same error as a broker that is
down. ``explain`` tells them apart: it reads the error chain for the authorization errors
(naming the operation the ACL table says the service needed on that resource), checks the
client certificate's validity dates, and opens one connection itself to see the SASL
answer. ``None`` means a plain broker failure.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import ssl
from collections.abc import Callable, Sequence

from aiokafka.conn import create_conn
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    SaslAuthenticationFailed,
    TopicAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
)
from cryptography import x509

from service.config.options import KafkaConnection, SaslMechanism, SecurityProtocol
from service.core.backoff import Backoff
from service.core.errors import AccessDenied, AccessDeniedError, AccessReason
from service.kafka.acls import Operation, Resource
from service.kafka.clients import security_kwargs
from service.kafka.oauth import TokenEndpointError
from service.kafka.supervisor import Restart

logger = logging.getLogger(__name__)

#: Bounds the extra connection (a shutdown waits for it at most this long).
_PROBE_TIMEOUT_S = 5.0
_HINT = "grant it (docs/security.md lists the ACLs of each mode)"
#: How aiokafka's admin client words a group it may not find the coordinator of.
_COORDINATOR_PREFIX = "Unable to get coordinator id for "


def _denied(operation: Operation, resource: Resource, name: str) -> AccessDenied:
    return AccessDenied(
        AccessReason.AUTHORIZATION_FAILED,
        f"{operation} on {resource} {name!r} denied; {_HINT}",
        operation=operation.value,
        resource_type=resource.value,
        resource=name,
    )


def authorization(error: BaseException, outputs: Sequence[str] = ()) -> AccessDenied | None:
    """The authorization failure in ``error``'s chain, naming the operation and resource
    (a topic among ``outputs`` was denied Write, any other topic Read), else None."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        found = _authorization_one(current, outputs)
        if found is not None:
            return found
        current = current.__cause__ or current.__context__
    return None


def _authorization_one(error: BaseException, outputs: Sequence[str]) -> AccessDenied | None:
    name = str(error.args[0]) if error.args else ""
    if isinstance(error, TopicAuthorizationFailedError):
        operation = Operation.WRITE if name in outputs else Operation.READ
        return _denied(operation, Resource.TOPIC, name)
    if isinstance(error, GroupAuthorizationFailedError):
        return _denied(Operation.READ, Resource.GROUP, name.removeprefix(_COORDINATOR_PREFIX))
    if isinstance(error, TransactionalIdAuthorizationFailed):
        return _denied(Operation.WRITE, Resource.TRANSACTIONAL_ID, name or "(the prefix)")
    if isinstance(error, ClusterAuthorizationFailedError):
        return AccessDenied(
            AccessReason.AUTHORIZATION_FAILED,
            f"IdempotentWrite on cluster denied; {_HINT}",
            operation="IdempotentWrite",
            resource_type="cluster",
            resource="kafka-cluster",
        )
    return None


def certificate_problem(
    settings: KafkaConnection, now: dt.datetime | None = None
) -> AccessDenied | None:
    """The client certificate's validity dates, if they exclude ``now``."""
    path = settings.ssl_certfile
    if path is None or settings.security_protocol not in {
        SecurityProtocol.SSL,
        SecurityProtocol.SASL_SSL,
    }:
        return None
    try:
        certificate = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as error:
        return AccessDenied(
            AccessReason.TLS_CLIENT_CERTIFICATE,
            f"the client certificate {str(path)!r} cannot be read: {error}",
        )
    now = now or dt.datetime.now(dt.UTC)
    after, before = certificate.not_valid_after_utc, certificate.not_valid_before_utc
    if now > after:
        return AccessDenied(
            AccessReason.TLS_CLIENT_CERTIFICATE,
            f"the client certificate {str(path)!r} expired at {after.isoformat()}; renew it"
            " (the file is read again at each retry)",
        )
    if now < before:
        return AccessDenied(
            AccessReason.TLS_CLIENT_CERTIFICATE,
            f"the client certificate {str(path)!r} is not valid before {before.isoformat()}",
        )
    return None


async def login_problem(settings: KafkaConnection) -> AccessDenied | None:
    """One connection to the first bootstrap server, to see whether SASL or TLS refuses
    the service's credentials (aiokafka only logs that)."""
    kwargs = security_kwargs(settings)
    host, _, port = settings.bootstrap_servers.split(",")[0].strip().rpartition(":")
    try:
        conn = await asyncio.wait_for(
            create_conn(
                host or "localhost",
                int(port),
                ssl_context=kwargs.get("ssl_context"),
                security_protocol=kwargs["security_protocol"],
                sasl_mechanism=kwargs.get("sasl_mechanism"),
                sasl_plain_username=kwargs.get("sasl_plain_username"),
                sasl_plain_password=kwargs.get("sasl_plain_password"),
                sasl_oauth_token_provider=kwargs.get("sasl_oauth_token_provider"),
            ),
            _PROBE_TIMEOUT_S,
        )
    except TokenEndpointError as error:
        detail = error.args[0] if error.args else error
        return AccessDenied(AccessReason.AUTHENTICATION_FAILED, f"SASL OAUTHBEARER: {detail}")
    except SaslAuthenticationFailed as error:
        who = (
            "with the token endpoint's token"
            if settings.sasl_mechanism is SaslMechanism.OAUTHBEARER
            else f"of {settings.sasl_plain_username!r}"
        )
        return AccessDenied(
            AccessReason.AUTHENTICATION_FAILED,
            f"SASL {settings.sasl_mechanism} login {who}"
            f" refused: {error.args[0] if error.args else error}",
        )
    except ssl.SSLError as error:
        return AccessDenied(
            AccessReason.TLS_CLIENT_CERTIFICATE,
            f"the TLS handshake failed: {error.reason or error}",
        )
    except (OSError, KafkaConnectionError, TimeoutError, ValueError):
        return None
    conn.close()
    return None


async def explain(
    error: BaseException, settings: KafkaConnection, outputs: Sequence[str] = ()
) -> AccessDenied | None:
    """What the broker refused, if ``error`` is a refusal; None for any other failure."""
    found = authorization(error, outputs)
    if found is not None:
        return found
    if not isinstance(error, KafkaConnectionError):
        return None
    if settings.security_protocol is SecurityProtocol.PLAINTEXT:
        return None  # nothing to refuse: the broker is down or unreachable
    return certificate_problem(settings) or await login_problem(settings)


async def raise_denied(
    error: BaseException, settings: KafkaConnection, outputs: Sequence[str] = ()
) -> None:
    """Raise ``AccessDeniedError`` from ``error`` if the broker refused the service."""
    denied = await explain(error, settings, outputs)
    if denied is not None:
        raise AccessDeniedError(denied) from error


#: A refused login or ACL is fixed by a person: retried less often, up to twice a minute.
ACCESS_BACKOFF_INITIAL_S = 1.0
ACCESS_BACKOFF_MAX_S = 30.0


def access_backoff() -> Backoff:
    """The delays between sessions the broker refused; equal jitter, so they surely grow."""
    return Backoff(ACCESS_BACKOFF_INITIAL_S, ACCESS_BACKOFF_MAX_S, full_jitter=False)


def access_restart(backoff: Backoff, *, then: Callable[[Exception], None] | None = None) -> Restart:
    """The restart of a session the broker refused: one log line naming the refusal (its
    reason code, operation and resource as fields), a backoff no session start resets
    (a denied write fails each session right after its start) that starts over after a
    quiet spell."""
    return Restart(
        (AccessDeniedError,),
        "access_denied",
        backoff,
        message=lambda error: f"the broker refused the service: {error}",
        then=then,
        details=lambda error: error.denied.fields() if isinstance(error, AccessDeniedError) else {},
        quiet_reset_s=2 * ACCESS_BACKOFF_MAX_S,
    )
