"""The contract every backend keeps: bytes in, bytes out, TTLs, patterns."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from memo.backends import Backend
from memo.testing import FakeClock
from tests._backends import BACKENDS, BackendCase


@pytest.fixture(params=list(BACKENDS.values()), ids=list(BACKENDS))
def case(request: pytest.FixtureRequest) -> BackendCase:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
async def backend(
    case: BackendCase, clock: FakeClock, request: pytest.FixtureRequest
) -> AsyncIterator[Backend]:
    b = await case.make(clock, request)
    await b.clear()
    yield b
    await b.aclose()


async def expire(
    case: BackendCase, clock: FakeClock, backend: Backend, key: str, ttl_ms: int
) -> None:
    """Let ``key``'s TTL run out: move the fake clock, or wait (bounded) for the server."""
    if case.controls_time:
        clock.advance(ttl_ms / 1000)
        return
    deadline = time.monotonic() + ttl_ms / 1000 + 5
    while await backend.get(key) is not None:
        assert time.monotonic() < deadline, "entry outlived its TTL by seconds"
        await asyncio.sleep(0.02)


async def test_a_missing_key_reads_as_none(backend: Backend) -> None:
    assert await backend.get("memo:t:absent") is None


@pytest.mark.parametrize(
    "value", [b"", b"\x00\xff", b"x" * (1024 * 1024)], ids=["empty", "binary", "1MiB"]
)
async def test_bytes_round_trip_unchanged(backend: Backend, value: bytes) -> None:
    await backend.set("memo:t:k", value, 60_000)
    assert value == await backend.get("memo:t:k")


async def test_set_replaces_the_previous_value(backend: Backend) -> None:
    await backend.set("memo:t:k", b"one", 60_000)
    await backend.set("memo:t:k", b"two", 60_000)
    assert await backend.get("memo:t:k") == b"two"


async def test_get_many_answers_in_order_with_none_for_misses(backend: Backend) -> None:
    await backend.set_many({"memo:t:a": b"1", "memo:t:c": b"3"}, 60_000)
    assert await backend.get_many(["memo:t:a", "memo:t:b", "memo:t:c"]) == [b"1", None, b"3"]
    assert await backend.get_many([]) == []


async def test_delete_says_whether_the_key_was_there(backend: Backend) -> None:
    await backend.set("memo:t:k", b"v", 60_000)
    assert await backend.delete("memo:t:k") is True
    assert await backend.delete("memo:t:k") is False
    assert await backend.get("memo:t:k") is None


async def test_delete_many_counts_what_was_there(backend: Backend) -> None:
    await backend.set_many({"memo:t:a": b"1", "memo:t:b": b"2"}, 60_000)
    assert await backend.delete_many(["memo:t:a", "memo:t:b", "memo:t:zz"]) == 2
    assert await backend.get_many(["memo:t:a", "memo:t:b"]) == [None, None]


async def test_delete_pattern_follows_redis_glob_rules(backend: Backend) -> None:
    keys = ["memo:a:x1", "memo:a:x2", "memo:a:y1", "memo:ab:x1", "memo:a:*star", "memo:a:b?"]
    await backend.set_many({k: b"v" for k in keys}, 60_000)

    assert await backend.delete_pattern("memo:a:x?") == 2
    assert await backend.delete_pattern("memo:a:\\*star") == 1
    assert await backend.delete_pattern("memo:a:[by]?") == 2
    assert await backend.get("memo:ab:x1") == b"v"  # "memo:a:*" must not reach "memo:ab:"
    await backend.set("memo:a:z", b"v", 60_000)
    assert await backend.delete_pattern("memo:a:*") == 1
    assert await backend.get_many([k for k in keys if k != "memo:ab:x1"]) == [None] * 5
    assert await backend.delete_pattern("memo:nothing:*") == 0


async def test_character_classes_and_negation(backend: Backend) -> None:
    await backend.set_many({f"memo:c:{ch}": b"v" for ch in "abcxyz"}, 60_000)
    assert await backend.delete_pattern("memo:c:[a-c]") == 3
    assert await backend.delete_pattern("memo:c:[^z]") == 2
    assert await backend.get("memo:c:z") == b"v"


async def test_scan_keys_lists_live_matching_keys_up_to_the_limit(
    backend: Backend, case: BackendCase, clock: FakeClock
) -> None:
    await backend.set_many({f"memo:s:{i}": b"v" for i in range(30)}, 60_000)
    await backend.set("memo:other:1", b"v", 60_000)
    await backend.set("memo:s:short", b"v", 100)

    assert sorted(await backend.scan_keys("memo:s:[0-9]*", 100)) == sorted(
        f"memo:s:{i}" for i in range(30)
    )
    some = await backend.scan_keys("memo:s:*", 7)
    assert len(some) == 7 and all(k.startswith("memo:s:") for k in some)
    assert await backend.scan_keys("memo:none:*", 10) == []
    await expire(case, clock, backend, "memo:s:short", 100)
    assert "memo:s:short" not in await backend.scan_keys("memo:s:*", 100)


async def test_clear_removes_everything(backend: Backend) -> None:
    await backend.set_many({"memo:t:a": b"1", "memo:u:b": b"2"}, 60_000)
    await backend.clear()
    assert await backend.get_many(["memo:t:a", "memo:u:b"]) == [None, None]


async def test_ttl_reports_remaining_milliseconds(backend: Backend) -> None:
    await backend.set("memo:t:k", b"v", 30_000)
    remaining = await backend.ttl("memo:t:k")
    assert remaining is not None and 25_000 < remaining <= 30_000
    assert await backend.ttl("memo:t:absent") is None


async def test_an_entry_expires_after_its_ttl(
    case: BackendCase, backend: Backend, clock: FakeClock
) -> None:
    ttl_ms = 5_000 if case.controls_time else 150
    await backend.set("memo:t:k", b"v", ttl_ms)
    if case.controls_time:
        clock.advance(ttl_ms / 1000 - 0.001)
        assert await backend.get("memo:t:k") == b"v"
    await expire(case, clock, backend, "memo:t:k", ttl_ms)
    assert await backend.get("memo:t:k") is None
    assert await backend.ttl("memo:t:k") is None


async def test_setting_again_restarts_the_ttl(
    case: BackendCase, backend: Backend, clock: FakeClock
) -> None:
    if case.controls_time:
        await backend.set("memo:t:k", b"v", 10_000)
        clock.advance(8)
        await backend.set("memo:t:k", b"w", 10_000)
        clock.advance(8)
        assert b"w" == await backend.get("memo:t:k")
        return
    # The server keeps its own time: wait until the entry shows some of its TTL used up,
    # then write again and see the remaining lifetime back above what it had come down to.
    await backend.set("memo:t:k", b"v", 60_000)
    for _ in range(2000):
        used = await backend.ttl("memo:t:k")
        if used is not None and used < 59_800:  # 200 ms used: a margin no hiccup closes
            break
        await asyncio.sleep(0.002)
    else:
        pytest.fail("the server never counted the first TTL down")
    await backend.set("memo:t:k", b"w", 60_000)
    restarted = await backend.ttl("memo:t:k")
    assert used is not None and restarted is not None and used < restarted
    assert b"w" == await backend.get("memo:t:k")


@pytest.mark.parametrize("ttl_ms", [0, -1])
async def test_a_non_positive_ttl_is_refused(backend: Backend, ttl_ms: int) -> None:
    with pytest.raises(ValueError):
        await backend.set("memo:t:k", b"v", ttl_ms)


async def test_aclose_is_idempotent(
    case: BackendCase, clock: FakeClock, request: pytest.FixtureRequest
) -> None:
    b = await case.make(clock, request)
    await b.aclose()
    await b.aclose()
