"""The ACL tables of the docs are the table the secured-broker tests grant."""

from __future__ import annotations

from pathlib import Path

from service.kafka.acls import ACLS, Mode, summary_rows, table_rows

ROOT = Path(__file__).resolve().parent.parent


def _block(path: Path, marker: str) -> list[str]:
    """The table rows between ``<!-- marker ... -->`` and ``<!-- /marker -->``."""
    text = path.read_text("utf-8")
    start = text.index(f"<!-- {marker}")
    end = text.index(f"<!-- /{marker} -->")
    lines = text[start:end].splitlines()[1:]
    return [line for line in lines[2:] if line.startswith("|")]


def test_the_security_page_lists_exactly_the_acls_the_tests_grant() -> None:
    """docs/security.md's ACL table is the one in service/kafka/acls.py, row for row."""
    assert _block(ROOT / "docs" / "security.md", "acl-table") == table_rows()


def test_the_readme_summarises_the_same_acls() -> None:
    """The README's ACL summary has one row per mode, made from the same table."""
    assert _block(ROOT / "README.md", "acl-summary") == summary_rows()


def test_every_mode_has_acls_and_serve_reads_and_writes() -> None:
    """No mode is left without ACLs; serve reads its input and writes its outputs."""
    assert set(ACLS) == set(Mode)
    serve = {(acl.name, acl.operation.value) for acl in ACLS[Mode.SERVE]}
    assert {("--input-topic", "Read"), ("--output-topic", "Write")} <= serve
