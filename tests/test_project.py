"""The package's shape: exports, no pickle, README and CI in step, static checks clean."""

from __future__ import annotations

import importlib.util
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


def test_ruff_finds_nothing() -> None:
    out = subprocess.run(
        [*_tool("ruff"), "check", "memo", "tests", "examples", "benchmarks"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_mypy_strict_passes_on_the_package_and_the_typing_checks() -> None:
    """tests/typing_checks.py proves decorated signatures survive (ParamSpec)."""
    out = subprocess.run(
        [*_tool("mypy"), "memo", "tests/typing_checks.py", "examples"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stdout + out.stderr
