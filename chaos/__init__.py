"""Fault-injection tooling for the tests and ``make chaos``: not part of the service."""
