"""Calls hit again and again on a memory cache are answered from what the hot path holds
(memo/_hotpath.py): every promise of a hit must hold there too."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from memo import InMemoryCache, cached
from memo.testing import FakeClock

_NAMESPACES = itertools.count()


def _held(fn: Any) -> dict[Any, Any]:
    """What the hot path of ``fn`` holds (white-box: the tests below must exercise it)."""
    cells = dict(zip(fn.__code__.co_freevars, fn.__closure__, strict=True))
    held = cells["held"].cell_contents
    assert held is not None
    # Calls of one positional int are held apart, by the int itself.
    ints = {(int, a): known for a, known in cells["held_ints"].cell_contents.items()}
    return {**held, **ints}


def _counted(cache: InMemoryCache) -> tuple[Any, list[int]]:
    calls: list[int] = []

    @cached(ttl=60, cache=cache, namespace=f"held{next(_NAMESPACES)}")
    async def user(user_id: int) -> dict[str, Any]:
        calls.append(user_id)
        return {"id": user_id, "version": len(calls), "roles": ["a", "b"]}

    return user, calls


async def _warm(fn: Any, *args: Any) -> Any:
    for _ in range(4):
        value = await fn(*args)
    assert _held(fn), "the call is held after a few hits"
    return value


async def test_a_held_hit_hands_out_an_independent_copy_each_time(cache: InMemoryCache) -> None:
    user, calls = _counted(cache)
    first = await _warm(user, 1)
    first["roles"].append("mutated")
    first["id"] = -1
    again = await user(1)
    assert {"id": 1, "version": 1, "roles": ["a", "b"]} == again
    assert again is not await user(1)
    assert [1] == calls


@pytest.mark.parametrize(
    "drop",
    ["invalidate", "delete", "pattern", "clear", "set", "all"],
)
async def test_every_way_of_dropping_an_entry_reaches_a_held_call(
    cache: InMemoryCache, drop: str
) -> None:
    user, calls = _counted(cache)
    await _warm(user, 1)
    key = user.key_for(1)
    if drop == "invalidate":
        assert await user.invalidate(1)
    elif drop == "delete":
        assert await cache.delete(key)
    elif drop == "pattern":
        assert 1 == await cache.invalidate_pattern(user.key_for(1)[:-3] + "*")
    elif drop == "clear":
        await cache.clear()
    elif drop == "set":
        await cache.set(key, {"id": 1, "version": 99, "roles": []})
    else:
        assert 1 == await user.invalidate_all()
    value = await user(1)
    if drop == "set":
        assert {"id": 1, "version": 99, "roles": []} == value
        assert [1] == calls
    else:
        assert 2 == value["version"]
        assert [1, 1] == calls


async def test_a_held_call_expires_with_its_entry(cache: InMemoryCache, clock: FakeClock) -> None:
    user, calls = _counted(cache)
    await _warm(user, 1)
    clock.advance(59.9)
    assert 1 == (await user(1))["version"]
    clock.advance(0.1)
    assert 2 == (await user(1))["version"]
    assert [1, 1] == calls


async def test_held_calls_whose_entries_share_a_deadline_are_told_apart(
    cache: InMemoryCache,
) -> None:
    """An entry is a float, its deadline: under a clock that does not move, every entry
    stored with one TTL is equal to the others as a float. Dropping one must reach its
    own call only."""
    user, calls = _counted(cache)
    await _warm(user, 1)
    await _warm(user, 2)
    assert await user.invalidate(1)
    assert 2 == (await user(2))["version"]  # still held, not computed again
    assert 3 == (await user(1))["version"]
    assert [1, 2, 1] == calls


async def test_a_held_call_evicted_from_the_tier_is_computed_again() -> None:
    cache = InMemoryCache(memory_cache_size=10, clock=FakeClock(), default_ttl=60)
    try:
        user, calls = _counted(cache)
        await _warm(user, 1)
        for other in range(100, 200):  # a hundred one-off calls push it out
            await user(other)
            await user(other)  # hit while new: they compete for the main queue
        assert 1 < (await user(1))["version"]
        assert 2 == calls.count(1)
    finally:
        await cache.aclose()


async def test_equal_arguments_of_other_types_are_not_one_held_call(
    cache: InMemoryCache,
) -> None:
    calls: list[Any] = []

    @cached(ttl=60, cache=cache)
    async def echo(x: Any) -> str:
        calls.append(x)
        return repr(x)

    await _warm(echo, 1)
    assert "True" == await echo(True)
    assert "1" == await echo(1)
    assert [1, True] == calls
    # Every kind of single argument the hot path tells apart by itself, and some it
    # leaves to the key builder: each answered as itself, computed once, hit after.
    args = [0, False, None, 0.0, "", "0", "x" * 64, "x" * 65, 2**70, -1, (0,), b"0"]
    for _ in range(4):
        for arg in args:
            assert repr(arg) == await echo(arg)
    assert [1, True, *args] == calls


async def test_what_is_held_stays_bounded_by_what_the_tier_keeps() -> None:
    cache = InMemoryCache(memory_cache_size=100, clock=FakeClock(), default_ttl=60)
    try:
        user, _ = _counted(cache)
        for n in range(20_000):
            for _ in range(3):
                await user(n)
        assert len(_held(user)) <= 2 * 1024 + 100
        assert len(cache.backend) <= 100
    finally:
        await cache.aclose()
