"""HTTP: the metrics and health server, and the suggest API with its OpenAPI document."""
