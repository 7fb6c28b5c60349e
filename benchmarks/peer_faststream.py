"""The classification job as FastStream apps, written the way FastStream's documentation shows.

Two peers of the service for ``bench_service.py --peers``:

- ``faststream``: ``@broker.subscriber`` + ``@broker.publisher``; the handler takes one
  ``ArticleEvent`` (FastStream parses and validates it with pydantic) and returns the output
  record, which the publisher decorator sends (and waits for) before the offset is committed.
- ``faststream-batch``: the same with the batch subscriber (``batch=True``): the handler
  takes ``list[ArticleEvent]`` (one partition's fetch), classifies the list with one
  ``predict`` call and returns a tuple of messages for a batch publisher. FastStream sends
  that tuple as one producer batch to one partition: each output keeps its key, but the
  outputs of one batch share a partition whatever their keys (the service's outputs go to
  their key's partition), and a tuple larger than the producer's ``max_batch_size`` fails
  as a whole (raised here to 1 MiB).

Both use ``AckPolicy.ACK`` with a consumer group, which FastStream's docs give for
at-least-once consumption (the offset is committed after the handler and its publishing):
the service's own guarantee, so the comparison is of the same job. Access logs go to DEBUG
(the broker's ``log_level``), as the service runs at WARNING in the benchmark. The model
is ``model.Predictor`` and the output bytes are ``schemas.encode_classified``'s, as in the
service; the key of each output is the article id (the contract's key).
"""

from __future__ import annotations

import logging

from faststream import AckPolicy, FastStream
from faststream.kafka import KafkaBroker, KafkaPublishMessage, KafkaResponse
from peer_config import PeerConfig

from model import Predictor
from schemas import ArticleEvent, encode_classified, utc_now_rfc3339


def per_message_app(config: PeerConfig, predictor: Predictor) -> FastStream:
    """One ``ArticleEvent`` in, one classified record out, per message."""
    broker = KafkaBroker(config.bootstrap_servers, log_level=logging.DEBUG)

    @broker.subscriber(
        config.input_topic,
        group_id=config.group_id,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=config.fetch_max_wait_ms,
        ack_policy=AckPolicy.ACK,
    )
    @broker.publisher(config.output_topic)
    async def classify(event: ArticleEvent) -> KafkaResponse:
        (classification,) = predictor.predict([event])
        body = encode_classified(event, classification, utc_now_rfc3339())
        return KafkaResponse(body, key=event.article_id.encode())

    return FastStream(broker)


def batch_app(config: PeerConfig, predictor: Predictor) -> FastStream:
    """A fetched list of ``ArticleEvent`` in, one ``predict`` call, a batch published."""
    # A batch publisher sends one producer batch: with the default max_batch_size (16 KiB)
    # a few Reuters-length outputs overflow it (BatchBufferOverflowException). 1 MiB holds
    # ``batch_size`` outputs and stays within the default max_request_size.
    broker = KafkaBroker(
        config.bootstrap_servers, log_level=logging.DEBUG, max_batch_size=1024 * 1024
    )

    @broker.subscriber(
        config.input_topic,
        batch=True,
        group_id=config.group_id,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=config.fetch_max_wait_ms,
        ack_policy=AckPolicy.ACK,
        max_records=config.batch_size,
    )
    @broker.publisher(config.output_topic, batch=True)
    async def classify(events: list[ArticleEvent]) -> tuple[KafkaPublishMessage, ...]:
        stamp = utc_now_rfc3339()
        return tuple(
            KafkaPublishMessage(
                encode_classified(event, classification, stamp), key=event.article_id.encode()
            )
            for event, classification in zip(events, predictor.predict(events), strict=True)
        )

    return FastStream(broker)
