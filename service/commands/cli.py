"""The ``article-classifier`` command line: train, evaluate, classify, compare, serve,
dataset, reclassify, sign and keygen. (The development broker and the demo are
``python -m devtools``.)

Each command's options are its settings class (``service.config.commands``): the flags and
their ``--help`` are generated from it, and so are the environment variables.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import IO, Any

from service.config.cli import add_command, parse_settings
from service.config.commands import (
    COMMANDS,
    ClassifySettings,
    CompareSettings,
    ConfigError,
    DatasetSettings,
    DeskSettings,
    EvaluateSettings,
    KeygenSettings,
    ReclassifySettings,
    ServeSettings,
    SignSettings,
    TrainSettings,
)
from service.web.tokens import TokenFileError

# Each command's code is imported when that command runs: the model package loads
# scikit-learn, NumPy and SciPy (about 100 MiB), which `desk` never needs.
# ruff: noqa: PLC0415

EXIT_USAGE = 2
EXIT_FAILURE = 1

#: (one-line help, description) of each command, in the order --help lists them.
_TEXTS: dict[str, tuple[str, str]] = {
    "train": (
        "train a model artifact from labelled JSONL",
        "Train the section and tag heads on labelled JSONL files and write a model artifact "
        "directory (data files + model.json manifest). Prints cross-validated metrics and the "
        "artifact's sha256 (for --model-sha256).",
    ),
    "evaluate": (
        "score a model on labelled JSONL",
        "Section accuracy and macro-F1; tag micro/macro-F1, precision and recall; a per-label "
        "table.",
    ),
    "classify": (
        "classify ArticleEvent JSONL from a file or stdin",
        "Read ArticleEvent JSONL and write one ClassifiedArticleEvent line per valid input "
        "line, in input order. Invalid lines are reported on stderr and skipped.",
    ),
    "compare": (
        "compare two model artifacts on the same articles",
        "Classify JSONL articles with models A and B: per head, agreement and label-by-label "
        "flips (A -> B); on labelled lines (LabelledArticle) both models' metrics side by side "
        "with the difference; the section flips both models are surest of. Unlabelled "
        "ArticleEvent lines are accepted too.",
    ),
    "serve": (
        "run the Kafka service",
        "Consume ArticleEvents, publish ClassifiedArticleEvents, dead-letter invalid records; "
        "metrics and health on one HTTP port.",
    ),
    "dataset": (
        "join editor corrections with article text into labelled JSONL for train",
        "Read ArticleFeedback records and articles (ArticleEvent or ClassifiedArticleEvent "
        "records), each from a JSONL file or, with --bootstrap-servers, a topic read from the "
        "beginning to its end; write one LabelledArticle per corrected article found. For each "
        "label head the latest correction wins (by corrected_at, then by reading order). "
        "Prints the counts of joined, unmatched and conflicting articles.",
    ),
    "reclassify": (
        "re-classify a range of the input (or dead-letter) topic with a model",
        "Replay the records of a time range of the input topic through a model and publish the "
        "results with the same key and contract (the new model.version), through the "
        "service's pipeline, dead letters and metrics. Resumable: progress is committed in its "
        "own consumer group and the range is fixed at the first start; run the same command "
        "again after an interruption. Progress on stderr; exit 0 when the range is done. "
        "--from-dead-letters replays the dead-letter topic instead.",
    ),
    "sign": (
        "sign a model artifact with an Ed25519 private key",
        "Verify the artifact, then write model.json.sig (a detached Ed25519 signature of "
        "model.json, which lists every data file's sha256) into it. Deployments check it with "
        "--model-public-key.",
    ),
    "desk": (
        "run the editors' desk (web): live feed, review queue, verdicts, quality",
        "Serve the editors' desk over HTTP: the recently classified articles as they arrive, "
        "a review queue ordered by the model's doubt, each article with the terms behind its "
        "labels, one-action verdicts published as ArticleFeedback events, and the agreement "
        "between editors and the model. Reads the classified and feedback topics; needs no "
        "model. Editors sign in with a token of --api-tokens-file, or an authenticating proxy "
        "names them in --desk-user-header.",
    ),
    "keygen": (
        "make an Ed25519 key pair for signing model artifacts",
        "Write model-signing-key.pem (private, mode 0600; keep it off the serving hosts) and "
        "model-signing-key.pub.pem (public, for --model-public-key) into DIR.",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    """The command line: one subcommand per settings class."""
    parser = argparse.ArgumentParser(
        prog="article-classifier",
        description="Classify news articles (one section, any number of tags) from Kafka or files.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, settings_cls in COMMANDS.items():
        summary, description = _TEXTS[name]
        add_command(commands, name, settings_cls, summary=summary, description=description)
    return parser


def _version() -> str:
    try:
        return version("article-classifier")
    except PackageNotFoundError:  # pragma: no cover - running from a checkout, uninstalled
        return "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    command: str = args.command
    try:
        settings = parse_settings(COMMANDS[command], vars(args))
        return _RUNNERS[command](settings)
    except KeyboardInterrupt:
        return 130
    except Exception as error:
        status = _exit_status_for(error)
        if status is None:
            raise
        print(f"article-classifier {command}: error: {error}", file=sys.stderr)
        return status


def _train(settings: TrainSettings) -> int:
    from service.commands.offline import run_train

    return run_train(
        settings.data,
        settings.artifact_out,
        name=settings.model_name,
        version=settings.model_version,
        skip_invalid=settings.skip_invalid,
        stdout=sys.stdout,
        features=settings.features,
    )


def _evaluate(settings: EvaluateSettings) -> int:
    from service.commands.offline import run_evaluate
    from service.commands.wiring import trust_policy

    policy = trust_policy(settings)
    return run_evaluate(
        settings.model,
        settings.data,
        as_json=settings.as_json,
        skip_invalid=settings.skip_invalid,
        stdout=sys.stdout,
        trust=policy.for_model(settings.model),
        language_models=[
            (language, directory, policy.for_model(directory))
            for language, directory in settings.language_models
        ],
    )


def _classify(settings: ClassifySettings) -> int:
    from service.commands.offline import run_classify
    from service.commands.wiring import trust_policy

    policy = trust_policy(settings)
    trust = policy.for_model(settings.model)
    languages = [
        (language, directory, policy.for_model(directory))
        for language, directory in settings.language_models
    ]
    with (
        _open_binary(settings.input_file, "rb") as source,
        _open_binary(settings.output_file, "wb") as sink,
    ):
        return run_classify(
            settings.model,
            source,
            sink,
            strict=settings.strict,
            max_event_bytes=settings.max_event_bytes,
            stderr=sys.stderr,
            limits=settings.record_limits,
            trust=trust,
            explain=settings.explain,
            section_floor=settings.section_floor,
            language_models=languages,
        )


def _compare(settings: CompareSettings) -> int:
    from service.commands.offline import run_compare

    return run_compare(
        settings.models,
        settings.data,
        as_json=settings.as_json,
        top=settings.top,
        stdout=sys.stdout,
        stderr=sys.stderr,
    )


def _dataset(settings: DatasetSettings) -> int:
    from service.feedback.dataset import run_dataset

    return run_dataset(
        settings.feedback,
        settings.articles,
        settings.dataset_out,
        bootstrap_servers=settings.bootstrap_servers,
        timeout_s=settings.dataset_timeout_s,
        connection=settings,
        stdout=sys.stdout,
        stderr=sys.stderr,
    )


def _sign(settings: SignSettings) -> int:
    from service.commands.offline import run_sign

    return run_sign(settings.model, settings.signing_key, stdout=sys.stdout)


def _keygen(settings: KeygenSettings) -> int:
    from service.commands.offline import run_keygen

    return run_keygen(settings.keys_out, stdout=sys.stdout)


def _serve(settings: ServeSettings) -> int:
    from service.commands.serve import serve

    return serve(settings)


def _reclassify(settings: ReclassifySettings) -> int:
    from service.commands.reclassify import reclassify

    return reclassify(settings)


def _desk(settings: DeskSettings) -> int:
    from service.commands.desk import desk

    return desk(settings)


#: Each command's runner takes the settings its class parses (COMMANDS pairs them).
_RUNNERS: dict[str, Callable[[Any], int]] = {
    "train": _train,
    "evaluate": _evaluate,
    "classify": _classify,
    "compare": _compare,
    "serve": _serve,
    "dataset": _dataset,
    "reclassify": _reclassify,
    "sign": _sign,
    "keygen": _keygen,
    "desk": _desk,
}


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


def _exit_status_for(error: Exception) -> int | None:
    """Expected failures get a one-line message and a status; anything else is a bug."""

    if isinstance(error, ConfigError | TokenFileError):
        return EXIT_USAGE
    if isinstance(error, OSError):
        return EXIT_FAILURE
    # The other expected errors come from modules only the command that raised them loaded.
    if "model" in sys.modules:
        from model import ArtifactTrustError, ModelError

        if isinstance(error, ArtifactTrustError):
            # Not the artifact the deployment trusts: a configuration problem, never retried.
            return EXIT_USAGE
        if isinstance(error, ModelError):
            return EXIT_FAILURE
    for module, name in (
        ("service.commands.reclassify", "ReplayError"),
        ("service.feedback.dataset", "DatasetError"),
    ):
        loaded = sys.modules.get(module)
        if loaded is not None and isinstance(error, getattr(loaded, name)):
            return EXIT_FAILURE
    return None
