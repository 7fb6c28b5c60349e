"""Every command-line option can also come from ``ARTICLE_CLASSIFIER_<OPTION>``; flags win.

The environment only supplies *defaults*, so an explicit flag always overrides it and
``--help`` shows which variable feeds each option.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping

ENV_PREFIX = "ARTICLE_CLASSIFIER_"
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


class EnvironmentValueError(ValueError):
    """An ``ARTICLE_CLASSIFIER_*`` variable holds a value its option cannot take."""


def env_name(dest: str) -> str:
    """The environment variable that feeds the option stored in ``dest``."""
    return ENV_PREFIX + dest.upper()


def apply_environment(
    parser: argparse.ArgumentParser, environ: Mapping[str, str] | None = None
) -> None:
    """Turn set environment variables into defaults, in ``parser`` and all its subcommands."""
    environ = os.environ if environ is None else environ
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for subparser in action.choices.values():
                apply_environment(subparser, environ)
        elif action.option_strings and action.dest not in {"help", "version"}:
            _document(action)
            value = environ.get(env_name(action.dest))
            if value is not None:
                _set_default(action, value)


def _document(action: argparse.Action) -> None:
    if action.help is not argparse.SUPPRESS:
        action.help = f"{action.help or ''} [env: {env_name(action.dest)}]".strip()


def _set_default(action: argparse.Action, value: str) -> None:
    name = env_name(action.dest)
    if isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction):
        lowered = value.strip().lower()
        if lowered not in _TRUE | _FALSE:
            raise EnvironmentValueError(f"{name}={value!r}: expected one of true/false/1/0/yes/no")
        action.default = lowered in _TRUE
    elif isinstance(action, argparse._AppendAction):
        items = [item.strip() for item in value.split(",") if item.strip()]
        action.default = [_convert(action, item, name) for item in items]
    else:
        action.default = _convert(action, value, name)
    action.required = False


def _convert(action: argparse.Action, value: str, name: str) -> object:
    converted: object = value
    if action.type is not None and callable(action.type):
        try:
            converted = action.type(value)
        except (TypeError, ValueError, argparse.ArgumentTypeError) as error:
            raise EnvironmentValueError(f"{name}={value!r}: {error}") from None
    if action.choices is not None and converted not in action.choices:
        choices = ", ".join(map(str, action.choices))
        raise EnvironmentValueError(f"{name}={value!r}: expected one of {choices}")
    return converted
