"""CacheFactory and AIResponseCache, on memory and on a real redis-server."""

from __future__ import annotations

from typing import Any

import pytest

from memo import (
    PRESETS,
    AIResponseCache,
    AISettings,
    BackendUnavailable,
    CacheFactory,
    GenericRedisCache,
    InMemoryCache,
    NullCache,
    ai_cached,
    get_preset,
)
from tests.redis_harness import RedisServer


async def test_for_testing_with_memory_is_an_isolated_in_memory_cache() -> None:
    cache = await CacheFactory().for_testing(
        use_memory_cache=True, default_ttl=60, memory_cache_size=50
    )
    assert isinstance(cache, InMemoryCache)
    assert (60_000, 50) == (cache.default_ttl_ms, cache.memory_cache_size)
    await cache.set("session:1", {"user_id": 123})
    assert {"user_id": 123} == await cache.get("session:1")


async def test_for_testing_on_redis_has_no_memory_tier(redis_url: str) -> None:
    cache = await CacheFactory().for_testing(redis_url=redis_url, compression_level=1)
    assert isinstance(cache, GenericRedisCache)
    assert cache.enable_memory_cache is False
    await cache.set("persist_test", {"data": "persistent"})
    other = await CacheFactory().for_testing(redis_url=redis_url)
    assert {"data": "persistent"} == await other.get("persist_test")
    await cache.aclose()
    await other.aclose()


async def test_for_web_app_keeps_values_in_redis_with_the_guide_defaults(
    redis_server: RedisServer,
) -> None:
    cache = await CacheFactory().for_web_app(
        redis_url=redis_server.url,
        default_ttl=1800,
        enable_memory_cache=True,
        memory_cache_size=200,
        compression_threshold=2000,
        compression_level=6,
        fail_on_connection_error=False,
    )
    await cache.set("api:weather:paris:2026-11-25", {"temp": 7}, ttl=3600)
    assert {"temp": 7} == await cache.get("api:weather:paris:2026-11-25")
    assert redis_server.client().exists(cache.prefix + "api:weather:paris:2026-11-25")
    assert 1_800_000 == cache.default_ttl_ms
    await cache.aclose()


async def test_for_web_app_strict_raises_when_redis_is_down_and_lenient_falls_back(
    redis_server: RedisServer,
) -> None:
    url = redis_server.url
    redis_server.kill()
    with pytest.raises(BackendUnavailable):
        await CacheFactory().for_web_app(redis_url=url, fail_on_connection_error=True)
    cache = await CacheFactory().for_web_app(redis_url=url, operation_timeout=0.3)
    await cache.set("k", 1)
    assert 1 == await cache.get("k")
    assert "degraded" == (await cache.health_check())["status"]
    await cache.aclose()


async def test_ai_responses_use_operation_ttls_and_agree_with_ai_cached(
    redis_server: RedisServer,
) -> None:
    cache = await CacheFactory().for_ai_app(
        redis_url=redis_server.url,
        default_ttl=3600,
        text_hash_threshold=500,
        operation_ttls={"summarize": 7200, "sentiment": 86400},
    )
    text = "Analyze this document... " * 100
    await cache.cache_response(
        text=text, operation="summarize", options={"max_length": 100}, response={"summary": "s"}
    )
    assert {"summary": "s"} == await cache.get_cached_response(
        text=text, operation="summarize", options={"max_length": 100.0, "style": None}
    )
    assert {"summary": "s"} == await cache.get_cached_response(
        text, "summarize", {"max_length": 100}
    )
    key = cache.build_key(text, "summarize", {"max_length": 100})
    assert key.startswith("ai:summarize:v1:") and text[:20] not in key
    ttl = await cache.ttl(key)
    assert ttl is not None and 7000 < ttl <= 7200
    await cache.cache_response(text, "translate", {}, {"t": 1})
    other = await cache.ttl(cache.build_key(text, "translate", {}))
    assert other is not None and 3500 < other <= 3600

    calls = 0

    class Service:
        @ai_cached(operation="summarize", cache=cache)
        async def summarize(self, text: str, options: dict[str, Any]) -> dict[str, str]:
            nonlocal calls
            calls += 1
            return {"summary": "computed"}

    assert {"summary": "s"} == await Service().summarize(text, {"max_length": 100})
    assert 0 == calls  # found what cache_response stored
    await cache.aclose()


async def test_ai_caching_switched_off_runs_calls_uncached_and_counts_them() -> None:
    cache = AIResponseCache(InMemoryCache(ai=AISettings(enabled=False)))
    assert cache.ai_enabled is False
    await cache.cache_response("t", "qa", {}, {"a": 1})
    assert await cache.get_cached_response("t", "qa", {}) is None
    runs = 0

    @ai_cached(operation="qa", cache=cache)
    async def answer(text: str, options: dict[str, Any]) -> int:
        nonlocal runs
        runs += 1
        return runs

    assert (1, 2) == (await answer("q", {}), await answer("q", {}))
    stats = await cache.get_cache_stats()
    assert 4 == stats["bypassed"] and 0 == stats["hits"] == stats["misses"]
    assert [] == await cache.keys()


async def test_create_cache_from_config_builds_what_the_config_says(redis_url: str) -> None:
    factory = CacheFactory()
    web = await factory.create_cache_from_config(
        {"redis_url": redis_url, "l1_cache_size": 300, "default_ttl": 900}
    )
    assert isinstance(web, GenericRedisCache) and not isinstance(web, AIResponseCache)
    assert 900_000 == web.default_ttl_ms
    assert 300 == web.memory_usage()["max_entries"]  # l1_cache_size: memory_cache_size
    ai = await factory.create_cache_from_config(get_preset("ai-production"), redis_url=redis_url)
    assert isinstance(ai, AIResponseCache)
    assert 7200 == ai.operation_ttls["sentiment"]
    assert (
        isinstance(ai.cache, GenericRedisCache) and ai.cache.ai.operation_ttls is ai.operation_ttls
    )
    memory = await factory.create_cache_from_config({"default_ttl": 900})
    assert type(memory) is InMemoryCache and 900_000 == memory.default_ttl_ms
    off = await factory.create_cache_from_config(get_preset("disabled"))
    assert isinstance(off, NullCache)
    for cache in (web, ai, memory, off):
        await cache.aclose()


async def test_from_env_reads_the_preset_and_url(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CACHE_PRESET", "production")
    monkeypatch.setenv("CACHE_REDIS_URL", redis_url)
    cache = await CacheFactory().from_env()
    assert isinstance(cache, GenericRedisCache)
    assert 7_200_000 == cache.default_ttl_ms
    assert cache.redis is not None
    await cache.aclose()


async def test_an_unknown_config_field_is_named() -> None:
    from memo import ConfigError

    with pytest.raises(ConfigError, match="compresion"):
        await CacheFactory().create_cache_from_config({"compresion_level": 3})


@pytest.mark.parametrize("name", list(PRESETS))
@pytest.mark.parametrize("with_url", [False, pytest.param(True, marks=pytest.mark.redis)])
async def test_every_preset_builds_a_working_cache_from_the_environment(
    name: str, with_url: bool, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    monkeypatch.setenv("CACHE_PRESET", name)
    if with_url:
        monkeypatch.setenv("CACHE_REDIS_URL", request.getfixturevalue("redis_url"))
    cache = await CacheFactory().from_env()
    try:
        await cache.set("k", {"v": 1})
        if name == "disabled":
            assert isinstance(cache, NullCache) and await cache.get("k") is None
            return
        assert {"v": 1} == await cache.get("k")
        assert PRESETS[name].default_ttl * 1000 == cache.default_ttl_ms
        assert isinstance(cache, AIResponseCache) == name.startswith("ai-")
        inner = cache.resolve()  # the cache itself; an AIResponseCache wraps one
        assert PRESETS[name].compression_level == inner.compression_level
        if with_url:
            assert isinstance(inner, GenericRedisCache)
            assert await inner.redis.ping()
            assert ["k"] == await cache.keys()
        else:
            assert type(inner) is InMemoryCache
    finally:
        await cache.aclose()
