"""Promises the configuration layer, the factory and single-flight keep at their edges.

Each case here once broke: bad option types surfaced as AttributeError or a bare
ValueError, errors named internal spellings, joiners of an unstored computation shared
the starter's object, and joiners were counted as misses.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from memo import (
    MISSING,
    AIResponseCache,
    AISettings,
    CacheConfig,
    CacheFactory,
    ConfigError,
    GenericRedisCache,
    InMemoryCache,
    ai_cached,
    cached,
)


async def until_coalesced(fn: Any, joiners: int) -> None:
    """Yield to the loop until ``joiners`` callers wait on ``fn``'s computation."""
    for _ in range(1000):
        if fn.stats()["coalesced"] >= joiners:
            return
        await asyncio.sleep(0)  # one turn of the loop, not a wait for time
    raise AssertionError(f"{fn.stats()['coalesced']} of {joiners} callers joined")


async def test_operation_ttls_that_are_not_a_mapping_are_a_config_error_naming_them() -> None:
    with pytest.raises(ConfigError, match=r"^operation_ttls='invalid': pass a mapping"):
        await CacheFactory().for_ai_app(operation_ttls="invalid")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"^operation_ttls='not_a_dict': pass a mapping"):
        await CacheFactory().create_cache_from_config({"operation_ttls": "not_a_dict"})


async def test_an_operation_ttl_out_of_range_names_the_operation() -> None:
    with pytest.raises(ConfigError, match=r"operation_ttls\['summarize'\]"):
        await CacheFactory().for_ai_app(operation_ttls={"summarize": -5})


@pytest.mark.parametrize(
    ("call", "named"),
    [
        ({"memory_cache_size": -1}, "memory_cache_size=-1"),
        ({"memory_cache_size": True}, "memory_cache_size=True"),
        ({"compression_level": 12}, "compression_level=12"),
        ({"operation_timeout": True}, "operation_timeout=True"),
        ({"max_connections": 2.5}, "max_connections=2.5"),
    ],
)
async def test_factory_errors_name_the_argument_the_user_passed(
    call: dict[str, Any], named: str
) -> None:
    with pytest.raises(ConfigError, match=f"^{named}"):
        await CacheFactory().for_testing(use_memory_cache=True, **call)
    with pytest.raises(ConfigError, match=f"^{named}"):
        CacheConfig(**call)


async def test_an_unknown_factory_option_is_named_with_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="max_size"):
        await CacheFactory().for_web_app(max_size=10)


def test_a_bool_is_refused_where_a_number_is_meant() -> None:
    with pytest.raises(ConfigError, match=r"^memory_cache_size=True"):
        InMemoryCache(memory_cache_size=True)
    with pytest.raises(ConfigError, match=r"^text_hash_threshold=False"):
        AISettings(text_hash_threshold=False)


async def test_the_ai_cache_wraps_a_cache_and_says_so_in_its_repr() -> None:
    ai = await CacheFactory().for_ai_app(
        operation_ttls={"summarize": 60}, text_hash_threshold=10, namespace="ai"
    )
    assert isinstance(ai, AIResponseCache)
    assert isinstance(ai.resolve(), InMemoryCache)
    assert repr(ai).startswith("AIResponseCache(InMemoryCache(")
    assert "GenericRedisCache" not in repr(ai)
    assert 60_000 == ai.operation_ttl_ms("summarize")
    assert ai.resolve().default_ttl_ms == ai.operation_ttl_ms("other")
    await ai.aclose()


@pytest.mark.parametrize("why", ["condition", "invalidated"])
async def test_joiners_of_an_unstored_computation_get_their_own_copy(why: str) -> None:
    cache = InMemoryCache()
    gate = asyncio.Event()

    @cached(ttl=60, cache=cache, condition=lambda r: why != "condition")
    async def load(x: int) -> dict[str, list[int]]:
        await gate.wait()
        return {"items": [x]}

    callers = [asyncio.ensure_future(load(1)) for _ in range(3)]
    await until_coalesced(load, 2)
    if why == "invalidated":
        await load.invalidate(1)
    gate.set()
    first, *others = await asyncio.gather(*callers)
    assert all(r == {"items": [1]} for r in others)
    for other in others:
        assert other is not first and other["items"] is not first["items"]
    first["items"].append(2)
    assert all(r == {"items": [1]} for r in others)
    assert MISSING is await load.peek(1)  # and nothing was stored


async def test_joiners_of_a_cold_key_are_coalesced_not_misses() -> None:
    cache = InMemoryCache()
    gate = asyncio.Event()

    @cached(ttl=60, cache=cache)
    async def load(x: int) -> int:
        await gate.wait()
        return x

    callers = [asyncio.ensure_future(load(1)) for _ in range(100)]
    await until_coalesced(load, 99)
    gate.set()
    assert [1] * 100 == await asyncio.gather(*callers)
    assert 1 == await load(1)
    stats = load.stats()
    assert (stats["hits"], stats["misses"], stats["coalesced"], stats["computations"]) == (
        1,
        1,
        99,
        1,
    )
    assert 0.5 == stats["hit_ratio"]
    cache_stats = await cache.get_cache_stats()
    assert (cache_stats["misses"], cache_stats["coalesced"]) == (1, 99)


async def test_a_tagged_call_returns_its_value_while_redis_is_unreachable() -> None:
    cache = GenericRedisCache("redis://127.0.0.1:1/0", connect_timeout=0.05, operation_timeout=0.05)

    @cached(ttl=60, cache=cache, tags=("user:{user_id}",))
    async def load(user_id: int) -> dict[str, int]:
        return {"id": user_id}

    assert {"id": 7} == await load(7)
    assert {"id": 8} == await load(8)
    await cache.aclose()


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"jitter": True}, "jitter=True"),
        ({"jitter": 1.0}, "jitter=1.0"),
        ({"lock_wait": True}, "lock_wait=True"),
        ({"lock_wait": 0}, "lock_wait=0"),
    ],
)
async def test_decorator_options_are_checked_whatever_cache_is_given(
    options: dict[str, Any], named: str
) -> None:
    ai = await CacheFactory().for_ai_app()
    for cache in (None, InMemoryCache(), ai):
        with pytest.raises(ConfigError, match=f"^{named}"):
            cached(ttl=60, cache=cache, **options)
    if "lock_wait" in options:
        with pytest.raises(ConfigError, match=f"^{named}"):
            ai_cached("summarize", cache=ai, **options)
    await ai.aclose()


def test_text_hash_threshold_has_one_range_for_functions_and_ai_settings() -> None:
    @cached(ttl=60, text_hash_threshold=0)
    async def every_string_hashed(text: str) -> str:
        return text

    assert 0 == AISettings(text_hash_threshold=0).text_hash_threshold
    for bad in (-1, True, 10**10):
        with pytest.raises(ConfigError, match=r"^text_hash_threshold="):
            AISettings(text_hash_threshold=bad)
        with pytest.raises(ConfigError, match=r"^text_hash_threshold="):
            cached(ttl=60, text_hash_threshold=bad)(every_string_hashed.__wrapped__)


async def test_a_default_ttl_may_be_a_timedelta_everywhere() -> None:
    five_minutes = timedelta(minutes=5)
    web = await CacheFactory().for_web_app(default_ttl=five_minutes)
    assert 300_000 == web.default_ttl_ms
    assert five_minutes == CacheConfig(default_ttl=five_minutes).replace().default_ttl
    with pytest.raises(ConfigError, match=r"^default_ttl="):
        CacheConfig(default_ttl=timedelta(0))
    await web.aclose()


def test_flags_given_to_a_redis_cache_must_be_booleans() -> None:
    with pytest.raises(ConfigError, match=r"^enable_memory_cache='no'"):
        GenericRedisCache("redis://127.0.0.1:1/0", enable_memory_cache="no")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"^fail_on_connection_error='yes'"):
        InMemoryCache(fail_on_connection_error="yes")  # type: ignore[arg-type]


async def test_the_factory_reads_cache_redis_url_and_nothing_else_for_web_caches(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CACHE_PRESET", "no-such-preset")
    monkeypatch.setenv("CACHE_CUSTOM_CONFIG", '{"redis_url": "redis://elsewhere:1/0"}')
    cache = await CacheFactory().for_web_app(fail_on_connection_error=True)
    assert isinstance(cache, InMemoryCache)
    assert cache.fail_on_connection_error is True  # kept, though memory never fails
    await cache.aclose()


async def test_a_signing_key_reaches_the_codec_through_the_factory_and_configuration() -> None:
    signed = await CacheFactory().for_web_app(signing_key=b"k" * 32)
    assert signed.codec.options.signing_key == b"k" * 32
    assert "kkkk" not in repr(CacheConfig(signing_key=b"k" * 32))
    await signed.set("x", 1)
    assert 1 == await signed.get("x")
    await signed.aclose()


async def test_the_default_cache_takes_the_namespace_and_custom_config_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import memo

    monkeypatch.setenv("CACHE_NAMESPACE", "svc")
    monkeypatch.setenv("CACHE_CUSTOM_CONFIG", '{"l1_cache_size": 77}')
    await memo.aclose_all()
    cache = memo.default_cache()
    assert isinstance(cache, InMemoryCache)
    assert ("memo:svc:", 77) == (cache.prefix, cache.memory_cache_size)
    await memo.aclose_all()


async def test_invalidate_all_of_an_ai_function_drops_its_operations_entries_only() -> None:
    ai = await CacheFactory().for_ai_app()

    class Service:
        @ai_cached("summarize", cache=ai)
        async def summarize(self, text: str, options: dict[str, Any]) -> str:
            return text.upper()

        @ai_cached("sentiment", cache=ai)
        async def sentiment(self, text: str, options: dict[str, Any]) -> str:
            return "positive"

    service = Service()
    await service.summarize("a", {})
    await service.summarize("b", {})
    await service.sentiment("a", {})
    await ai.cache_response("c", "summarize", {}, "C")
    assert 3 == await service.summarize.invalidate_all()
    assert [] == await ai.keys("ai:summarize:*")
    assert 1 == len(await ai.keys("ai:sentiment:*"))
    await ai.aclose()


def test_tagged_calls_on_redis_work_from_several_event_loops_and_threads(
    redis_server: Any,
) -> None:
    import threading

    import memo

    cache = GenericRedisCache(redis_server.url)

    @cached(ttl=30, cache=cache, tags=("team",))
    async def load(i: int) -> dict[str, int]:
        return {"i": i}

    async def many(base: int) -> list[dict[str, int]]:
        try:
            return await asyncio.gather(*(load(base + i) for i in range(20)))
        finally:
            await memo.release_connections()  # a loop that ends closes its connections

    for n in range(3):  # one event loop after another
        assert [{"i": n * 100 + i} for i in range(20)] == asyncio.run(many(n * 100))
    errors: list[BaseException] = []

    def in_a_thread(n: int) -> None:
        try:
            assert [{"i": n * 1000 + i} for i in range(20)] == asyncio.run(many(n * 1000))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=in_a_thread, args=(n,)) for n in range(1, 5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [] == errors

    async def invalidate() -> int:
        removed = await cache.invalidate_tags("team")
        await cache.aclose()
        return removed

    assert asyncio.run(invalidate()) > 0


async def test_tag_templates_may_read_attributes_of_self_and_of_arguments() -> None:
    cache = InMemoryCache()

    class Repo:
        def __init__(self, tenant: str) -> None:
            self.tenant = tenant

        @cached(ttl=60, cache=cache, tags=("tenant:{self.tenant}", "user:{user[id]}"))
        async def profile(self, user: dict[str, int]) -> dict[str, int]:
            return {"id": user["id"]}

    acme, globex = Repo("acme"), Repo("globex")
    await acme.profile({"id": 1})
    await globex.profile({"id": 2})
    assert 1 == await cache.invalidate_tags("tenant:acme")
    assert MISSING is await acme.profile.peek({"id": 1})
    assert {"id": 2} == await globex.profile.peek({"id": 2})
    assert 1 == await cache.invalidate_tags("user:2")


async def test_enable_ai_cache_false_reaches_caches_the_factory_builds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ENABLE_AI_CACHE", "false")
    ai = await CacheFactory().for_ai_app()
    runs = 0

    @ai_cached("summarize", cache=ai)
    async def summarize(text: str, options: dict[str, Any]) -> str:
        nonlocal runs
        runs += 1
        return text

    await summarize("t", {})
    await summarize("t", {})
    assert (False, 2) == (ai.ai_enabled, runs)
    await ai.cache_response("t", "summarize", {}, "stored?")
    assert await ai.get_cached_response("t", "summarize", {}) is None
    assert 4 == (await ai.get_cache_stats())["bypassed"]
    web = await CacheFactory().for_web_app()
    assert web.ai.enabled is False
    explicit = await CacheFactory().for_ai_app(enable_ai_cache=True)
    assert explicit.ai_enabled is True
    for cache in (ai, web, explicit):
        await cache.aclose()
