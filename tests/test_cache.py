"""The Cache API over the in-memory backend: values, TTLs, stats, bad stored bytes."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from memo import MISSING, ConfigError, EncodeError, InMemoryCache, NullCache
from memo.testing import FakeClock


async def test_get_returns_the_default_on_a_miss_and_missing_tells_none_apart(
    cache: InMemoryCache,
) -> None:
    assert await cache.get("absent") is None
    assert await cache.get("absent", "fallback") == "fallback"
    await cache.set("none", None)
    assert await cache.get("none", MISSING) is None
    assert MISSING is await cache.get("absent", default=MISSING)


async def test_set_then_get_round_trips_rich_values(cache: InMemoryCache) -> None:
    value = {"user_id": 123, "role": "admin", "preferences": {"theme": "dark"}, "ids": (1, 2)}
    await cache.set("session:abc", value, ttl=1800)
    assert value == await cache.get("session:abc")


async def test_ttl_is_exact_against_the_injected_clock(
    cache: InMemoryCache, clock: FakeClock
) -> None:
    await cache.set("k", "v", ttl=30)
    clock.advance(29.999)
    assert await cache.get("k") == "v"
    clock.advance(0.001)
    assert await cache.get("k") is None


async def test_the_default_ttl_applies_when_none_is_given(clock: FakeClock) -> None:
    cache = InMemoryCache(clock=clock, default_ttl=60)
    await cache.set("k", "v")
    assert await cache.ttl("k") == 60.0
    clock.advance(60)
    assert await cache.get("k") is None


@pytest.mark.parametrize("bad", [0, -5, 10**9, "1h"])
async def test_a_bad_ttl_is_a_config_error_naming_ttl(cache: InMemoryCache, bad: Any) -> None:
    with pytest.raises(ConfigError, match="ttl"):
        await cache.set("k", "v", ttl=bad)


async def test_mutating_an_object_after_set_or_a_result_after_get_changes_nothing(
    cache: InMemoryCache,
) -> None:
    original = {"items": [1, 2], "meta": {"n": 1}}
    await cache.set("k", original)
    original["items"].append(3)
    got = await cache.get("k")
    got["meta"]["n"] = 99

    assert await cache.get("k") == {"items": [1, 2], "meta": {"n": 1}}


async def test_delete_and_exists(cache: InMemoryCache) -> None:
    await cache.set("k", 1)
    assert await cache.exists("k") is True
    assert await cache.delete("k") is True
    assert await cache.exists("k") is False
    assert await cache.delete("k") is False


async def test_get_many_returns_the_hits_only(cache: InMemoryCache) -> None:
    await cache.set_many({"a": 1, "b": None, "c": [3]}, ttl=60)
    assert await cache.get_many(["a", "b", "c", "zzz"]) == {"a": 1, "b": None, "c": [3]}
    stats = await cache.get_cache_stats()
    assert (stats["hits"], stats["misses"]) == (3, 1)


async def test_invalidate_pattern_and_invalidate_all_stay_inside_the_namespace(
    clock: FakeClock,
) -> None:
    users = InMemoryCache(clock=clock, namespace="users")
    await users.set("user:1", 1)
    await users.set("user:2", 2)
    await users.set("team:1", 3)

    assert await users.invalidate_pattern("user:*") == 2
    assert await users.get("team:1") == 3
    assert await users.clear() == 1
    assert await users.get("team:1") is None


async def test_two_namespaces_on_one_backend_do_not_see_each_other(clock: FakeClock) -> None:
    from memo import Cache
    from memo.backends import MemoryBackend

    backend = MemoryBackend(clock=clock)
    a = Cache(backend, namespace="a", clock=clock)
    b = Cache(backend, namespace="b", clock=clock)
    await a.set("k", "from a")
    assert await b.get("k") is None
    await b.invalidate_all()
    assert await a.get("k") == "from a"


async def test_stats_count_reads_for_the_hit_ratio(cache: InMemoryCache) -> None:
    await cache.set("k", 1)
    await cache.get("k")
    await cache.get("k")
    await cache.get("k")
    await cache.get("missing")
    await cache.delete("k")
    stats = await cache.get_cache_stats()

    assert stats["hits"] == 3
    assert stats["misses"] == 1
    assert stats["hit_ratio"] == 0.75
    assert stats["memory_hits"] == 3
    assert stats["redis_hits"] == 0
    assert (stats["sets"], stats["deletes"]) == (1, 1)
    assert stats["total_operations"] == 6
    for field in ("errors", "bypassed", "memory_usage", "redis"):
        assert field in stats
    assert {"entries", "total_mb", "utilization"} <= set(stats["memory_usage"])


async def test_memory_usage_reports_entries_and_utilization(clock: FakeClock) -> None:
    cache = InMemoryCache(clock=clock, memory_cache_size=4)
    for i in range(3):
        await cache.set(f"k{i}", "x" * 100)
    usage = (await cache.get_cache_stats())["memory_usage"]

    assert usage["entries"] == 3
    assert usage["utilization"] == 0.75
    assert 0 < usage["total_mb"] < 0.01


async def test_health_check_is_healthy_and_leaves_nothing_behind(cache: InMemoryCache) -> None:
    health = await cache.health_check()
    assert health["status"] == "healthy"
    assert health["reason"]
    assert (await cache.get_cache_stats())["memory_usage"]["entries"] == 0


async def test_async_with_closes_and_close_is_an_alias(clock: FakeClock) -> None:
    async with InMemoryCache(clock=clock) as cache:
        await cache.set("k", 1)
        assert await cache.get("k") == 1
    assert InMemoryCache.close is InMemoryCache.aclose


async def test_an_unencodable_value_is_an_encode_error_naming_the_type(
    cache: InMemoryCache,
) -> None:
    class Opaque:
        pass

    with pytest.raises(EncodeError, match="Opaque"):
        await cache.set("k", Opaque())


async def test_a_value_over_max_value_size_is_refused(clock: FakeClock) -> None:
    cache = InMemoryCache(clock=clock, max_value_size=1000)
    with pytest.raises(EncodeError, match="max_value_size"):
        await cache.set("k", "x" * 5000)


async def test_a_corrupt_stored_value_is_a_miss_counted_logged_and_deleted(
    cache: InMemoryCache, caplog: pytest.LogCaptureFixture
) -> None:
    await cache.set("k", {"secret": "hunter2"})
    full = cache.prefix + "k"
    data = bytearray(cache.backend.get_local(full))  # type: ignore[attr-defined]
    data[-1] ^= 0xFF
    await cache.backend.set(full, bytes(data), 60_000)

    with caplog.at_level(logging.WARNING, logger="memo"):
        assert await cache.get("k") is None

    assert await cache.backend.get(full) is None
    assert (await cache.get_cache_stats())["errors"] == 1
    assert "hunter2" not in caplog.text
    assert "corrupt" in caplog.text


async def test_a_value_from_a_newer_format_is_a_miss_but_left_in_place(
    cache: InMemoryCache,
) -> None:
    await cache.set("k", "v")
    full = cache.prefix + "k"
    data = bytearray(cache.backend.get_local(full))  # type: ignore[attr-defined]
    data[2] = 0x7F  # the format version byte
    await cache.backend.set(full, bytes(data), 60_000)

    assert await cache.get("k") is None
    assert bytes(data) == await cache.backend.get(full)


async def test_signed_caches_reject_unsigned_values(clock: FakeClock) -> None:
    from memo._options import CodecOptions
    from memo.backends import MemoryBackend
    from memo.cache import Cache

    backend = MemoryBackend(clock=clock)
    unsigned = Cache(backend, clock=clock)
    signed = Cache(backend, clock=clock, codec=CodecOptions(signing_key=b"k" * 32))
    await unsigned.set("k", "plain")
    assert await signed.get("k") is None
    await signed.set("k2", "signed")
    assert await signed.get("k2") == "signed"
    assert "k" * 32 not in repr(signed)


async def test_a_bad_namespace_is_refused_with_the_allowed_characters() -> None:
    with pytest.raises(ConfigError, match="namespace"):
        InMemoryCache(namespace="has space")


async def test_null_cache_misses_every_read_and_drops_every_write() -> None:
    cache = NullCache()
    await cache.set("k", 1)
    assert await cache.get("k") is None
    assert await cache.get_many(["k"]) == {}
    assert (await cache.get_cache_stats())["misses"] == 2
    with pytest.raises(ConfigError):
        await cache.set("k", 1, ttl=-1)


async def test_keys_lists_relative_keys_of_this_namespace_without_tag_indexes(
    clock: FakeClock,
) -> None:
    from memo.backends import MemoryBackend
    from memo.cache import Cache

    store = MemoryBackend(clock=clock)  # one store, two namespaces
    cache = Cache(store, namespace="shop", clock=clock)
    other = Cache(store, namespace="blog", clock=clock)
    await cache.set_many({"user:1": 1, "user:2": 2, "order:9": 9})
    await other.set("user:3", 3)
    await cache.tag_entry(["team"], cache.prefix + "user:1", 60_000)

    assert ["order:9", "user:1", "user:2"] == await cache.keys()
    assert ["user:1", "user:2"] == await cache.keys("user:*")
    assert 1 == len(await cache.keys("user:*", limit=1))
    with pytest.raises(ConfigError, match="limit=0"):
        await cache.keys("*", limit=0)
    with pytest.raises(ConfigError, match="pattern="):
        await cache.keys("")


async def test_a_disabled_cache_reports_healthy_and_says_why() -> None:
    health = await NullCache().health_check()
    assert "healthy" == health["status"] and "disabled" in health["reason"]
