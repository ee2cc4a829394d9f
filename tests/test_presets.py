"""Decorator presets and the default cache: built at the first call, from the environment."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis

import memo
from memo import (
    PRESETS,
    AIResponseCache,
    ConfigError,
    GenericRedisCache,
    InMemoryCache,
    NullCache,
    cached,
)
from memo._slots import built_caches, preset_slot
from memo.backends.redis import RedisBackend
from tests._counting import Counter


@pytest.fixture(autouse=True)
async def _close_preset_caches() -> AsyncIterator[None]:
    yield
    await memo.aclose_all()


async def test_decorating_builds_nothing_and_reads_no_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CACHE_CUSTOM_CONFIG", "{not json")  # would fail if read

    @cached(ttl=60, preset="production")
    async def lazy(x: int) -> int:
        return x

    assert built_caches() == []
    assert "not built yet" in repr(lazy.cache)
    monkeypatch.delenv("CACHE_CUSTOM_CONFIG")
    assert await lazy(1) == 1
    assert "built" in repr(lazy.cache) and "not built" not in repr(lazy.cache)


async def test_a_preset_cache_takes_the_preset_figures_and_the_environment_at_first_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    @cached(preset="production")
    async def profile(user_id: int) -> dict[str, int]:
        return {"id": user_id}

    monkeypatch.setenv("CACHE_NAMESPACE", "shop")
    monkeypatch.setenv("CACHE_CUSTOM_CONFIG", '{"l1_cache_size": 7}')
    await profile(1)
    cache = profile.cache.resolve()
    assert type(cache) is InMemoryCache  # no URL: memory
    assert cache.prefix == "memo:shop:"
    assert cache.default_ttl_ms == 7200 * 1000  # ttl=None: the preset's
    assert await cache.ttl(profile.key_for(1)) == pytest.approx(7200, abs=1)
    assert cache.memory_cache_size == 7


async def test_functions_naming_one_preset_share_one_cache_and_its_stats() -> None:
    @cached(ttl=60, preset="development")
    async def first(x: int) -> int:
        return x

    @cached(ttl=60, preset="development")
    async def second(x: int) -> int:
        return x

    @cached(ttl=60, preset="minimal")
    async def other(x: int) -> int:
        return x

    await first(1)
    await second(1)
    await other(1)
    assert first.cache.resolve() is second.cache.resolve()
    assert first.cache.resolve() is not other.cache.resolve()
    assert (await first.cache.get_cache_stats())["misses"] == 2


async def test_aclose_all_closes_them_and_the_next_call_builds_from_the_new_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runs = Counter()

    @cached(ttl=60, preset="simple")
    async def count(x: int) -> int:
        return runs()

    monkeypatch.setenv("CACHE_NAMESPACE", "before")
    assert await count(1) == await count(1) == 1
    old = count.cache.resolve()
    await memo.aclose_all()
    assert old.closed
    assert built_caches() == []

    monkeypatch.setenv("CACHE_NAMESPACE", "after")
    assert await count(1) == 2  # a new, empty cache
    new = count.cache.resolve()
    assert new is not old and new.prefix == "memo:after:"
    assert await count(1) == 2


async def test_the_default_cache_is_memory_unless_cache_preset_names_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    @cached(ttl=60)
    async def plain(x: int) -> int:
        return x

    await plain(1)
    default = memo.default_cache()
    assert type(default) is InMemoryCache and default.memory_cache_size == 10_000
    await memo.aclose_all()

    monkeypatch.setenv("CACHE_PRESET", "development")
    await plain(1)
    assert plain.cache.resolve() is memo.default_cache() is preset_slot("development").get()
    assert memo.default_cache().default_ttl_ms == 600_000


async def test_cache_preset_disabled_turns_the_default_cache_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CACHE_PRESET", "disabled")
    runs = Counter()

    @cached(ttl=60)
    async def count() -> int:
        return runs()

    assert [await count(), await count()] == [1, 2]
    assert isinstance(count.cache.resolve(), NullCache)


def test_an_unknown_cache_preset_is_a_config_error_at_the_first_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    @cached(ttl=60)
    async def plain() -> int:
        return 1

    monkeypatch.setenv("CACHE_PRESET", "fastest")
    with pytest.raises(ConfigError, match=r"'fastest' is not a preset.*ai-production"):
        asyncio.run(plain())


async def test_another_functions_cache_handle_shares_its_slot() -> None:
    @cached(ttl=60, preset="minimal")
    async def first(x: int) -> int:
        return x

    @cached(ttl=60, cache=first.cache)
    async def second(x: int) -> int:
        return -x

    await second(1)
    assert second.cache.resolve() is first.cache.resolve()


async def test_enable_ai_cache_false_runs_ai_calls_uncached_and_counts_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ENABLE_AI_CACHE", "false")
    runs = Counter()

    class Service:
        @memo.ai_cached(operation="summarize", preset="ai-production")
        async def summarize(self, text: str, options: dict[str, Any]) -> int:
            return runs()

    service = Service()
    assert [await service.summarize("t", {}), await service.summarize("t", {})] == [1, 2]
    cache = Service.summarize.cache.resolve()
    assert cache.ai.enabled is False
    stats = await cache.get_cache_stats()
    assert stats["bypassed"] == 2 and stats["hits"] == stats["misses"] == 0
    ai = AIResponseCache(cache)  # agrees with the decorator: caching is off
    assert ai.ai_enabled is False
    await ai.cache_response("t", "summarize", {}, 1)
    assert await ai.get_cached_response("t", "summarize", {}) is None
    stats = await cache.get_cache_stats()
    assert stats["bypassed"] == 4 and stats["hits"] == stats["misses"] == 0
    assert await cache.keys() == []


async def test_ai_keys_follow_the_preset_caches_text_threshold() -> None:
    class Service:
        @memo.ai_cached(operation="summarize", preset="ai-development")
        async def summarize(self, text: str, options: dict[str, Any]) -> str:
            return "summary"

    text = "x" * 700  # over ai-development's 500, under the 1000 a cacheless key assumes
    await Service().summarize(text, {"max_length": 100})
    cache = AIResponseCache(Service.summarize.cache.resolve())
    assert cache.text_hash_threshold == 500
    key = cache.build_key(text, "summarize", {"max_length": 100})
    assert Service.summarize.key_for(Service(), text, {"max_length": 100}) == key
    assert await cache.get_cached_response(text, "summarize", {"max_length": 100}) == "summary"
    assert await cache.ttl(key) == pytest.approx(1800, abs=1)  # the operation's TTL


@pytest.mark.parametrize("name", list(PRESETS))
async def test_every_preset_gives_a_working_decorator_cache_in_memory(name: str) -> None:
    runs = Counter()

    @cached(preset=name)
    async def count(x: int) -> int:
        return runs()

    first, second = await count(1), await count(1)
    cached_preset = name != "disabled"
    assert (first, second) == ((1, 1) if cached_preset else (1, 2))
    assert count.cache.resolve().default_ttl_ms == PRESETS[name].default_ttl * 1000


@pytest.mark.parametrize("name", list(PRESETS))
async def test_every_preset_gives_a_working_decorator_cache_on_redis(
    name: str, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CACHE_REDIS_URL", redis_url)
    runs = Counter()

    @cached(preset=name, namespace="p")
    async def count(x: int) -> int:
        return runs()

    first, second = await count(1), await count(1)
    cache = count.cache.resolve()
    # (memo:default#fleet, the fleet's figures, sits beside the prefix, not under it)
    stored = redis.Redis.from_url(redis_url).keys("memo:default:*")
    if name == "disabled":
        assert (first, second) == (1, 2) and stored == []
        return
    assert (first, second) == (1, 1)
    assert isinstance(cache, GenericRedisCache) and isinstance(cache.redis, RedisBackend)
    assert stored == [(cache.prefix + count.key_for(1)).encode()]


def test_one_preset_cache_serves_calls_from_several_event_loops(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """asyncio.run in threads: each loop gets its own connections inside the one cache."""
    monkeypatch.setenv("CACHE_REDIS_URL", redis_url)
    runs = Counter()
    lock = threading.Lock()

    @cached(ttl=60, preset="production")
    async def count(x: int) -> int:
        with lock:
            return runs()

    results: list[int] = []

    async def job() -> int:
        try:
            return await count(5)
        finally:
            await memo.release_connections()

    def in_new_loop() -> None:
        results.append(asyncio.run(job()))

    threads = [threading.Thread(target=in_new_loop) for _ in range(2)]
    for t in threads:
        t.start()
        t.join()
    assert results == [1, 1]
    assert len({id(c) for c in built_caches()}) == 1


async def test_a_dropped_function_is_not_kept_alive_by_its_preset_cache() -> None:
    import gc
    import weakref

    @cached(ttl=60, preset="minimal")
    async def temporary(x: int) -> int:
        return x

    await temporary(1)
    plan = weakref.ref(temporary._memo_plan)  # type: ignore[attr-defined]
    del temporary
    gc.collect()
    assert plan() is None
