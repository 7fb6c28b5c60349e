"""Observing the service: Prometheus metrics, drift signals, shadow metrics, health and
readiness, structured logs."""
