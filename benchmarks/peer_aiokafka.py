"""The classification job as plain aiokafka loops, and the pass-through I/O ceiling.

Peers of the service for ``bench_service.py``, each written the way aiokafka's own
documentation shows its consumer and producer (``docs/consumer.rst``, manual commit):

- ``aiokafka``: ``async for`` over the consumer, one ``predict`` per record,
  ``send_and_wait`` the output, commit. Per message, as most hand-written consumers are.
- ``getmany``: ``getmany`` a batch, decode it, one ``predict`` call, ``send`` every output,
  wait for all acknowledgements, commit.
- ``passthrough``: ``getmany``, send each record's value unchanged, wait, commit: no
  decoding and no model, so its rate is what Kafka I/O in Python allows on this machine.

All commit after the outputs are acknowledged (at least once, as the service). They decode
with ``schemas.decode_article`` and encode with ``schemas.encode_classified``, the
service's own contract; a record that does not decode is logged and skipped (the peers
have no dead-letter topic: the benchmark's input is all valid).
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from peer_config import PeerConfig

from model import Predictor
from schemas import ArticleEvent, decode_article, encode_classified, utc_now_rfc3339

logger = logging.getLogger(__name__)


def _consumer(config: PeerConfig) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        config.input_topic,
        bootstrap_servers=config.bootstrap_servers,
        group_id=config.group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=config.fetch_max_wait_ms,
    )


async def per_message(config: PeerConfig, predictor: Predictor) -> None:
    """``async for`` + ``send_and_wait`` + commit, one record at a time (until cancelled)."""
    consumer = _consumer(config)
    producer = AIOKafkaProducer(bootstrap_servers=config.bootstrap_servers)
    await consumer.start()
    await producer.start()
    try:
        async for record in consumer:
            event = decode_article(record.value)
            if isinstance(event, ArticleEvent):
                (classification,) = predictor.predict([event])
                value = encode_classified(event, classification, utc_now_rfc3339())
                await producer.send_and_wait(config.output_topic, value, key=record.key)
            else:
                logger.warning("skipped offset %d: %s", record.offset, event.message)
            await consumer.commit()
    finally:
        await consumer.stop()
        await producer.stop()


async def batches(config: PeerConfig, predictor: Predictor) -> None:
    """``getmany`` -> one ``predict`` -> ``send`` each -> wait -> commit (until cancelled)."""
    consumer = _consumer(config)
    producer = AIOKafkaProducer(bootstrap_servers=config.bootstrap_servers)
    await consumer.start()
    await producer.start()
    try:
        while True:
            fetched = await consumer.getmany(timeout_ms=1000, max_records=config.batch_size)
            records = [record for partition in fetched.values() for record in partition]
            if not records:
                continue
            keys: list[bytes | None] = []
            events: list[ArticleEvent] = []
            for record in records:
                event = decode_article(record.value)
                if isinstance(event, ArticleEvent):
                    keys.append(record.key)
                    events.append(event)
                else:
                    logger.warning("skipped offset %d: %s", record.offset, event.message)
            stamp = utc_now_rfc3339()
            sends = [
                await producer.send(
                    config.output_topic, encode_classified(event, classification, stamp), key=key
                )
                for key, event, classification in zip(
                    keys, events, predictor.predict(events), strict=True
                )
            ]
            await asyncio.gather(*sends)
            await consumer.commit()
    finally:
        await consumer.stop()
        await producer.stop()


async def passthrough(config: PeerConfig, predictor: Predictor | None = None) -> None:
    """``getmany`` -> send each value unchanged -> wait -> commit: the I/O ceiling."""
    del predictor  # the same signature as the peers; no model here
    consumer = _consumer(config)
    producer = AIOKafkaProducer(bootstrap_servers=config.bootstrap_servers)
    await consumer.start()
    await producer.start()
    try:
        while True:
            fetched = await consumer.getmany(timeout_ms=1000, max_records=config.batch_size)
            sends = [
                await producer.send(config.output_topic, record.value, key=record.key)
                for partition in fetched.values()
                for record in partition
            ]
            if sends:
                await asyncio.gather(*sends)
                await consumer.commit()
    finally:
        await consumer.stop()
        await producer.stop()
