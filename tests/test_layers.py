"""The house's shape: no module of inventory/ reaches itself again through its imports,
not even through an import inside a function (the layers themselves are import-linter's
contracts in pyproject.toml, run by `make test`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp

LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for other in sorted(graph.find_modules_directly_imported_by(module)):
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            group = []
            while True:
                top = stack.pop()
                group.append(top)
                if top == module:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return found


def test_no_module_imports_itself_round_a_cycle() -> None:
    assert cycles(grimp.build_graph("inventory")) == []


def test_a_cycle_is_found_where_there_is_one() -> None:
    graph = grimp.ImportGraph()
    for name in ("p", "p.a", "p.b", "p.c"):
        graph.add_module(name)
    graph.add_import(importer="p.a", imported="p.b")
    graph.add_import(importer="p.b", imported="p.a")
    graph.add_import(importer="p.c", imported="p.a")
    assert cycles(graph) == [["p.a", "p.b"]]


def test_the_layer_contracts_hold() -> None:
    done = subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout
    verdicts = [line for line in done.stdout.splitlines() if line.endswith(("KEPT", "BROKEN"))]
    assert verdicts == [
        "the layers, top first KEPT",
        "sync imports no SQLAlchemy KEPT",
        "the HTTP clients import neither the store nor the configuration KEPT",
        "the pure modules do no I/O: no database, HTTP or configuration library KEPT",
        "the fake server imports only pure modules KEPT",
    ]
