"""Readiness: which of the service's checks pass right now."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Assignment(StrEnum):
    """Where the consumer stands in its group."""

    STOPPED = "stopped"
    WAITING = "waiting_for_assignment"
    ASSIGNED = "assigned"


@dataclass
class Health:
    """Mutable readiness state, written by the runtime and read by ``/readyz``."""

    model_loaded: bool = False
    broker_reachable: bool = False
    assignment: Assignment = Assignment.STOPPED
    broker_error: str | None = None
    #: Why the circuit breaker is open (model failures or a dying worker), else None.
    breaker_open: str | None = None
    #: Why the watchdog found the pipeline stuck (a batch over its time bound), else None.
    stuck: str | None = None
    #: The loaded model, so /readyz shows which one serves (a wrong model is visible).
    model_name: str | None = None
    model_version: str | None = None
    model_sha256: str | None = None
    #: Topics the session needs that the broker does not have (it waits for them).
    missing_topics: tuple[str, ...] = ()
    #: Why the broker refused the service (reason code and what was denied), else None.
    access_denied: str | None = None
    #: Why the Schema Registry last failed to answer (``--schema-registry-url``), else None.
    registry_error: str | None = None

    def checks(self) -> dict[str, bool]:
        """Each readiness check by name, True when it passes."""
        return {
            "model_loaded": self.model_loaded,
            "broker_reachable": self.broker_reachable,
            "consumer_in_group": self.assignment is not Assignment.STOPPED,
            "breaker_closed": self.breaker_open is None,
            "topics_exist": not self.missing_topics,
            "access_granted": self.access_denied is None,
            "schema_registry_reachable": self.registry_error is None,
        }

    def is_ready(self) -> bool:
        """Ready when every check passes."""
        return all(self.checks().values())

    def report(self) -> dict[str, object]:
        """The JSON body of ``/readyz``."""
        checks = self.checks()
        return {
            "ready": all(checks.values()),
            "checks": checks,
            "failing": [name for name, ok in checks.items() if not ok],
            "assignment": self.assignment.value,
            "broker_error": self.broker_error,
            "breaker": self.breaker_open,
            "missing_topics": list(self.missing_topics),
            "access_denied": self.access_denied,
            "registry_error": self.registry_error,
            "model": None
            if self.model_name is None
            else {
                "name": self.model_name,
                "version": self.model_version,
                "sha256": self.model_sha256,
            },
        }

    def is_alive(self) -> bool:
        """Alive unless the watchdog found work stuck past its time bound (``/healthz``)."""
        return self.stuck is None

    def liveness(self) -> dict[str, object]:
        """The JSON body of ``/healthz``."""
        return {"alive": self.is_alive(), "reason": self.stuck}
