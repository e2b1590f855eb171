"""The package's import graph has no cycle, function-level imports included.

Every module of ``onnxsqueeze`` is parsed (not imported) and each ``import`` / ``from ... import``
becomes an edge to the ``onnxsqueeze`` module it names, wherever it stands: at the top, or inside
a function (a function-level import that only hides a cycle is still a cycle). Imports under
``if TYPE_CHECKING:`` never run and are left out.
"""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "onnxsqueeze"


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING"
    )


def _imported(module: str, path: Path, known: dict[str, Path]) -> dict[str, int]:
    """The ``onnxsqueeze`` modules ``module`` imports (anywhere but TYPE_CHECKING), with a line."""

    def resolve(name: str) -> str | None:
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name or None

    found: dict[str, int] = {}

    def add(target: str | None, line: int) -> None:
        if target is not None and target != module:
            found.setdefault(target, line)

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for other in child.orelse:
                    visit(other)
                continue
            if isinstance(child, ast.Import):
                for alias in child.names:
                    add(resolve(alias.name), child.lineno)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    here = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
                    here = here[: len(here) - child.level + 1]
                    base = ".".join([*here, *([child.module] if child.module else [])])
                for alias in child.names:
                    full = f"{base}.{alias.name}"
                    add(full if full in known else resolve(base), child.lineno)
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    return found


def import_graph() -> dict[str, dict[str, int]]:
    known = _modules()
    return {m: _imported(m, p, known) for m, p in known.items()}


def find_cycle(graph: dict[str, dict[str, int]]) -> list[str] | None:
    """One cycle of ``graph`` as a path ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def dfs(v: str) -> list[str] | None:
        state[v] = 1
        path.append(v)
        for w in sorted(graph.get(v, {})):
            if state.get(w) == 1:
                return [*path[path.index(w) :], w]
            if w not in state and (cycle := dfs(w)) is not None:
                return cycle
        path.pop()
        state[v] = 2
        return None

    for v in sorted(graph):
        if v not in state and (cycle := dfs(v)) is not None:
            return cycle
    return None


def test_the_package_has_no_import_cycle() -> None:
    graph = import_graph()
    assert len(graph) > 50 and "onnxsqueeze.search.squeezer" in graph
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(f"{a} (line {graph[a][b]})" for a, b in itertools.pairwise(cycle))


def test_the_runner_imports_the_cli_after_its_handlers_and_the_output_sink_does_not() -> None:
    """The runner (``cli._entry``) imports the CLI only inside ``run``, after installing the signal
    handlers; the commands' output sink (``cli._output``) reaches the error mapping, never the CLI."""
    known = _modules()
    entry = ast.parse(known["onnxsqueeze.cli._entry"].read_text())
    top = {
        n.module if isinstance(n, ast.ImportFrom) else a.name
        for n in entry.body
        if isinstance(n, ast.Import | ast.ImportFrom)
        for a in n.names
    }
    assert {m for m in top if m and m.startswith("onnxsqueeze")} == {
        "onnxsqueeze.cli",
        "onnxsqueeze.cli._boundary",
    }
    assert "onnxsqueeze.cli.app" in _imported(
        "onnxsqueeze.cli._entry", known["onnxsqueeze.cli._entry"], known
    )
    graph = import_graph()
    seen, todo = set(), ["onnxsqueeze.cli._output"]
    while todo:
        v = todo.pop()
        if v not in seen:
            seen.add(v)
            todo.extend(graph[v])
    assert "onnxsqueeze.cli._boundary" in seen
    assert not {"onnxsqueeze.cli.app", "onnxsqueeze.cli._entry"} & seen


def test_the_check_finds_a_cycle_hidden_in_a_function(tmp_path: Path) -> None:
    graph = {"p.a": {"p.b": 3}, "p.b": {"p.c": 1}, "p.c": {"p.a": 9}, "p.d": {"p.a": 1}}
    assert find_cycle(graph) == ["p.a", "p.b", "p.c", "p.a"]
    assert find_cycle({"p.a": {"p.b": 1}, "p.b": {}}) is None
    pkg = tmp_path / "onnxsqueeze"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from onnxsqueeze import b\n")
    (pkg / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from onnxsqueeze import a\n"
        "def f():\n    from onnxsqueeze.a import x\n"
    )
    known = {"onnxsqueeze": pkg / "__init__.py", "onnxsqueeze.a": pkg / "a.py", "onnxsqueeze.b": pkg / "b.py"}
    assert _imported("onnxsqueeze.a", pkg / "a.py", known) == {"onnxsqueeze.b": 1}
    assert _imported("onnxsqueeze.b", pkg / "b.py", known) == {"onnxsqueeze.a": 5}  # the function's
