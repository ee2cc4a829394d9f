"""The package's seams, read from its source with ``ast``.

Three rules a maintainer would otherwise enforce by review:

* no import cycle between memo's modules, counting imports made only for type checking
  and imports deferred into functions (a cycle hidden in a function is still a cycle);
* no module uses another module's ``_private`` names: not by importing them, and not by
  reaching into an object for an underscored attribute that its own module does not
  define;
* no module over 500 lines, except those listed below with their reason.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "memo"
MAX_LINES = 500

#: Modules allowed past MAX_LINES, each with the reason it is not split.
LONG_MODULES: dict[str, str] = {}

#: Underscored attributes of objects memo does not own, used on purpose.
FOREIGN_PRIVATE_OK = {
    "_asdict",  # namedtuple's public API, underscored to avoid field clashes
    "_replace",
    "_fields",
    "_field_defaults",
    "_make",
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _trees() -> dict[str, ast.Module]:
    return {name: ast.parse(path.read_text(), str(path)) for name, path in _modules().items()}


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _imports(
    module: str, tree: ast.Module, known: set[str], is_package: bool = False
) -> Iterator[tuple[str, str, int]]:
    """(imported memo module, name imported from it or "", line) for every import."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "memo":
                    yield alias.name, "", node.lineno
        elif isinstance(node, ast.ImportFrom):
            source = _resolve(module, is_package, node)
            if source.split(".")[0] != "memo":
                continue
            for alias in node.names:
                # `from memo.backends import redis` imports a module, not a name.
                sub = f"{source}.{alias.name}"
                if sub in known:
                    yield sub, "", node.lineno
                else:
                    yield source, alias.name, node.lineno


def _graph() -> dict[str, set[str]]:
    trees = _trees()
    known = set(trees)
    graph: dict[str, set[str]] = {name: set() for name in trees}
    for name, tree in trees.items():
        is_package = _modules()[name].name == "__init__.py"
        for target, _, _ in _imports(name, tree, known, is_package):
            if target in known and target != name:
                graph[name].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _own_private_names(tree: ast.Module) -> set[str]:
    """Underscored names a module defines: functions, classes, attributes, slots."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Attribute):
            names.add(node.target.attr)
        elif isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__slots__" for t in node.targets
        ):
            names.update(
                c.value
                for c in ast.walk(node.value)
                if isinstance(c, ast.Constant) and isinstance(c.value, str)
            )
    return {n for n in names if _is_private(n)}


def _private_attribute(node: ast.AST) -> tuple[str, str] | None:
    """(what is reached, the underscored name) for ``x._name`` and ``getattr(x, "_name")``."""
    if isinstance(node, ast.Attribute) and _is_private(node.attr):
        return ast.unparse(node.value), node.attr
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in ("getattr", "setattr", "hasattr", "delattr")
        and len(node.args) >= 2
        and isinstance(node.args[1], ast.Constant)
        and isinstance(node.args[1].value, str)
        and _is_private(node.args[1].value)
    ):
        return ast.unparse(node.args[0]), node.args[1].value
    return None


def _reaches_in(name: str, tree: ast.Module, known: set[str]) -> list[str]:
    found: list[str] = []
    for target, imported, line in _imports(name, tree, known):
        if imported and _is_private(imported) and target != name:
            found.append(f"{name}:{line} imports {target}.{imported}")
    own = _own_private_names(tree)
    for node in ast.walk(tree):
        reached = _private_attribute(node)
        # self._x too: a name no class of this module defines comes from a base class
        # in another module, and is that module's private state.
        if reached is None or reached[1] in own or reached[1] in FOREIGN_PRIVATE_OK:
            continue
        found.append(f"{name}:{node.lineno} uses {reached[0]}.{reached[1]}")
    return found


def _private_reaches() -> list[str]:
    trees = _trees()
    return [reach for name, tree in trees.items() for reach in _reaches_in(name, tree, set(trees))]


def test_no_import_cycles_between_modules() -> None:
    assert [] == _cycles(_graph())


def test_no_module_uses_another_modules_private_names() -> None:
    assert [] == _private_reaches()


def test_no_module_is_longer_than_the_limit_without_a_stated_reason() -> None:
    long = {
        name: len(path.read_text().splitlines())
        for name, path in _modules().items()
        if len(path.read_text().splitlines()) > MAX_LINES
    }
    assert {} == {name: n for name, n in long.items() if name not in LONG_MODULES}


@pytest.mark.parametrize(
    "source",
    [
        "import memo.b\n",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from memo.b import X\n",
        "def f():\n    from memo import b\n",
    ],
    ids=["plain", "type-checking", "deferred"],
)
def test_the_scan_sees_plain_type_checking_and_deferred_imports_as_a_cycle(source: str) -> None:
    known = {"memo", "memo.a", "memo.b"}
    found = {target for target, _, _ in _imports("memo.a", ast.parse(source), known)}
    assert {"memo.b"} == found
    assert [["memo.a", "memo.b"]] == _cycles({"memo.a": found, "memo.b": {"memo.a"}})


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from memo.b import _hidden\n", ["memo.a:1 imports memo.b._hidden"]),
        ("def f(cache):\n    return cache._stats\n", ["memo.a:2 uses cache._stats"]),
        ("class A:\n    def f(self):\n        self._x = 1\n        return self._x\n", []),
        ("class B(A):\n    def f(self):\n        return self._x\n", ["memo.a:3 uses self._x"]),
        ('def f(o):\n    return getattr(o, "_x")\n', ["memo.a:2 uses o._x"]),
        ("class A:\n    _x = 1\ndef f(a):\n    return a._x\n", []),
    ],
)
def test_the_scan_finds_reaches_into_another_modules_private_names(
    source: str, expected: list[str]
) -> None:
    known = {"memo.a", "memo.b"}
    assert expected == _reaches_in("memo.a", ast.parse(source), known)
