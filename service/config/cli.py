"""A command's flags, generated from its settings class, and the settings parsed from them.

Each field becomes one flag (``--`` + the field's name with dashes, or its ``flag``
metadata), in the ``--help`` group of the option class that declares it, with its
description, its choices, its default and its environment variable. A flag not given
stays out of the parsed values, so the environment, then the default, applies (pydantic
settings does the layering); every value is validated by the settings class alone, so a
bad flag and a bad variable fail the same way: a ``ConfigError`` naming where the value
came from and what was wrong.
"""

from __future__ import annotations

import argparse
import difflib
import inspect
import os
import types
import typing
from collections.abc import Mapping, Sequence
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

from pydantic import SecretStr, ValidationError
from pydantic.fields import FieldInfo

from service.config.commands import (
    COMMANDS,
    ENV_PREFIX,
    FILE_SUFFIX,
    CommandSettings,
    ConfigError,
    env_name,
    secret_fields,
)

_S = TypeVar("_S", bound=CommandSettings)


def flag_of(name: str, field: FieldInfo) -> str:
    """The flag of a field."""
    return "--" + (_extra(field, "flag") or name.replace("_", "-"))


def _extra(field: FieldInfo, key: str) -> str | None:
    extra = field.json_schema_extra
    value = extra.get(key) if isinstance(extra, dict) else None
    return str(value) if value is not None else None


def add_command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    settings_cls: type[CommandSettings],
    *,
    summary: str,
    description: str,
) -> argparse.ArgumentParser:
    """Add the subcommand ``name`` with one flag per field of ``settings_cls``."""
    parser = commands.add_parser(
        name,
        help=summary,
        description=description,
        epilog=f"Each option can also be set with the environment variable shown; flags win. "
        f"A secret also comes from the file {ENV_PREFIX}<NAME>{FILE_SUFFIX} names.",
    )
    placed = [
        (_placement(settings_cls, name), name)
        for name, field in settings_cls.model_fields.items()
        if not _extra(field, "internal")
    ]
    placed.sort(key=lambda item: (_GROUP_ORDER.get(item[0][0], -1), item[0][1]))
    groups: dict[str, argparse._ArgumentGroup] = {}
    for (title, _), field_name in placed:
        group = groups.get(title)
        if group is None:
            group = groups[title] = parser.add_argument_group(title)
        _add_flag(group, field_name, settings_cls.model_fields[field_name])
    return parser


#: The order of the option groups in ``--help`` (a command's own options come first).
_GROUP_ORDER = {
    title: position
    for position, title in enumerate(
        (
            "Model",
            "Kafka connection",
            "Topics",
            "Schema Registry",
            "Consumer group",
            "Delivery",
            "Batching and flow control",
            "Record limits",
            "Circuit breaker",
            "Model rollout",
            "Suggest API",
            "Authentication",
            "Editor feedback",
            "Observability",
        )
    )
}


def _placement(settings_cls: type[CommandSettings], field_name: str) -> tuple[str, int]:
    """The ``--help`` group of a field (the title of the option class declaring it, or the
    command's own) and that class's place among the command's bases."""
    for position, klass in enumerate(settings_cls.__mro__):
        if field_name in inspect.get_annotations(klass):
            if issubclass(klass, CommandSettings):
                return settings_cls.own_group, position
            return (klass.__doc__ or klass.__name__).strip().splitlines()[0], position
    return settings_cls.own_group, 0


def _add_flag(group: argparse._ArgumentGroup, name: str, field: FieldInfo) -> None:
    inner, repeated = _element_type(field.annotation)
    repeated = repeated or bool(_extra(field, "repeat"))
    text = field.description or ""
    if field.is_required():
        text += " (required)"
    elif inner is not bool and not repeated and field.default is not None:
        default = field.default.value if isinstance(field.default, Enum) else field.default
        text += f" (default: {default})"
    text += f" [env: {env_name(name)}]"
    if inner is SecretStr:
        text += f" [or a file: {env_name(name)}{FILE_SUFFIX}]"
    options: dict[str, Any] = {
        "dest": name,
        "default": argparse.SUPPRESS,
        "help": text.replace("%", "%%"),
    }
    if inner is bool:
        # On by default: --no-<name> turns it off.
        options["action"] = argparse.BooleanOptionalAction if field.default else "store_true"
    else:
        options["action"] = "append" if repeated else "store"
        # Choices are shown, not enforced here: the settings class checks every value,
        # so a bad flag and a bad variable get the same message.
        options["metavar"] = _extra(field, "metavar") or _metavar(inner)
    group.add_argument(flag_of(name, field), **options)


def _element_type(annotation: Any) -> tuple[Any, bool]:
    """The type a flag takes (Optional unwrapped) and whether the flag repeats."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _element_type(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        arguments = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        return _element_type(arguments[0]) if len(arguments) == 1 else (str, False)
    if origin is list:
        inner, _ = _element_type(typing.get_args(annotation)[0])
        return inner, True
    return annotation, False


def _metavar(kind: Any) -> str:
    if typing.get_origin(kind) is typing.Literal:
        return "{" + ",".join(str(value) for value in typing.get_args(kind)) + "}"
    if isinstance(kind, type) and issubclass(kind, Enum):
        return "{" + ",".join(str(member.value) for member in kind) + "}"
    if kind is Path:
        return "PATH"
    if kind is int:
        return "N"
    if kind is float:
        return "X"
    return "TEXT"


def parse_settings(settings_cls: type[_S], given: Mapping[str, Any]) -> _S:
    """The settings from the given flag values (by field name) over the environment; a
    ``ConfigError`` names the flag or variable of each bad value."""
    environ = os.environ
    check_environment(environ)
    values = {name: value for name, value in given.items() if name in settings_cls.model_fields}
    try:
        return settings_cls(**values)
    except ValidationError as error:
        raise ConfigError(_describe(error, settings_cls, values, environ)) from None


def settings_for(command: str, argv: Sequence[str]) -> CommandSettings:
    """The settings of ``command`` from its command-line arguments (and the environment),
    as ``main`` parses them."""
    parser = argparse.ArgumentParser(prog=f"article-classifier {command}")
    commands = parser.add_subparsers(dest="command", required=True)
    settings_cls = COMMANDS[command]
    add_command(commands, command, settings_cls, summary="", description="")
    return parse_settings(settings_cls, vars(parser.parse_args([command, *argv])))


def check_environment(environ: Mapping[str, str]) -> None:
    """Every ``ARTICLE_CLASSIFIER_*`` variable must name a setting of some command; a
    misspelt one is an error that names the closest real one."""
    known = known_variables()
    for variable in sorted(environ):
        if variable.upper().startswith(ENV_PREFIX) and variable.upper() not in known:
            close = difflib.get_close_matches(variable.upper(), sorted(known), n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise ConfigError(f"{variable} is not a setting of any command{hint}")


def known_variables() -> frozenset[str]:
    """The environment variables of every command's settings."""
    names: set[str] = set()
    for settings_cls in COMMANDS.values():
        names.update(
            env_name(name)
            for name, field in settings_cls.model_fields.items()
            if not _extra(field, "internal")
        )
        names.update(env_name(name) + FILE_SUFFIX for name in secret_fields(settings_cls))
    return frozenset(names)


def _describe(
    error: ValidationError,
    settings_cls: type[CommandSettings],
    given: Mapping[str, Any],
    environ: Mapping[str, str],
) -> str:
    problems = []
    for item in error.errors(include_url=False):
        location = item["loc"]
        name = location[0] if location and isinstance(location[0], str) else None
        field = settings_cls.model_fields.get(name) if name else None
        if name is None or field is None:
            problems.append(item["msg"].removeprefix("Value error, "))
            continue
        option = flag_of(name, field)
        variable = env_name(name)
        if item["type"] == "missing":
            problems.append(
                f"{option} is required (or {variable})"
                + (f": {field.description}" if field.description else "")
            )
            continue
        secret = name in secret_fields(settings_cls)
        if name in given:
            shown = "<hidden>" if secret else repr(_plain(given[name]))
            problems.append(f"{option}={shown}: {item['msg']}")
        else:
            value = environ.get(variable, environ.get(variable.lower()))
            shown = "<hidden>" if secret else repr(value)
            problems.append(f"{variable}={shown}: {item['msg']}")
    return "invalid configuration: " + "; ".join(problems)


def _plain(value: Any) -> Any:
    return value[0] if isinstance(value, list) and len(value) == 1 else value
