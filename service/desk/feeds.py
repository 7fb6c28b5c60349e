"""The desk's Kafka side: follow the classified and feedback topics, publish verdicts.

The reader is one consumer without a group (nothing committed, nothing to rebalance): at
each start it is assigned every partition of both topics and goes back at most
``--desk-max-articles`` records per classified partition and ``--desk-max-verdicts`` per
feedback partition, so a restarted desk shows the recent past at once. A record it cannot
read is logged and skipped (the service dead-letters the feedback ones). Broker trouble
ends the session; it starts again after a capped, jittered backoff until the desk stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from schemas import ArticleFeedback, ClassifiedArticleEvent, DecodeError, decode_feedback
from service.config.commands import DeskSettings
from service.core.backoff import Backoff
from service.desk.state import DeskState
from service.kafka.clients import client_options, security_kwargs

logger = logging.getLogger(__name__)

_POLL_MS = 300
_MAX_RECORDS = 500
_ASSIGN_TIMEOUT_S = 30.0
_SEND_TIMEOUT_S = 15.0


class DeskReader:
    """``await DeskReader(settings, state).run(stop)``: keep ``state`` current."""

    def __init__(self, settings: DeskSettings, state: DeskState) -> None:
        self._settings = settings
        self._state = state
        #: Set once both topics are assigned and read up to where they were at the start.
        self.caught_up = asyncio.Event()
        self.running = False

    async def run(self, stop: asyncio.Event) -> None:
        backoff = Backoff(0.5, 10.0)
        while not stop.is_set():
            try:
                await self._session(stop, backoff)
            except (KafkaError, OSError, TimeoutError) as error:
                logger.warning("desk reader lost the broker", extra={"error": repr(error)})
            except Exception:
                logger.exception("desk reader failed")
            self.running = False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), backoff.delay())

    async def _session(self, stop: asyncio.Event, backoff: Backoff) -> None:
        settings = self._settings
        topics = (settings.output_topic, settings.feedback_topic)
        consumer = AIOKafkaConsumer(
            **security_kwargs(settings),
            **client_options(settings, "AIOKafkaConsumer"),
            client_id=f"{settings.client_id}-desk",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=_MAX_RECORDS,
        )
        await consumer.start()
        try:
            await self._wait_for_topics(consumer, topics, stop)
            if stop.is_set():
                return
            # Subscribed without a group: every partition is assigned once the metadata
            # of the topics arrives.
            consumer.subscribe(list(topics))
            assigned = await _assignment(consumer)
            await self._go_back(consumer, assigned)
            self.running = True
            backoff.reset()
            while not stop.is_set():
                fetched = await consumer.getmany(timeout_ms=_POLL_MS)
                for tp, records in fetched.items():
                    for record in records:
                        self._dispatch(tp.topic, record)
                if not fetched:
                    self.caught_up.set()
        finally:
            await consumer.stop()

    async def _wait_for_topics(
        self, consumer: AIOKafkaConsumer, topics: tuple[str, ...], stop: asyncio.Event
    ) -> None:
        while not stop.is_set():
            missing = sorted(set(topics) - set(await consumer.topics()))
            if not missing:
                return
            logger.warning("desk topics missing; waiting", extra={"topics": missing})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 5.0)

    async def _go_back(self, consumer: AIOKafkaConsumer, assigned: list[TopicPartition]) -> None:
        begins = await consumer.beginning_offsets(assigned)
        ends = await consumer.end_offsets(assigned)
        for tp in assigned:
            back = (
                self._state.max_articles
                if tp.topic == self._settings.output_topic
                else self._state.max_verdicts
            )
            consumer.seek(tp, max(begins[tp], ends[tp] - back))

    def _dispatch(self, topic: str, record: Any) -> None:
        if topic == self._settings.output_topic:
            try:
                event = ClassifiedArticleEvent.model_validate_json(record.value or b"")
            except ValidationError as error:
                logger.warning(
                    "classified record unreadable; skipped",
                    extra={
                        "partition": record.partition,
                        "offset": record.offset,
                        "error": error.errors()[0]["msg"] if error.errors() else "invalid",
                    },
                )
                return
            self._state.add_article(event)
            return
        feedback = decode_feedback(record.value)
        if isinstance(feedback, DecodeError):
            logger.info(
                "feedback record unreadable; skipped",
                extra={
                    "partition": record.partition,
                    "offset": record.offset,
                    "reason": feedback.reason.value,
                },
            )
            return
        self._state.add_verdict(feedback)


async def _assignment(consumer: AIOKafkaConsumer) -> list[TopicPartition]:
    deadline = time.monotonic() + _ASSIGN_TIMEOUT_S
    while not (assigned := sorted(consumer.assignment())):
        if time.monotonic() > deadline:
            raise TimeoutError(f"no partitions assigned within {_ASSIGN_TIMEOUT_S} s")
        await asyncio.sleep(0.05)
    return assigned


class VerdictPublisher:
    """Publishes one ``ArticleFeedback`` per verdict, keyed by the article id, and waits
    for the broker's acknowledgement (acks=all)."""

    def __init__(self, settings: DeskSettings) -> None:
        self._topic = settings.feedback_topic
        self._producer = AIOKafkaProducer(
            **security_kwargs(settings),
            **client_options(settings, "AIOKafkaProducer"),
            client_id=f"{settings.client_id}-desk-producer",
            acks="all",
            linger_ms=0,
            request_timeout_ms=int(_SEND_TIMEOUT_S * 1000),
        )
        self._started = False

    async def start(self) -> None:
        try:
            await self._producer.start()
        except BaseException:
            await self._producer.stop()
            raise
        self._started = True

    async def stop(self) -> None:
        if self._started:
            self._started = False
            await self._producer.stop()

    async def publish(self, feedback: ArticleFeedback) -> None:
        value = feedback.model_dump_json(exclude_none=True).encode()
        await asyncio.wait_for(
            self._producer.send_and_wait(
                self._topic, value=value, key=feedback.article_id.encode()
            ),
            _SEND_TIMEOUT_S,
        )
