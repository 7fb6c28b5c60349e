"""One root for the service's own exceptions."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class ServiceError(Exception):
    """Root of the errors the service raises on purpose."""


class BrokerUnavailableError(ServiceError):
    """The broker could not be reached or refused a request; the session is restarted."""


class DeliveryError(ServiceError):
    """A produced record was not acknowledged; nothing past it may be committed."""


class BreakerOpenError(ServiceError):
    """Too many articles failed in the model: nothing of the batch is published; the
    session closes and is retried from the last commit after a growing delay."""


class WorkerUnstableError(ServiceError):
    """The classification worker process keeps dying on single articles in a row: the
    cause is not the input (out of memory, a broken install), so no dead letters."""


class TransactionsUnsupportedError(ServiceError):
    """Exactly-once was asked for and the broker has no transactions: a configuration
    error, not retried (the service exits with status 2)."""


class GroupJoinStuckError(ServiceError):
    """The consumer has been (re)joining its group for longer than any healthy rebalance
    takes (twice the rebalance timeout plus the session timeout) with no assignment: the
    session restarts with a new member id. Seen with a coordinator that kept a departed
    member as the group's leader, so the remaining member's SyncGroup never completed."""

    def __init__(self, joining_s: float, bound_s: float) -> None:
        self.joining_s = joining_s
        self.bound_s = bound_s
        super().__init__(
            f"no partition assignment after {joining_s:.0f} s of (re)joining the group"
            f" (bound {bound_s:g} s): restarting the session with a new member"
        )


class MissingTopicError(ServiceError):
    """A topic the session consumes does not exist (topics are not created automatically):
    not ready, and checked again after a growing delay."""

    def __init__(self, topics: list[str]) -> None:
        self.topics = topics
        names = ", ".join(repr(topic) for topic in topics)
        super().__init__(
            f"topic {names} does not exist on the broker; create it (the service does not"
            " create topics) and the service starts consuming by itself"
        )


class AccessReason(StrEnum):
    """Why the broker refused the service: the reason code of an ``AccessDenied``."""

    #: SASL refused the user name or password.
    AUTHENTICATION_FAILED = "authentication_failed"
    #: The TLS handshake failed on the client's certificate (expired, not yet valid,
    #: not trusted by the broker).
    TLS_CLIENT_CERTIFICATE = "tls_client_certificate"
    #: Authenticated, but no ACL allows an operation the service needs.
    AUTHORIZATION_FAILED = "authorization_failed"


@dataclass(frozen=True)
class AccessDenied:
    """The broker's refusal as a value: the reason code and what was refused (for an
    authorization failure: the operation, the resource type and its name)."""

    reason: AccessReason
    detail: str
    operation: str | None = None
    resource_type: str | None = None
    resource: str | None = None

    def __str__(self) -> str:
        return f"{self.reason.value}: {self.detail}"

    def fields(self) -> dict[str, str]:
        """The log fields: the reason code and, when known, what was denied."""
        named = {
            "reason": self.reason.value,
            "operation": self.operation,
            "resource_type": self.resource_type,
            "resource": self.resource,
        }
        return {key: value for key, value in named.items() if value is not None}


class AccessDeniedError(ServiceError):
    """The broker refused the service's credentials or an operation: not ready, retried
    after a growing delay (credentials, certificates and ACLs get fixed while it waits)."""

    def __init__(self, denied: AccessDenied) -> None:
        self.denied = denied
        super().__init__(str(denied))


class RegistryUnavailableError(ServiceError):
    """The Schema Registry did not answer, or refused a request it should have granted
    (authentication, a schema it will not register): the session ends and is retried from
    the last commit after a growing delay, so no record is dead-lettered for it."""
