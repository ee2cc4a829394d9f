"""The package's shape: exports, no pickle, README and CI in step, static checks clean."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import memo

ROOT = Path(__file__).resolve().parent.parent


def test_all_is_sorted_and_every_name_imports() -> None:
    assert sorted(memo.__all__) == memo.__all__
    for name in memo.__all__:
        assert getattr(memo, name) is not None, name


@pytest.mark.slow
def test_importing_memo_does_no_io_and_builds_no_cache() -> None:
    code = "import memo, memo._slots as s; print(s._slots, s.built_caches())"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.strip() == "{} []"


def test_no_module_imports_pickle_or_its_relatives() -> None:
    banned = re.compile(r"^\s*(import|from)\s+(c?pickle|dill|cloudpickle|marshal|shelve)\b", re.M)
    offenders = [p.name for p in (ROOT / "memo").rglob("*.py") if banned.search(p.read_text())]
    assert offenders == []


def test_ci_runs_exactly_the_test_command_the_readme_gives() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    ci_command = [line for line in ci.splitlines() if "pytest" in line and "pip" in line]
    assert len(ci_command) == 1
    assert ci_command[0].strip() in readme
    assert "MEMO_REQUIRE_REDIS=1" in ci


def test_the_exception_tree_is_the_documented_one() -> None:
    assert issubclass(memo.ConfigError, ValueError)
    assert issubclass(memo.KeyDerivationError, TypeError)
    assert issubclass(memo.BackendUnavailable, memo.BackendError)
    assert issubclass(memo.BackendTimeout, memo.BackendError)
    assert issubclass(memo.EncodeError, memo.CodecError)
    assert issubclass(memo.DecodeError, memo.CodecError)
    assert memo.InfrastructureError is memo.BackendError
    for name in memo.__all__:
        obj = getattr(memo, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, memo.MemoError), name


def _tool(name: str) -> list[str]:
    if importlib.util.find_spec(name) is None:
        pytest.fail(f"{name} is not installed: run pip install -e '.[test]'")
    return [sys.executable, "-m", name]


@pytest.mark.slow
def test_ruff_finds_nothing() -> None:
    out = subprocess.run(
        [*_tool("ruff"), "check", "memo", "tests", "examples", "benchmarks"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.slow
def test_the_tree_is_formatted_as_ruff_format_writes_it() -> None:
    out = subprocess.run(
        [*_tool("ruff"), "format", "--check", "memo", "tests", "examples", "benchmarks"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.slow
def test_mypy_strict_passes_on_the_package_and_the_typing_checks() -> None:
    """tests/typing_checks.py proves decorated signatures survive (ParamSpec)."""
    out = subprocess.run(
        [*_tool("mypy"), "memo", "tests/typing_checks.py", "examples"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stdout + out.stderr


INSTALL = 'python -m pip install -q -e ".[test]"'

WRONG_CALL = """\
from memo import cached


@cached(ttl=60)
async def f(user_id: int) -> dict[str, int]:
    return {"user_id": user_id}


async def main() -> None:
    await f("not an int")
"""


def _outside_environment() -> dict[str, str]:
    """The environment of a user's shell: nothing points Python or mypy at the clone."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MYPYPATH")}


@pytest.mark.slow
def test_mypy_outside_the_clone_sees_the_installed_signature_and_flags_a_wrong_argument(
    tmp_path: Path,
) -> None:
    """An installed memo is visible to mypy anywhere, and a decorated function keeps its
    parameter types: a str passed for an int is the one error reported."""
    env = _outside_environment()
    where = subprocess.run(
        [sys.executable, "-c", "import memo; print(memo.__file__)"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    if where.returncode != 0:
        pytest.fail(
            f"memo is not importable outside the clone: run the README's install command, "
            f"{INSTALL}, in {ROOT}\n{where.stderr}"
        )
    imported = Path(where.stdout.strip()).resolve()
    if not imported.is_relative_to(ROOT):
        pytest.fail(
            f"memo imports from {imported}, not from this clone: run the README's install "
            f"command, {INSTALL}, in {ROOT}"
        )
    _tool("mypy")
    source = tmp_path / "wrong_call.py"
    source.write_text(WRONG_CALL)
    call_line = WRONG_CALL.splitlines().index('    await f("not an int")') + 1

    out = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", source.name],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
    )

    errors = [line for line in out.stdout.splitlines() if ": error: " in line]
    assert 1 == len(errors), out.stdout + out.stderr
    assert errors[0].startswith(f"{source.name}:{call_line}: error: "), errors[0]
    assert "[arg-type]" in errors[0] and '"str"' in errors[0] and '"int"' in errors[0], errors[0]


def _importers(importtime: str, packages: set[str]) -> list[str]:
    """Each import of one of ``packages`` made from outside it, with the chain that made it.

    ``-X importtime`` prints a module after the modules it imported, indented one level
    deeper than its importer: the importer is the next line indented less.
    """
    rows: list[tuple[int, str]] = []
    for line in importtime.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        field = line.rsplit("|", 1)[1]
        name = field.strip()
        if name and name != "imported package":
            rows.append((len(field) - len(field.lstrip()), name))
    found = []
    for index, (depth, name) in enumerate(rows):
        if name.split(".")[0] not in packages:
            continue
        chain = [name]
        for outer_depth, outer in rows[index + 1 :]:
            if outer_depth < depth:
                chain.append(outer)
                depth = outer_depth
        if len(chain) > 1 and chain[1].split(".")[0] in packages:
            continue  # a submodule the package imported itself
        found.append(" <- ".join(chain))
    return found


#: What a memory-only application runs: importing, decorating, one call.
_MEMORY_ONLY_USE = """
import asyncio
from memo import InMemoryCache, ai_cached, cached

@cached(ttl=60)
async def double(x: int) -> int:
    return 2 * x

asyncio.run(double(2))
"""


@pytest.mark.slow
@pytest.mark.parametrize("code", ["import memo", _MEMORY_ONLY_USE], ids=["import", "use"])
def test_importing_memo_loads_neither_redis_nor_fastapi(code: str) -> None:
    """A memory-only user pays for no Redis client and no web framework, at import nor
    when decorating and calling."""
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=_outside_environment(),
    )
    assert out.returncode == 0, out.stderr
    loaded = _importers(out.stderr, {"redis", "fastapi"})
    assert [] == loaded, f"imported by {code!r}:\n" + "\n".join(loaded)


@pytest.mark.slow
def test_the_modules_the_docs_name_are_attributes_of_memo_after_import_memo() -> None:
    code = (
        "import memo; "
        "print(memo.backends.RedisBackend.__name__, memo.stats.CacheStats.__name__, "
        "memo.config.CacheConfig.__name__, memo.testing.FakeClock.__name__); "
        "print(sorted(n for n in dir(memo) if not n.startswith('__') and n not in memo.__all__))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    names, extra = out.stdout.splitlines()
    assert "RedisBackend CacheStats CacheConfig FakeClock" == names
    # dir() shows the public names and the submodules, not the machinery of lazy loading.
    assert "_LAZY" not in extra and "importlib" not in extra and "TYPE_CHECKING" not in extra
