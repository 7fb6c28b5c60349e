"""The Kafka ACLs each mode needs, as one table.

``docs/security.md`` shows this table and the secured-broker tests grant exactly it
(``tests/test_secured_kafka.py`` checks the page against it), so the documented ACLs are the
tested ones. A resource is named by the option that names it (``--input-topic``); Read and
Write imply Describe in Kafka's authorizer, so Describe is not listed apart.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum


class Resource(StrEnum):
    """A Kafka ACL resource type, as ``kafka-acls.sh`` spells it."""

    TOPIC = "topic"
    GROUP = "group"
    TRANSACTIONAL_ID = "transactional-id"


class Operation(StrEnum):
    """A Kafka ACL operation."""

    READ = "Read"
    WRITE = "Write"
    DESCRIBE = "Describe"
    DESCRIBE_CONFIGS = "DescribeConfigs"


class Pattern(StrEnum):
    """How the ACL's resource name matches."""

    LITERAL = "literal"
    PREFIXED = "prefixed"


class Mode(StrEnum):
    """A way the service talks to Kafka, each with its own ACLs."""

    SERVE = "serve"
    SERVE_EXACTLY_ONCE = "serve --processing-guarantee exactly-once"
    FEEDBACK = "serve (feedback consumer)"
    RECLASSIFY = "reclassify"
    DATASET = "dataset"
    DESK = "desk"


@dataclass(frozen=True)
class Acl:
    """One ALLOW ACL for the service's principal: ``operation`` on the resource the option
    ``name`` names (with ``pattern``)."""

    resource: Resource
    name: str
    operation: Operation
    pattern: Pattern = Pattern.LITERAL
    why: str = ""

    def bind(self, names: Mapping[str, str]) -> BoundAcl:
        """The ACL on the resource ``names[self.name]`` (option -> its value)."""
        return BoundAcl(self.resource, names[self.name], self.operation, self.pattern)


@dataclass(frozen=True)
class BoundAcl:
    """An ACL on a named resource."""

    resource: Resource
    name: str
    operation: Operation
    pattern: Pattern = Pattern.LITERAL

    def __str__(self) -> str:
        prefix = " (prefixed)" if self.pattern is Pattern.PREFIXED else ""
        return f"{self.operation} on {self.resource} {self.name!r}{prefix}"


_T, _G, _X = Resource.TOPIC, Resource.GROUP, Resource.TRANSACTIONAL_ID
_R, _W, _C = Operation.READ, Operation.WRITE, Operation.DESCRIBE_CONFIGS

_OUTPUTS = (
    Acl(_T, "--output-topic", _W, why="publish classified articles"),
    Acl(_T, "--output-topic", _C, why="read max.message.bytes at session start"),
    Acl(_T, "--dead-letter-topic", _W, why="publish dead letters"),
    Acl(_T, "--dead-letter-topic", _C, why="read max.message.bytes at session start"),
)

#: Every mode's ACLs (ALLOW, for the service's principal, from any host).
ACLS: Mapping[Mode, tuple[Acl, ...]] = {
    Mode.SERVE: (
        Acl(_T, "--input-topic", _R, why="consume articles"),
        *_OUTPUTS,
        Acl(_G, "--group-id", _R, why="join the group, commit offsets"),
    ),
    Mode.SERVE_EXACTLY_ONCE: (
        Acl(_T, "--input-topic", _R, why="consume articles"),
        *_OUTPUTS,
        Acl(_G, "--group-id", _R, why="join the group, commit offsets in the transaction"),
        Acl(
            _X,
            "--transactional-id-prefix",
            _W,
            Pattern.PREFIXED,
            why="one transactional producer per input partition",
        ),
    ),
    Mode.FEEDBACK: (
        Acl(_T, "--feedback-topic", _R, why="consume editor feedback"),
        Acl(_T, "--dead-letter-topic", _W, why="dead-letter invalid feedback"),
        Acl(_G, "<--group-id>.feedback", _R, why="join the feedback group, commit offsets"),
    ),
    Mode.RECLASSIFY: (
        Acl(
            _T,
            "--input-topic",
            _R,
            why="replay the range (--from-dead-letters: the dead-letter topic)",
        ),
        *_OUTPUTS,
        Acl(_G, "--group-id", _R, why="the replay's group: its plan and progress"),
    ),
    Mode.DATASET: (
        Acl(_T, "--feedback", _R, why="read the feedback topic (no group)"),
        Acl(_T, "--articles", _R, why="read the articles topic (no group)"),
    ),
    Mode.DESK: (
        Acl(_T, "--output-topic", _R, why="follow the classified articles (no group)"),
        Acl(_T, "--feedback-topic", _R, why="see which articles were judged (no group)"),
        Acl(_T, "--feedback-topic", _W, why="publish the editors' verdicts"),
    ),
}


def bound(mode: Mode, names: Mapping[str, str]) -> list[BoundAcl]:
    """``mode``'s ACLs on the resources ``names`` gives (option -> value)."""
    return [acl.bind(names) for acl in ACLS[mode]]


def table_rows() -> list[str]:
    """The Markdown rows of ``docs/security.md``'s ACL table, one per ACL."""
    return [
        f"| `{mode}` | {acl.resource} | `{acl.name}` | {acl.operation} | {acl.pattern}"
        f" | {acl.why} |"
        for mode, acls in ACLS.items()
        for acl in acls
    ]


def summary_rows() -> list[str]:
    """The Markdown rows of the README's ACL summary, one per mode."""
    rows = []
    for mode, acls in ACLS.items():
        grouped: dict[tuple[Resource, str, Pattern], list[str]] = {}
        for acl in acls:
            grouped.setdefault((acl.resource, acl.name, acl.pattern), []).append(acl.operation)
        parts = [
            f"{'+'.join(operations)} on {resource} `{name}`"
            + (" (prefixed)" if pattern is Pattern.PREFIXED else "")
            for (resource, name, pattern), operations in grouped.items()
        ]
        rows.append(f"| `{mode}` | {'; '.join(parts)} |")
    return rows
