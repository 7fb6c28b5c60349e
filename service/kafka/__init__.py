"""Kafka: clients, the consume-classify-publish pipeline, delivery (plain and
transactional), offsets, replay bounds and the shadow topic."""
