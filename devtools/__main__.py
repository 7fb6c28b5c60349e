"""``python -m devtools``: run a development broker or the end-to-end demo."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from devtools.kafka_jars import DEFAULT_KAFKA_VERSION, ToolMissingError, require_tools
from devtools.tansu import BrokerStartError, broker_binary, run_broker_forever

EXIT_USAGE = 2
EXIT_FAILURE = 1
DEMO_CORPUS = Path(__file__).resolve().parent.parent / "model" / "samples" / "demo.jsonl"
BROKER_ENGINES = ("tansu", "apache-kafka")


def build_parser() -> argparse.ArgumentParser:
    """The development commands: broker and demo (``python -m devtools.kafka_jars`` fetches
    the Apache Kafka jars alone)."""
    parser = argparse.ArgumentParser(
        prog="python -m devtools",
        description="Development tools of article-classifier (not shipped in the image).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    broker = commands.add_parser(
        "broker",
        help="run a Kafka broker on 127.0.0.1: tansu (embedded) or Apache Kafka",
        description="Run a single-node Kafka broker on 127.0.0.1 for development, tests and "
        "demos (not for production) until Ctrl-C or SIGTERM: tansu, a Kafka-protocol broker "
        "with in-memory storage, or a real Apache Kafka in KRaft mode whose jars are fetched "
        "with Maven into ~/.cache/article-classifier on first use.",
    )
    broker.add_argument(
        "--port", type=_port, default=9092, help="listener port (default: %(default)s)"
    )
    broker.add_argument(
        "--engine",
        choices=BROKER_ENGINES,
        default="tansu",
        help="tansu (in-memory, pip-installed) or apache-kafka (a real Apache Kafka in KRaft "
        "mode; needs Java 17+ and Maven) (default: %(default)s)",
    )
    broker.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="apache-kafka only: keep the broker's data here, so it survives a restart "
        "(default: a temporary directory removed at exit)",
    )
    broker.add_argument(
        "--kafka-version",
        default=None,
        metavar="V",
        help=f"apache-kafka only: the Apache Kafka version (default: {DEFAULT_KAFKA_VERSION})",
    )
    demo = commands.add_parser(
        "demo",
        help="run everything end to end on the embedded broker with the demo model",
        description="Start the embedded broker, train the demo model if needed, start the "
        "service, publish the sample articles and a few invalid events, and print every "
        "classified article and dead letter as it arrives.",
    )
    demo.add_argument(
        "--model-dir",
        type=Path,
        default=Path("artifacts/demo-model"),
        metavar="DIR",
        help="where the demo model lives; trained there if missing (default: %(default)s)",
    )
    demo.add_argument("--metrics-port", type=_port, default=9108, help="metrics/health HTTP port")
    demo.add_argument(
        "--keep-running",
        action="store_true",
        help="keep the service and broker up after the demo until Ctrl-C",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one development command; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except KeyboardInterrupt:
        return 130
    except (BrokerStartError, OSError) as error:
        print(f"python -m devtools {args.command}: error: {error}", file=sys.stderr)
        return EXIT_FAILURE
    except _UsageError as error:
        print(f"python -m devtools {args.command}: error: {error}", file=sys.stderr)
        return EXIT_USAGE


class _UsageError(ValueError):
    """Options that do not fit together."""


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "demo" or args.engine == "tansu":
        broker_binary()  # says how to install the optional extra before any work starts
    if args.command == "demo":
        from devtools.demo import run_demo  # noqa: PLC0415 - imports the whole service

        return run_demo(
            model_dir=args.model_dir,
            metrics_port=args.metrics_port,
            keep_running=args.keep_running,
            corpus=DEMO_CORPUS,
        )
    if args.engine == "tansu":
        if args.data_dir is not None or args.kafka_version is not None:
            raise _UsageError(
                "--data-dir and --kafka-version need --engine apache-kafka "
                "(tansu keeps its log in memory)"
            )
        return run_broker_forever(args.port)
    from devtools.apache_kafka import run_apache_kafka_forever  # noqa: PLC0415

    version = args.kafka_version or DEFAULT_KAFKA_VERSION
    try:
        require_tools(version)
    except ToolMissingError as error:
        raise _UsageError(str(error)) from None
    return run_apache_kafka_forever(args.port, data_dir=args.data_dir, version=version)


def _port(text: str) -> int:
    value = int(text)
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"must be a TCP port between 1 and 65535, got {value}")
    return value


if __name__ == "__main__":
    sys.exit(main())
