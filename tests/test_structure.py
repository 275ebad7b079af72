"""The library's shape: imports run one way (no cycle, none inside a function, none for type
checking only), and every function is short enough to read on half a page."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

LIBRARY = Path(__file__).resolve().parent.parent / "code" / "buildllm"
MAX_LINES = 40  # of a function's body, its docstring not counted


def modules(root: Path = LIBRARY) -> dict[str, ast.Module]:
    return {p.stem: ast.parse(p.read_text(), str(p)) for p in sorted(root.glob("*.py"))}


def library_imports(tree: ast.Module) -> set[str]:
    """The buildllm modules that a module imports, at any depth of its code."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "buildllm":
                found |= {a.name for a in node.names}
            elif node.module.startswith("buildllm."):
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names
                      if a.name.startswith("buildllm.")}
    return found


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of the import graph as a list of modules, or None."""
    state: dict[str, str] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt]
            if nxt not in state and (cycle := visit(nxt, path + [nxt])):
                return cycle
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start, [start])):
            return cycle
    return None


def test_no_import_cycle_among_library_modules():
    graph = {name: library_imports(tree) - {name} for name, tree in modules().items()}
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph))}"


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


@pytest.mark.parametrize("name", sorted(modules()))
def test_imports_are_at_the_top_and_real(name):
    tree = modules()[name]
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            inner = [n for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom))]
            assert not inner, (f"{name}.{node.name} imports inside a function "
                               f"(line {inner[0].lineno})")
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            pytest.fail(f"{name} imports under TYPE_CHECKING (line {node.lineno})")


def function_lengths(tree: ast.Module):
    """(name, lines) of every function and method, without its docstring."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                body = body[1:]  # the docstring
            if body:
                yield node.name, body[-1].end_lineno - body[0].lineno + 1


@pytest.mark.parametrize("name", sorted(modules()))
def test_functions_fit_on_half_a_page(name):
    long = [(f, n) for f, n in function_lengths(modules()[name]) if n > MAX_LINES]
    assert not long, f"{name}: functions longer than {MAX_LINES} lines: {long}"


def test_the_length_check_sees_a_long_function(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_LINES + 1))
    tree = ast.parse(f'def f():\n    """Doc."""\n{body}\n')
    assert list(function_lengths(tree)) == [("f", MAX_LINES + 1)]
