"""The arrows between the project's own modules: no circle, and none hidden in a function.

ARCHITECTURE.md, principles 9 and 10: heavy third-party libraries (torch, diffusers, open_clip,
great-expectations, ...) are imported inside the functions that need them, but the project's
own modules are imported at the top of the file, so that every arrow is visible and an import
cycle cannot hide inside a function. Both are read from the source with ``ast``; nothing is
imported, so the test is quick and sees imports at any depth (functions, ``TYPE_CHECKING``
blocks, ``try``) alike.
"""

from __future__ import annotations

import ast
import io
import tokenize
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("flows", "tasks", "schemas", "data_contracts", "benchmarks")


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the first-party module imported
    line: int
    in_function: bool
    # Where a comment saying why may stand: from the line before the run of import
    # statements this one belongs to, to the end of this one.
    why_from: int
    why_to: int


@cache
def modules() -> dict[str, Path]:
    """Every first-party module by dotted name (a package by its ``__init__``)."""
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _first_party(name: str) -> str | None:
    """The longest first-party module a dotted name starts with, or None."""
    known = modules()
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def _base(module: str, node: ast.ImportFrom) -> str:
    """The absolute module a ``from ... import`` names, relative imports resolved."""
    if not node.level:
        return node.module or ""
    package = module.split(".")
    if modules()[module].name != "__init__.py":
        package.pop()
    if node.level > 1:
        package = package[:len(package) - (node.level - 1)]
    return ".".join([*package, node.module] if node.module else package)


def _targets(module: str, node: ast.Import | ast.ImportFrom) -> set[str]:
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = _base(module, node)
        # `from a.b import c`: c is a module when a.b.c is one, else a name defined in a.b.
        names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules() else base
                 for alias in node.names]
    return {found for found in map(_first_party, names) if found and found != module}


def _import_statements(tree: ast.AST, in_function: bool = False
                       ) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool, int]]:
    """Every import statement at any depth, whether it is inside a function, and the line
    where its run of consecutive import statements (in the same block) begins."""
    for value in (v for _, v in ast.iter_fields(tree)):
        children = value if isinstance(value, list) else [value]
        run_start = None
        for child in children:
            if not isinstance(child, ast.AST):
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                run_start = child.lineno if run_start is None else run_start
                yield child, in_function, run_start
            else:
                run_start = None
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                       ast.Lambda))
            yield from _import_statements(child, inside)


@cache
def imports() -> tuple[Import, ...]:
    found: list[Import] = []
    for module, path in modules().items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node, in_function, run_start in _import_statements(tree):
            for target in sorted(_targets(module, node)):
                found.append(Import(module, target, node.lineno, in_function, run_start - 1,
                                     node.end_lineno or node.lineno))
    return tuple(found)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def _comment_lines(path: Path) -> set[int]:
    source = path.read_text(encoding="utf-8")
    return {token.start[0] for token in tokenize.generate_tokens(io.StringIO(source).readline)
            if token.type == tokenize.COMMENT}


def test_the_first_party_import_graph_has_no_cycle():
    graph: dict[str, set[str]] = {module: set() for module in modules()}
    for edge in imports():
        graph[edge.source].add(edge.target)
    cycle = find_cycle(graph)
    where = {(e.source, e.target): e for e in imports()}
    assert cycle is None, "import cycle: " + " -> ".join(cycle) + "\n" + "\n".join(
        f"  {a} imports {b} at {modules()[a].relative_to(REPO)}:{where[a, b].line}"
        for a, b in zip(cycle, cycle[1:], strict=False))


def test_first_party_modules_are_imported_at_the_top():
    """A first-party import inside a function needs a comment saying why (a module that
    loads torch at import, say): on its line, or on the line before the run of imports it
    stands in; third-party ones are free."""
    hidden = []
    for edge in imports():
        if not edge.in_function:
            continue
        comments = _comment_lines(modules()[edge.source])
        if not comments & set(range(edge.why_from, edge.why_to + 1)):
            hidden.append(f"{modules()[edge.source].relative_to(REPO)}:{edge.line} imports "
                          f"{edge.target} inside a function")
    assert not hidden, ("import the project's own modules at the top of the file (or say "
                        "why not in a comment):\n  " + "\n  ".join(sorted(set(hidden))))


def test_the_checker_finds_a_cycle_and_an_import_inside_a_function(tmp_path):
    """The two tests above can fail: a made-up graph with a circle, and a real module
    that is known to import something of its own inside a function."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    assert any(e.in_function for e in imports() if e.source == "flows.cli")
