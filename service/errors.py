"""One root for the service's own exceptions."""

from __future__ import annotations


class ServiceError(Exception):
    """Root of the errors the service raises on purpose."""


class BrokerUnavailableError(ServiceError):
    """The broker could not be reached or refused a request; the session is restarted."""


class DeliveryError(ServiceError):
    """A produced record was not acknowledged; nothing past it may be committed."""
