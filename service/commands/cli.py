"""The ``article-classifier`` command line: train, evaluate, classify, compare, serve,
dataset, reclassify, sign and keygen. (The development broker and the demo are
``python -m devtools``.)"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from model import ArtifactTrustError, ModelError
from model.trust import normalize_sha256, trust_from_options
from schemas import (
    DEFAULT_MAX_DEPTH,
    DEFAULT_MAX_EVENT_BYTES,
    DEFAULT_MAX_FIELDS,
    DEFAULT_MAX_TITLE_CHARS,
    MAX_EXPLAIN_TERMS,
    PARSER_MAX_DEPTH,
    RecordLimits,
)
from service.commands.offline import (
    run_classify,
    run_compare,
    run_evaluate,
    run_keygen,
    run_sign,
    run_train,
)
from service.commands.reclassify import (
    ReplayError,
    add_reclassify_arguments,
    reclassify,
    reclassify_settings_from_args,
)
from service.commands.serve import serve
from service.config.environment import EnvironmentValueError, apply_environment
from service.config.settings import ConfigError, add_serve_arguments, settings_from_args
from service.feedback.dataset import DatasetError, run_dataset

EXIT_USAGE = 2
EXIT_FAILURE = 1


def build_parser() -> argparse.ArgumentParser:
    """The full parser, before environment defaults are applied."""

    parser = argparse.ArgumentParser(
        prog="article-classifier",
        description="Classify news articles (one section, any number of tags) from Kafka or files.",
        epilog="Every option can also be set with ARTICLE_CLASSIFIER_<OPTION>; flags win.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser(
        "train",
        help="train a model artifact from labelled JSONL",
        description="Train the section and tag heads on labelled JSONL files and write a model "
        "artifact directory (data files + model.json manifest). Prints cross-validated metrics "
        "and the artifact's sha256 (for --model-sha256).",
    )
    train.add_argument(
        "--data",
        type=Path,
        action="append",
        required=True,
        metavar="FILE",
        help="labelled JSONL file; repeat to combine corpora (env: comma-separated)",
    )
    train.add_argument(
        "--out", type=Path, required=True, metavar="DIR", help="artifact directory to write"
    )
    train.add_argument("--name", default="article-classifier", help="model name in the manifest")
    train.add_argument(
        "--version",
        dest="model_version",
        default=None,
        help="model version (default: derived from the training data and time)",
    )
    train.add_argument(
        "--skip-invalid",
        action="store_true",
        help="skip and count invalid lines instead of failing on the first one",
    )

    evaluate = commands.add_parser(
        "evaluate",
        help="score a model on labelled JSONL",
        description="Section accuracy and macro-F1; tag micro/macro-F1, precision and recall; "
        "a per-label table.",
    )
    evaluate.add_argument(
        "--model", type=Path, required=True, metavar="DIR", help="artifact directory"
    )
    evaluate.add_argument(
        "--data",
        type=Path,
        action="append",
        required=True,
        metavar="FILE",
        help="labelled JSONL file; repeatable",
    )
    evaluate.add_argument(
        "--json", dest="as_json", action="store_true", help="print one JSON object"
    )
    evaluate.add_argument("--skip-invalid", action="store_true", help="skip invalid lines")
    _add_trust_arguments(evaluate)

    classify = commands.add_parser(
        "classify",
        help="classify ArticleEvent JSONL from a file or stdin",
        description="Read ArticleEvent JSONL and write one ClassifiedArticleEvent line per valid "
        "input line, in input order. Invalid lines are reported on stderr and skipped.",
    )
    classify.add_argument(
        "--model", type=Path, required=True, metavar="DIR", help="artifact directory"
    )
    classify.add_argument(
        "--input", default="-", metavar="FILE|-", help="input JSONL (default: stdin)"
    )
    classify.add_argument(
        "--output", default="-", metavar="FILE|-", help="output JSONL (default: stdout)"
    )
    classify.add_argument(
        "--strict", action="store_true", help="exit with status 1 when any input line was invalid"
    )
    classify.add_argument(
        "--max-event-bytes",
        type=_positive_int,
        default=DEFAULT_MAX_EVENT_BYTES,
        help="largest accepted event in bytes (default: %(default)s)",
    )
    classify.add_argument(
        "--max-title-chars",
        type=_positive_int,
        default=DEFAULT_MAX_TITLE_CHARS,
        help="longest accepted title in characters (default: %(default)s)",
    )
    classify.add_argument(
        "--max-fields",
        type=_positive_int,
        default=DEFAULT_MAX_FIELDS,
        help="most fields and array items in one event, at any depth (default: %(default)s)",
    )
    classify.add_argument(
        "--max-depth",
        type=_depth,
        default=DEFAULT_MAX_DEPTH,
        help=f"deepest nesting, the event being level 1, at most {PARSER_MAX_DEPTH} "
        "(default: %(default)s)",
    )
    classify.add_argument(
        "--explain",
        type=_explain_terms,
        default=0,
        metavar="K",
        help="add the K terms that raised each predicted label's score the most "
        f"(classification.explanations; 0: off, at most {MAX_EXPLAIN_TERMS}; "
        "default: %(default)s)",
    )
    _add_trust_arguments(classify)

    compare = commands.add_parser(
        "compare",
        help="compare two model artifacts on the same articles",
        description="Classify JSONL articles with models A and B: per head, agreement and "
        "label-by-label flips (A -> B); on labelled lines (LabelledArticle) both models' "
        "metrics side by side with the difference; the section flips both models are surest "
        "of. Unlabelled ArticleEvent lines are accepted too.",
    )
    compare.add_argument(
        "--model",
        type=Path,
        action="append",
        required=True,
        metavar="DIR",
        help="artifact directory; give it twice, A then B",
    )
    compare.add_argument(
        "--data",
        type=Path,
        action="append",
        required=True,
        metavar="FILE",
        help="JSONL articles, labelled or not; repeatable",
    )
    compare.add_argument(
        "--json", dest="as_json", action="store_true", help="print one JSON object"
    )
    compare.add_argument(
        "--top",
        type=_non_negative_int,
        default=10,
        metavar="N",
        help="section flips listed with both scores (default: %(default)s)",
    )

    serve = commands.add_parser(
        "serve",
        help="run the Kafka service",
        description="Consume ArticleEvents, publish ClassifiedArticleEvents, dead-letter invalid "
        "records; metrics and health on one HTTP port.",
    )
    add_serve_arguments(serve)

    dataset = commands.add_parser(
        "dataset",
        help="join editor corrections with article text into labelled JSONL for train",
        description="Read ArticleFeedback records and articles (ArticleEvent or "
        "ClassifiedArticleEvent records), each from a JSONL file or, with --bootstrap-servers, "
        "a topic read from the beginning to its end; write one LabelledArticle per corrected "
        "article found. For each label head the latest correction wins (by corrected_at, then "
        "by reading order). Prints the counts of joined, unmatched and conflicting articles.",
    )
    dataset.add_argument(
        "--feedback",
        action="append",
        required=True,
        metavar="FILE|TOPIC",
        help="ArticleFeedback JSONL file or topic; repeatable (env: comma-separated)",
    )
    dataset.add_argument(
        "--articles",
        action="append",
        required=True,
        metavar="FILE|TOPIC",
        help="article JSONL file or topic (e.g. the classified topic); repeatable",
    )
    dataset.add_argument(
        "--out", type=Path, required=True, metavar="FILE", help="LabelledArticle JSONL to write"
    )
    dataset.add_argument(
        "--bootstrap-servers",
        default=None,
        help="Kafka bootstrap servers; a FILE|TOPIC value naming no file is then a topic",
    )
    dataset.add_argument(
        "--timeout-s",
        type=_positive_float,
        default=30.0,
        help="longest wait for the broker or for progress reading a topic (default: %(default)s)",
    )
    replay = commands.add_parser(
        "reclassify",
        help="re-classify a range of the input (or dead-letter) topic with a model",
        description="Replay the records of a time range of the input topic through a model "
        "and publish the results with the same key and contract (the new model.version), "
        "through the service's pipeline, dead letters and metrics. Resumable: progress is "
        "committed in its own consumer group and the range is fixed at the first start; run "
        "the same command again after an interruption. Progress on stderr; exit 0 when the "
        "range is done. --from-dead-letters replays the dead-letter topic instead.",
    )
    add_reclassify_arguments(replay)

    sign = commands.add_parser(
        "sign",
        help="sign a model artifact with an Ed25519 private key",
        description="Verify the artifact, then write model.json.sig (a detached Ed25519 "
        "signature of model.json, which lists every data file's sha256) into it. Deployments "
        "check it with --model-public-key.",
    )
    sign.add_argument("--model", type=Path, required=True, metavar="DIR", help="artifact directory")
    sign.add_argument(
        "--key", type=Path, required=True, metavar="PRIVATE.pem", help="Ed25519 private key (PEM)"
    )

    keygen = commands.add_parser(
        "keygen",
        help="make an Ed25519 key pair for signing model artifacts",
        description="Write model-signing-key.pem (private, mode 0600; keep it off the serving "
        "hosts) and model-signing-key.pub.pem (public, for --model-public-key) into DIR.",
    )
    keygen.add_argument(
        "--out", type=Path, required=True, metavar="DIR", help="directory for the two key files"
    )

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    parser = build_parser()
    try:
        apply_environment(parser)
    except EnvironmentValueError as error:
        parser.error(str(error))
    args = parser.parse_args(argv)
    try:
        return _dispatch(args)
    except KeyboardInterrupt:
        return 130
    except Exception as error:
        status = _exit_status_for(error)
        if status is None:
            raise
        print(f"article-classifier {args.command}: error: {error}", file=sys.stderr)
        return status


def _dispatch(args: argparse.Namespace) -> int:  # noqa: PLR0911 - one return per command
    command: str = args.command
    if command == "train":
        return run_train(
            args.data,
            args.out,
            name=args.name,
            version=args.model_version,
            skip_invalid=args.skip_invalid,
            stdout=sys.stdout,
        )
    if command == "evaluate":
        return run_evaluate(
            args.model,
            args.data,
            as_json=args.as_json,
            skip_invalid=args.skip_invalid,
            stdout=sys.stdout,
            trust=trust_from_options(args.model_sha256, args.model_public_key),
        )
    if command == "classify":
        trust = trust_from_options(args.model_sha256, args.model_public_key)
        with _open_binary(args.input, "rb") as source, _open_binary(args.output, "wb") as sink:
            return run_classify(
                args.model,
                source,
                sink,
                strict=args.strict,
                max_event_bytes=args.max_event_bytes,
                stderr=sys.stderr,
                limits=RecordLimits(
                    max_title_chars=args.max_title_chars,
                    max_fields=args.max_fields,
                    max_depth=args.max_depth,
                ),
                trust=trust,
                explain=args.explain,
            )
    if command in _ROLLOUT_COMMANDS:
        return _dispatch_rollout(args)
    if command == "serve":
        return serve(settings_from_args(args))
    if command == "dataset":
        return run_dataset(
            args.feedback,
            args.articles,
            args.out,
            bootstrap_servers=args.bootstrap_servers,
            timeout_s=args.timeout_s,
            stdout=sys.stdout,
            stderr=sys.stderr,
        )
    return _dispatch_signing(args)


_ROLLOUT_COMMANDS = frozenset({"compare", "reclassify"})


def _dispatch_rollout(args: argparse.Namespace) -> int:
    """The commands of a model rollout: compare two models, re-classify the archive."""
    if args.command == "reclassify":
        return reclassify(reclassify_settings_from_args(args))
    return run_compare(
        args.model,
        args.data,
        as_json=args.as_json,
        top=args.top,
        stdout=sys.stdout,
        stderr=sys.stderr,
    )


def _dispatch_signing(args: argparse.Namespace) -> int:
    if args.command == "sign":
        return run_sign(args.model, args.key, stdout=sys.stdout)
    return run_keygen(args.out, stdout=sys.stdout)


def _open_binary(name: str, mode: str) -> BinaryStream:
    if name == "-":
        stream = sys.stdin.buffer if "r" in mode else sys.stdout.buffer
        return BinaryStream(stream, close=False)
    return BinaryStream(open(name, mode), close=True)


class BinaryStream:
    """A file or a standard stream as a context manager that closes only what it opened."""

    def __init__(self, stream: IO[bytes], *, close: bool) -> None:
        self._stream = stream
        self._close = close

    def __enter__(self) -> IO[bytes]:
        return self._stream

    def __exit__(self, *exc_info: object) -> None:
        if self._close:
            self._stream.close()


def _add_trust_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model-sha256",
        type=_sha256,
        default=None,
        metavar="HEX",
        help="load only the artifact whose model.json has this sha256 (train prints it)",
    )
    parser.add_argument(
        "--model-public-key",
        type=_optional_path,
        default=None,
        metavar="PUBLIC.pem",
        help="Ed25519 public key (PEM): load only an artifact signed with its private key",
    )


def _sha256(text: str) -> str | None:
    if not text.strip():
        return None  # an empty ARTICLE_CLASSIFIER_MODEL_SHA256 means "no pin", as for serve
    try:
        return normalize_sha256(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _optional_path(text: str) -> Path | None:
    return Path(text) if text.strip() else None


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _depth(text: str) -> int:
    value = int(text)
    if not 0 < value <= PARSER_MAX_DEPTH:
        raise argparse.ArgumentTypeError(
            f"must be between 1 and {PARSER_MAX_DEPTH} (the JSON parser's own limit), got {value}"
        )
    return value


def _explain_terms(text: str) -> int:
    value = int(text)
    if not 0 <= value <= MAX_EXPLAIN_TERMS:
        raise argparse.ArgumentTypeError(
            f"must be between 0 (off) and {MAX_EXPLAIN_TERMS}, got {value}"
        )
    return value


def _exit_status_for(error: Exception) -> int | None:
    """Expected failures get a one-line message and a status; anything else is a bug."""

    if isinstance(error, ConfigError | ArtifactTrustError):
        # Not the artifact the deployment trusts: a configuration problem, never retried.
        return EXIT_USAGE
    if isinstance(error, ModelError | OSError | ReplayError | DatasetError):
        return EXIT_FAILURE
    return None
