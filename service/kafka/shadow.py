"""The candidate model's outputs sent to ``--shadow-topic``: best effort, off the delivery
path, never delaying a batch, never part of its commit."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Any

from service.core.records import Outgoing

logger = logging.getLogger(__name__)

#: Batches of shadow outputs waiting for the shadow producer before new ones are dropped.
_PUBLISH_QUEUE_BATCHES = 8
_RETRY_S = 5.0


class ShadowPublisher:
    """Sends the candidate's outputs to ``--shadow-topic``, best effort, off the hot path.

    Its own producer, started lazily and retried: a shadow topic that is missing or a
    broker that is down costs shadow records (counted in
    ``shadow_publish_failures_total`` and logged), never a live one.
    """

    def __init__(
        self,
        make_producer: Callable[[], Any],
        *,
        on_failure: Callable[[int], None],
        queue_batches: int = _PUBLISH_QUEUE_BATCHES,
    ) -> None:
        self._make_producer = make_producer
        self._on_failure = on_failure
        self._queue: asyncio.Queue[Sequence[Outgoing]] = asyncio.Queue(queue_batches)
        self._task: asyncio.Task[None] | None = None
        self._producer: Any = None

    def submit(self, outgoing: Sequence[Outgoing]) -> None:
        """Queue one batch's shadow records; dropped (and counted) when the queue is full."""
        if not outgoing:
            return
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="shadow-publisher")
        try:
            self._queue.put_nowait(outgoing)
        except asyncio.QueueFull:
            self._on_failure(len(outgoing))
            logger.warning(
                "shadow topic falling behind; a batch of shadow records is dropped",
                extra={"records": len(outgoing)},
            )

    async def close(self) -> None:
        """Stop sending; records still queued are dropped (shadow output is best effort)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._producer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._producer.stop(), 10)
            self._producer = None

    async def _run(self) -> None:
        while True:
            batch = await self._queue.get()
            try:
                if self._producer is None:
                    producer = self._make_producer()
                    try:
                        await producer.start()
                    except BaseException:
                        with contextlib.suppress(Exception):
                            await producer.stop()
                        raise
                    self._producer = producer
                futures = [
                    await self._producer.send(
                        item.topic, key=item.key, value=item.value, headers=item.headers
                    )
                    for item in batch
                ]
                results = await asyncio.gather(*futures, return_exceptions=True)
                failed = [result for result in results if isinstance(result, BaseException)]
                if failed:
                    self._failed(len(failed), failed[0])
            except asyncio.CancelledError:
                raise
            except Exception as error:
                self._failed(len(batch), error)
                await asyncio.sleep(_RETRY_S)

    def _failed(self, count: int, error: BaseException) -> None:
        self._on_failure(count)
        logger.warning(
            "shadow records not published", extra={"records": count, "error": repr(error)}
        )
