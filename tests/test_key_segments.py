"""Names users give (decorator namespaces, AI operations) as key segments and patterns."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from memo import AIResponseCache, InMemoryCache
from memo._aikeys import ai_key, ai_operation_pattern
from memo._glob import compile_glob
from memo._keys import KeyBuilder, key_segment, namespace_segment
from memo.exceptions import ConfigError

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests import _keyfixtures as fx  # noqa: E402

SAFE_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-"
GLOB_UNSAFE = set(" {}*?[]\\:")


def matches(pattern: str, key: str) -> bool:
    return compile_glob(pattern).fullmatch(key) is not None


def test_namespaces_that_differ_only_in_odd_characters_are_separate_groups() -> None:
    names = ["a*b", "a b", "a?b", "a_b", "a:b", "a%b", "a%3Ab"]
    builders = [KeyBuilder(fx.get_user, namespace=n) for n in names]
    keys = [b((42,), {}) for b in builders]
    for name, builder, key in zip(names, builders, keys, strict=True):
        group = f"{namespace_segment(name)}:*"  # what invalidate_pattern gets for the group
        assert [k for k in keys if matches(group, k)] == [key], name
        assert [k for k in keys if matches(builder.pattern(), k)] == [key], name


def test_a_namespace_level_is_reached_by_its_parents_group() -> None:
    parent = KeyBuilder(fx.get_user, namespace="users")((1,), {})
    child = KeyBuilder(fx.get_user, namespace="users:admin")((1,), {})
    assert child.startswith("users:admin:")
    assert [parent, child] == [k for k in (parent, child) if matches("users:*", k)]
    assert [child] == [k for k in (parent, child) if matches("users:admin:*", k)]


def test_safe_namespaces_and_operations_keep_their_keys() -> None:
    assert KeyBuilder(fx.get_user, namespace="users.v2-a_b")((1,), {}).startswith(
        "users.v2-a_b:tests._keyfixtures.get_user:v1:1:"
    )
    assert ai_key(operation="key_points", text="t", options=None).startswith("ai:key_points:v1:")


def test_an_operation_pattern_matches_its_own_keys_and_no_other_operations() -> None:
    operations = ["qa", "qa2", "qa:v2", "q", "key points", "key_points", "key*", "é", "%C3%A9"]
    keys = {op: ai_key(operation=op, text="t", options={"n": 1}, version=3) for op in operations}
    for op in operations:
        found = [other for other, key in keys.items() if matches(ai_operation_pattern(op), key)]
        assert found == [op]


def test_an_operation_pattern_matches_no_function_key() -> None:
    key = KeyBuilder(fx.get_user, namespace="ai")((1,), {})
    assert not any(matches(ai_operation_pattern(op), key) for op in ("qa", "get_user", "tests"))


async def test_invalidating_an_operation_with_a_space_removes_its_responses_only(
    cache: InMemoryCache,
) -> None:
    ai = AIResponseCache(cache)
    for op in ("key points", "key_points", "qa", "qa2"):
        await ai.cache_response("t", op, {}, op)
    assert 1 == await ai.invalidate_operation("key points")
    assert 1 == await ai.invalidate_operation("qa")
    assert await ai.get_cached_response("t", "key points", {}) is None
    assert await ai.get_cached_response("t", "qa", {}) is None
    assert "key_points" == await ai.get_cached_response("t", "key_points", {})
    assert "qa2" == await ai.get_cached_response("t", "qa2", {})


def test_a_name_must_be_a_non_empty_str() -> None:
    for bad in ("", 1, b"ns"):
        with pytest.raises(ConfigError, match="namespace"):
            KeyBuilder(fx.get_user, namespace=bad)  # type: ignore[arg-type]
        with pytest.raises(ConfigError, match="operation"):
            ai_operation_pattern(bad)  # type: ignore[arg-type]
    assert KeyBuilder(fx.get_user, namespace=None)((1,), {}).startswith("tests.")


@given(st.text(min_size=1))
def test_a_segment_is_glob_safe_ascii_and_gives_its_name_back(name: str) -> None:
    segment = key_segment(name)
    assert segment.isascii() and segment.isprintable()
    assert not GLOB_UNSAFE & set(segment)
    assert unquote(segment, errors="surrogatepass") == name


@given(st.text(min_size=1), st.text(min_size=1))
def test_distinct_names_give_distinct_segments(first: str, second: str) -> None:
    assert (first == second) == (key_segment(first) == key_segment(second))


@given(st.text(SAFE_CHARS, min_size=1))
def test_a_safe_name_is_its_own_segment(name: str) -> None:
    assert name == key_segment(name)


@given(st.lists(st.text(st.characters() | st.sampled_from("%:*? _"), min_size=1), min_size=2))
def test_names_differing_anywhere_give_segments_no_pattern_confuses(names: list[Any]) -> None:
    segments = {key_segment(n) for n in names}
    assert len(segments) == len(set(names))
    for segment in segments:
        assert [s for s in segments if matches(f"{segment}:*", f"{s}:x")] == [segment]
