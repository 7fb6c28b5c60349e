"""Run one peer of the service: ``python benchmarks/peers.py NAME --bootstrap-servers ...``.

The peers do the service's job (``bytes -> ArticleEvent -> model.Predictor ->
encode_classified -> bytes``) the way other code bases do it, so ``bench_service.py`` can
put them side by side with the service: see ``peer_faststream.py`` and ``peer_aiokafka.py``.
Every peer fetches with the service's ``fetch_max_wait_ms`` (``PeerConfig``) and otherwise
with its library's defaults. A peer runs until SIGTERM or SIGINT, then stops its clients
and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from peer_aiokafka import batches, passthrough, per_message
from peer_config import PeerConfig

from model import Predictor

Loop = Callable[[PeerConfig, Predictor], Coroutine[Any, Any, None]]

#: The aiokafka peers, by name (the FastStream ones are apps: see ``_run_faststream``).
LOOPS: dict[str, Loop] = {"aiokafka": per_message, "getmany": batches, "passthrough": passthrough}
FASTSTREAM = ("faststream", "faststream-batch")
NAMES = (*FASTSTREAM, *LOOPS)


async def _run_loop(loop: Loop, config: PeerConfig, predictor: Predictor) -> None:
    task = asyncio.create_task(loop(config, predictor))
    running = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        running.add_signal_handler(sig, task.cancel)
    try:
        await task
    except asyncio.CancelledError:
        if not task.cancelled():
            raise  # this coroutine itself was cancelled, not the loop by a signal


async def _run_faststream(name: str, config: PeerConfig, predictor: Predictor) -> None:
    # Imported here: the extra ``bench`` brings FastStream, the aiokafka peers need none.
    from peer_faststream import batch_app, per_message_app  # noqa: PLC0415

    app = (per_message_app if name == "faststream" else batch_app)(config, predictor)
    await app.run(log_level=logging.WARNING)  # FastStream handles SIGTERM and SIGINT itself


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("name", choices=NAMES)
    parser.add_argument("--bootstrap-servers", required=True)
    parser.add_argument("--model", type=Path, required=True, help="model artifact directory")
    parser.add_argument("--input-topic", required=True)
    parser.add_argument("--output-topic", required=True)
    parser.add_argument("--group-id", required=True)
    parser.add_argument("--batch-size", type=int, default=256, help="batch peers' batch size")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    config = PeerConfig(
        args.bootstrap_servers,
        args.model,
        args.input_topic,
        args.output_topic,
        args.group_id,
        args.batch_size,
    )
    predictor = Predictor.load(config.model_dir)
    if args.name in FASTSTREAM:
        asyncio.run(_run_faststream(args.name, config, predictor))
    else:
        asyncio.run(_run_loop(LOOPS[args.name], config, predictor))
    return 0


if __name__ == "__main__":
    sys.exit(main())
