"""Every usage-guide example that needs none of the reader's own services, run for real.

Each test follows one example of the usage guide, in order, against two targets: memory
only, and a real redis-server started by the suite. The guide's Redis hosts
(``redis://localhost:6379``, ``redis://redis-cluster:6379`` …) become the test server;
its database 15 stays database 15. Where the guide reads a stats field with
``.get(k, 0)``, the test asserts the field is there, so the default never hides a gap.
Databases, AI services and users are small stand-ins that count their calls.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import wraps
from typing import Any

import pytest
import redis as sync_redis

import memo
from memo import (
    AIResponseCache,
    AISettings,
    Cache,
    CacheConfigBuilder,
    CacheFactory,
    CacheInterface,
    CachePerformanceMonitor,
    GenericRedisCache,
    InfrastructureError,
    InMemoryCache,
    config_from_env,
)
from memo.backends import MemoryBackend
from tests.redis_harness import RedisServer

logger = logging.getLogger("usage-guide")


class Target:
    """Where the guide's caches live: memory only, or a real server."""

    def __init__(self, server: RedisServer | None, monkeypatch: pytest.MonkeyPatch) -> None:
        self.server = server
        self.monkeypatch = monkeypatch

    @property
    def redis(self) -> bool:
        return self.server is not None

    def url(self, db: int = 0) -> str | None:
        """The guide's Redis URL for this target (None: memory only)."""
        if self.server is None:
            return None
        return f"redis://127.0.0.1:{self.server.port}/{db}"

    def use_environment(self, db: int = 0) -> None:
        """Set CACHE_REDIS_URL as the guide's environment sections do (redis target)."""
        url = self.url(db)
        if url is not None:
            self.monkeypatch.setenv("CACHE_REDIS_URL", url)

    @property
    def cache_type(self) -> type[Cache]:
        """The cache a factory builds here: in Redis with a URL, else in memory."""
        return GenericRedisCache if self.redis else InMemoryCache

    def stored(self, cache: Any, key: str) -> bool:
        """Is ``key`` in Redis itself (redis target), or in the cache's memory (memory)?"""
        inner = cache.resolve()  # an AIResponseCache wraps the cache that stores
        if self.server is None:
            assert isinstance(inner, InMemoryCache) and isinstance(inner.backend, MemoryBackend)
            return inner.backend.get_local(inner.prefix + key) is not None
        assert isinstance(inner, GenericRedisCache)
        db = inner.redis.options.url.database
        client = sync_redis.Redis(host="127.0.0.1", port=self.server.port, db=db)
        return bool(client.exists(inner.prefix + key))


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def target(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Target:
    if request.param == "memory":
        return Target(None, monkeypatch)
    return Target(request.getfixturevalue("redis_server"), monkeypatch)


@pytest.fixture
async def factory() -> AsyncIterator[CacheFactory]:
    yield CacheFactory()
    await memo.aclose_all()


@pytest.fixture
async def closing() -> AsyncIterator[Callable[[Any], Any]]:
    """Register caches to close at the end of the test."""
    caches: list[Any] = []

    def keep(cache: Any) -> Any:
        caches.append(cache)
        return cache

    yield keep
    for cache in caches:
        await cache.aclose()


class Calls:
    """A stand-in service: returns a fresh result per call and counts the calls."""

    def __init__(self, make: Callable[..., Any]) -> None:
        self.make = make
        self.count = 0

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.count += 1
        return self.make(*args, **kwargs)


# --------------------------------------------------------------------------- quickstart


async def test_quickstart_one_line_setups(
    target: Target, factory: CacheFactory, closing: Callable[[Any], Any]
) -> None:
    target.use_environment()  # "Redis + memory fallback": the URL comes from the environment
    cache = closing(await factory.for_web_app())
    assert type(cache) is target.cache_type
    ai = closing(await factory.for_ai_app())
    assert isinstance(ai, AIResponseCache) and type(ai.cache) is target.cache_type
    assert isinstance(ai.cache.ai, AISettings) and ai.cache.ai.text_hash_threshold == 500
    testing = closing(await factory.for_testing(use_memory_cache=True))
    assert isinstance(testing, InMemoryCache)
    for c in (cache, ai, testing):
        assert isinstance(c, CacheInterface)
        await c.set("probe", 1)
        assert await c.get("probe") == 1


async def test_session_storage(
    target: Target, factory: CacheFactory, closing: Callable[[Any], Any]
) -> None:
    cache = closing(await factory.for_web_app(redis_url=target.url()))
    session_id = "s-81f2"
    await cache.set(
        f"session:{session_id}",
        {"user_id": 123, "role": "admin", "preferences": {"theme": "dark"}},
        ttl=1800,
    )
    session = await cache.get(f"session:{session_id}")
    assert session and f"Welcome back, user {session['user_id']}" == "Welcome back, user 123"
    assert session["preferences"] == {"theme": "dark"}
    assert 1790 < (await cache.ttl(f"session:{session_id}") or 0) <= 1800
    assert target.stored(cache, f"session:{session_id}")


async def test_api_response_caching(
    target: Target, factory: CacheFactory, closing: Callable[[Any], Any]
) -> None:
    cache = closing(await factory.for_web_app(redis_url=target.url()))
    expensive_weather_api = Calls(lambda city, date: {"city": city, "date": date, "temp": 21})

    async def weather(city: str, date: str) -> dict[str, Any]:
        cache_key = f"api:weather:{city}:{date}"
        weather_data = await cache.get(cache_key)
        if not weather_data:
            weather_data = await expensive_weather_api(city, date)
            await cache.set(cache_key, weather_data, ttl=3600)
        return weather_data  # type: ignore[no-any-return]

    first = await weather("Lyon", "2026-11-25")
    assert first == await weather("Lyon", "2026-11-25")
    assert expensive_weather_api.count == 1
    await weather("Oslo", "2026-11-25")
    assert expensive_weather_api.count == 2


async def test_ai_response_caching_by_keyword_and_by_position(
    target: Target, factory: CacheFactory, closing: Callable[[Any], Any]
) -> None:
    cache = closing(await factory.for_ai_app(redis_url=target.url()))
    await cache.cache_response(
        text="Analyze this document...",
        operation="summarize",
        options={"max_length": 100},
        response={"summary": "Brief overview..."},
    )
    cached = await cache.get_cached_response(
        text="Analyze this document...", operation="summarize", options={"max_length": 100}
    )
    assert cached == {"summary": "Brief overview..."}
    assert cached == await cache.get_cached_response(
        "Analyze this document...", "summarize", {"max_length": 100}
    )
    key = cache.build_key("Analyze this document...", "summarize", {"max_length": 100})
    assert target.stored(cache, key)
    assert 7190 < (await cache.ttl(key) or 0) <= 7200  # for_ai_app's summarize TTL


async def test_preset_environment_from_the_quickstart(
    target: Target, factory: CacheFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CACHE_PRESET", "development")
    target.use_environment()
    monkeypatch.setenv("ENABLE_AI_CACHE", "true")
    cache = await factory.from_env()
    try:
        assert cache.default_ttl_ms == 600_000
        assert type(cache) is target.cache_type  # development has no AI features
        await cache.set("k", "v")
        assert await cache.get("k") == "v"
    finally:
        await cache.aclose()


# --------------------------------------------------------------------------- factory methods


async def test_for_web_app_basic_and_production(
    target: Target, factory: CacheFactory, closing: Callable[[Any], Any]
) -> None:
    web_cache = closing(
        await factory.for_web_app(
            redis_url=target.url(),
            default_ttl=1800,
            enable_memory_cache=True,
            memory_cache_size=200,
            compression_threshold=2000,
            compression_level=6,
            fail_on_connection_error=False,
        )
    )
    production_web_cache = closing(
        await factory.for_web_app(
            redis_url=target.url(),
            default_ttl=3600,
            memory_cache_size=500,
            compression_threshold=1000,
            compression_level=7,
            fail_on_connection_error=True,
        )
    )
    assert (web_cache.default_ttl_ms, web_cache.compression_level) == (1_800_000, 6)
    assert web_cache.memory_usage()["max_entries"] == 200
    assert (production_web_cache.default_ttl_ms, production_web_cache.compression_level) == (
        3_600_000,
        7,
    )
    if target.redis:  # the guide's URL; a memory-only cache has no connection to fail
        assert production_web_cache.fail_on_connection_error is True
    big = {"rows": [{"id": i, "name": "x" * 20} for i in range(200)]}
    await production_web_cache.set("big", big)
    assert big == await production_web_cache.get("big")
    # One namespace: on Redis both caches read one store; memory-only, each has its own.
    assert await web_cache.get("big") == (big if target.redis else None)


async def test_for_ai_app_with_operation_ttls(
    target: Target, factory: CacheFactory, closing: Callable[[Any], Any]
) -> None:
    ai_cache = closing(
        await factory.for_ai_app(
            redis_url=target.url(),
            default_ttl=3600,
            memory_cache_size=100,
            compression_threshold=1000,
            text_hash_threshold=500,
            operation_ttls={
                "summarize": 7200,
                "sentiment": 86400,
                "key_points": 5400,
                "questions": 3600,
                "qa": 1800,
            },
            fail_on_connection_error=False,
        )
    )
    text = "word " * 200  # 1 000 characters: over the 500 threshold, so hashed in the key
    for operation, ttl in (("sentiment", 86400), ("qa", 1800), ("translate", 3600)):
        await ai_cache.cache_response(text, operation, {}, {"op": operation})
        key = ai_cache.build_key(text, operation, {})
        assert ttl - 10 < (await ai_cache.ttl(key) or 0) <= ttl, operation
        assert "word" not in key  # the text is hashed, not spelled out
    assert await ai_cache.get_cached_response(text, "qa", {}) == {"op": "qa"}


async def test_for_testing_memory_and_redis_database_15(
    target: Target, factory: CacheFactory, closing: Callable[[Any], Any]
) -> None:
    memory_test_cache = closing(
        await factory.for_testing(use_memory_cache=True, default_ttl=60, memory_cache_size=50)
    )
    assert (
        isinstance(memory_test_cache, InMemoryCache) and memory_test_cache.memory_cache_size == 50
    )
    redis_test_cache = closing(
        await factory.for_testing(
            redis_url=target.url(15),
            default_ttl=60,
            enable_memory_cache=False,
            compression_level=1,
            fail_on_connection_error=False,
        )
    )
    await redis_test_cache.set("k", {"v": 1})
    assert await redis_test_cache.get("k") == {"v": 1}
    assert 50 < (await redis_test_cache.ttl("k") or 0) <= 60
    assert type(redis_test_cache) is target.cache_type  # without a URL: in memory
    if target.redis:
        assert isinstance(redis_test_cache, GenericRedisCache)
        assert redis_test_cache.enable_memory_cache is False
        assert target.stored(redis_test_cache, "k")  # in database 15 itself


# --------------------------------------------------------------------------- configuration


async def test_preset_environment_examples_and_json_overrides(
    target: Target, monkeypatch: pytest.MonkeyPatch, factory: CacheFactory
) -> None:
    for preset in ("ai-development", "ai-production", "development"):
        monkeypatch.setenv("CACHE_PRESET", preset)
        target.use_environment()
        config = config_from_env()
        assert config.preset == preset and config.redis_url == target.url()
        cache = await factory.from_env()
        assert isinstance(cache, AIResponseCache) == preset.startswith("ai-")
        await cache.aclose()
    monkeypatch.setenv(
        "CACHE_CUSTOM_CONFIG",
        json.dumps(
            {
                "compression_threshold": 1000,
                "memory_cache_size": 100,
                "default_ttl": 3600,
                "use_tls": True,
            }
        ),
    )
    config = config_from_env()
    assert (config.compression_threshold, config.memory_cache_size) == (1000, 100)
    assert (config.default_ttl, config.use_tls) == (3600, True)


async def test_configuration_builder(
    target: Target, factory: CacheFactory, closing: Callable[[Any], Any]
) -> None:
    url = target.url() or "redis://localhost:6379"
    dev_config = (
        CacheConfigBuilder()
        .for_environment("development")
        .with_redis(url)
        .with_compression(threshold=2000, level=4)
        .with_memory_cache(size=50)
        .build()
    )
    assert (dev_config.preset, dev_config.default_ttl) == ("development", 600)
    assert (dev_config.compression_threshold, dev_config.compression_level) == (2000, 4)
    assert (dev_config.memory_cache_size, dev_config.redis_url) == (50, url)
    if target.redis:
        cache = closing(await factory.create_cache_from_config(dev_config))
        await cache.set("built", True)
        assert target.stored(cache, "built")

    prod_ai_config = (
        CacheConfigBuilder()
        .for_environment("production")
        .with_redis("redis://prod-redis:6379", use_tls=True)
        .with_compression(threshold=1000, level=6)
        .with_memory_cache(size=200)
        .with_ai_features(
            text_hash_threshold=1000,
            operation_ttls={"summarize": 14400, "sentiment": 86400, "translate": 43200},
        )
        .build()
    )
    assert prod_ai_config.use_tls and prod_ai_config.has_ai_features
    assert prod_ai_config.default_ttl == 7200  # production's
    assert dict(prod_ai_config.operation_ttls)["translate"] == 43200
    assert "prod-redis" in repr(prod_ai_config)


# --------------------------------------------------------------------------- web patterns


async def test_session_management_and_user_profile_patterns(
    target: Target, factory: CacheFactory, closing: Callable[[Any], Any]
) -> None:
    cache: CacheInterface = closing(await factory.for_web_app(redis_url=target.url()))

    async def manage_user_session(session_id: str, cache: CacheInterface) -> dict[str, Any]:
        session_key = f"session:active:{session_id}"
        session_data = await cache.get(session_key)
        if not session_data:
            return {"error": "Session expired or invalid"}
        await cache.set(session_key, session_data, ttl=3600)
        return {"session_id": session_id, "user_id": session_data.get("user_id"),
                "expires_in": 3600}  # fmt: skip

    assert await manage_user_session("gone", cache) == {"error": "Session expired or invalid"}
    await cache.set("session:active:abc", {"user_id": 7}, ttl=60)
    assert (await manage_user_session("abc", cache))["user_id"] == 7
    assert 3590 < (await cache.ttl("session:active:abc") or 0) <= 3600  # type: ignore[attr-defined]

    load_user_profile_from_db = Calls(lambda user_id: {"id": user_id, "name": "Ada"})

    async def get_user_profile(user_id: int, cache: CacheInterface) -> dict[str, Any]:
        cache_key = f"user:profile:{user_id}"
        cached_profile = await cache.get(cache_key)
        if cached_profile:
            return {**cached_profile, "from_cache": True, "cache_type": "web_optimized"}
        profile = await load_user_profile_from_db(user_id)
        await cache.set(cache_key, profile, ttl=1800)
        return {**profile, "from_cache": False}

    assert (await get_user_profile(1, cache))["from_cache"] is False
    again = await get_user_profile(1, cache)
    assert again["from_cache"] is True and again["name"] == "Ada"
    assert load_user_profile_from_db.count == 1


# --------------------------------------------------------------------------- AI patterns


@dataclass
class AIProcessRequest:
    text: str
    operation: str
    options: dict[str, Any]


@dataclass
class Document:
    id: int
    content: str


async def test_ai_request_and_batch_processing_patterns(
    target: Target, factory: CacheFactory, closing: Callable[[Any], Any]
) -> None:
    ai_cache = closing(await factory.for_ai_app(redis_url=target.url()))
    ai_service = Calls(lambda text, operation, **options: {"result": f"{operation}:{len(text)}"})

    async def process_ai_request(request: AIProcessRequest) -> dict[str, Any]:
        cached_result = await ai_cache.get_cached_response(
            text=request.text, operation=request.operation, options=request.options
        )
        if cached_result:
            return {**cached_result, "from_cache": True,
                    "operation_ttl": ai_cache.operation_ttls.get(request.operation)}  # fmt: skip
        ai_result = await ai_service(request.text, request.operation, **request.options)
        await ai_cache.cache_response(
            text=request.text,
            operation=request.operation,
            options=request.options,
            response=ai_result,
        )
        return {**ai_result, "from_cache": False, "text_length": len(request.text)}

    request = AIProcessRequest("A long article.", "summarize", {"max_length": 50})
    assert (await process_ai_request(request))["from_cache"] is False
    second = await process_ai_request(request)
    assert second["from_cache"] is True and second["operation_ttl"] == 7200
    assert ai_service.count == 1

    documents = [Document(i, f"document {i % 3}") for i in range(6)]  # 3 distinct texts

    async def batch_process_documents(docs: list[Document], operation: str) -> dict[str, Any]:
        results, cache_hits, cache_misses = [], 0, 0
        for doc in docs:
            cached_result = await ai_cache.get_cached_response(
                text=doc.content, operation=operation, options={"batch_mode": True}
            )
            if cached_result:
                results.append({**cached_result, "document_id": doc.id, "from_cache": True})
                cache_hits += 1
            else:
                result = await ai_service(doc.content, operation)
                await ai_cache.cache_response(
                    text=doc.content,
                    operation=operation,
                    options={"batch_mode": True},
                    response=result,
                )
                results.append({**result, "document_id": doc.id, "from_cache": False})
                cache_misses += 1
        return {"results": results, "cache_statistics": {
            "cache_hits": cache_hits, "cache_misses": cache_misses,
            "hit_ratio": cache_hits / len(docs) if docs else 0}}  # fmt: skip

    out = await batch_process_documents(documents, "sentiment")
    assert out["cache_statistics"] == {"cache_hits": 3, "cache_misses": 3, "hit_ratio": 0.5}
    assert [r["from_cache"] for r in out["results"]] == [False] * 3 + [True] * 3


async def test_dependency_shaped_endpoints_and_a_domain_service(
    target: Target, factory: CacheFactory, closing: Callable[[Any], Any]
) -> None:
    cache = closing(await factory.for_web_app(redis_url=target.url()))
    ai_cache = closing(await factory.for_ai_app(redis_url=target.url()))

    async def cached_api_endpoint(cache: CacheInterface) -> Any:
        return await cache.get("api_data")

    async def ai_processing_endpoint(ai_cache: AIResponseCache) -> Any:
        return await ai_cache.get_cached_response("text", "operation", {})

    assert await cached_api_endpoint(cache) is None
    await cache.set("api_data", [1, 2])
    assert await cached_api_endpoint(cache) == [1, 2]
    await ai_cache.cache_response("text", "operation", {}, "answer")
    assert await ai_processing_endpoint(ai_cache) == "answer"

    @dataclass
    class User:
        id: int
        name: str

        def to_dict(self) -> dict[str, Any]:
            return {"id": self.id, "name": self.name}

        @classmethod
        def from_dict(cls, data: dict[str, Any]) -> User:
            return cls(**data)

    class UserDomainService:
        def __init__(self, cache: CacheInterface) -> None:
            self.cache = cache
            self.loads = 0

        async def get_user_with_cache(self, user_id: int) -> User:
            cache_key = f"domain:user:{user_id}"
            cached_user = await self.cache.get(cache_key)
            if cached_user:
                return User.from_dict(cached_user)
            self.loads += 1
            user = User(user_id, "Grace")
            await self.cache.set(cache_key, user.to_dict(), ttl=3600)
            return user

    service = UserDomainService(cache)
    assert await service.get_user_with_cache(5) == await service.get_user_with_cache(5)
    assert service.loads == 1


# --------------------------------------------------------------------------- environments


async def test_development_testing_and_production_setups(
    target: Target, factory: CacheFactory, closing: Callable[[Any], Any]
) -> None:
    dev_cache = closing(
        await factory.for_web_app(
            redis_url=target.url(),
            default_ttl=900,
            memory_cache_size=50,
            compression_threshold=5000,
            compression_level=3,
            fail_on_connection_error=False,
        )
    )
    unit_test_cache = closing(
        await factory.for_testing(use_memory_cache=True, default_ttl=60, memory_cache_size=25)
    )
    integration_cache = closing(
        await factory.for_testing(
            redis_url=target.url(15),
            default_ttl=120,
            enable_memory_cache=False,
            compression_level=1,
            fail_on_connection_error=True,
        )
    )
    prod_web_cache = closing(
        await factory.for_web_app(
            redis_url=target.url(),
            default_ttl=3600,
            memory_cache_size=500,
            compression_threshold=1000,
            compression_level=7,
            fail_on_connection_error=True,
        )
    )
    prod_ai_cache = closing(
        await factory.for_ai_app(
            redis_url=target.url(),
            default_ttl=7200,
            compression_threshold=500,
            compression_level=8,
            text_hash_threshold=1000,
            memory_cache_size=200,
            operation_ttls={
                "summarize": 28800,
                "sentiment": 172800,
                "translate": 86400,
                "extract": 14400,
                "classify": 43200,
            },
            fail_on_connection_error=True,
        )
    )
    for cache, ttl in ((dev_cache, 900), (unit_test_cache, 60), (integration_cache, 120),
                       (prod_web_cache, 3600), (prod_ai_cache, 7200)):  # fmt: skip
        await cache.set("setup", {"ok": True})
        assert await cache.get("setup") == {"ok": True}
        assert cache.default_ttl_ms == ttl * 1000
    await prod_ai_cache.cache_response("t", "sentiment", {}, "positive")
    assert 172790 < (await prod_ai_cache.ttl(prod_ai_cache.build_key("t", "sentiment", {})) or 0)


async def test_a_strict_cache_refuses_an_unreachable_redis_and_a_lenient_one_degrades(
    factory: CacheFactory, closing: Callable[[Any], Any]
) -> None:
    unreachable = "redis://127.0.0.1:1/0"
    with pytest.raises(memo.BackendUnavailable, match=r"127\.0\.0\.1"):
        await factory.for_testing(redis_url=unreachable, fail_on_connection_error=True)
    lenient = closing(await factory.for_web_app(redis_url=unreachable))
    await lenient.set("k", "v")  # kept in memory while Redis is away
    assert await lenient.get("k") == "v"
    # The guide's anti-pattern: connect() on a lenient cache says False, it does not raise.
    cache = closing(GenericRedisCache(redis_url=unreachable))
    assert await cache.connect() is False


# --------------------------------------------------------------------------- practices


async def test_best_practices(
    target: Target, factory: CacheFactory, closing: Callable[[Any], Any]
) -> None:
    cache = closing(await factory.for_web_app(redis_url=target.url()))

    def user_cache_key(user_id: int) -> str:
        return f"user:profile:{user_id}"

    def session_cache_key(session_id: str) -> str:
        return f"session:active:{session_id}"

    user_data = {"id": 123}
    await cache.set(user_cache_key(123), user_data)
    assert await cache.get(user_cache_key(123)) == user_data
    assert session_cache_key("x") == "session:active:x"

    ttl_strategies = {"session": 1800, "user_profile": 3600, "api_weather": 1800,
                      "static_config": 86400, "ai_summary": 7200}  # fmt: skip
    await cache.set("session:1", {}, ttl=ttl_strategies["session"])
    await cache.set("weather:1", {}, ttl=ttl_strategies["api_weather"])
    assert 1790 < (await cache.ttl("weather:1") or 0) <= 1800

    async def robust_cache_get(key: str, default: Any = None) -> Any:
        try:
            result = await cache.get(key)
            return result if result is not None else default
        except InfrastructureError as e:  # pragma: no cover - memo's get does not raise
            logger.error("Cache infrastructure error for key %s: %s", key, e)
            return default

    assert await robust_cache_get("absent", "fallback") == "fallback"

    @dataclass
    class User:
        id: int

        def dict(self) -> dict[str, int]:
            return {"id": self.id}

    users = [User(i) for i in range(50)]
    await asyncio.gather(*(cache.set(f"user:profile:{u.id}", u.dict(), ttl=3600) for u in users))
    got = await cache.get_many([f"user:profile:{u.id}" for u in users])
    assert len(got) == 50 and got["user:profile:49"] == {"id": 49}


async def test_anti_patterns_behave_as_the_guide_warns(
    target: Target, factory: CacheFactory, closing: Callable[[Any], Any]
) -> None:
    cache = closing(await factory.for_ai_app(redis_url=target.url()))
    await cache.cache_response(
        text="Analyze this", operation="summarize", options={"length": 100}, response="s"
    )
    mismatched = await cache.get_cached_response(
        text="Analyze this", operation="summarize", options={"max_length": 100}
    )
    assert mismatched is None  # a different option name is a different request

    await cache.set("user_prefs", {"dark": True})  # no ttl: the cache's default applies
    assert abs((await cache.ttl("user_prefs") or 0) - cache.default_ttl_ms / 1000) < 10

    bounded = closing(InMemoryCache())  # memo's memory cache is never unbounded
    large_data = "x" * 100
    for i in range(bounded.memory_cache_size + 500):
        await bounded.set(f"test_{i}", large_data)
    assert (await bounded.get_cache_stats())["memory_usage"]["entries"] == bounded.memory_cache_size


# --------------------------------------------------------------------------- performance


async def test_memory_tier_and_compression_optimisation(
    target: Target, factory: CacheFactory, closing: Callable[[Any], Any]
) -> None:
    cache = closing(await factory.for_web_app(redis_url=target.url()))
    await cache.set("hot", 1)
    await cache.get("hot")
    await cache.get("cold")
    cache_stats = await cache.get_cache_stats()
    assert "hit_ratio" in cache_stats and "memory_usage" in cache_stats
    assert "utilization" in cache_stats["memory_usage"]
    hit_ratio = cache_stats.get("hit_ratio", 0)
    memory_usage = cache_stats.get("memory_usage", {})
    assert hit_ratio == 0.5
    if hit_ratio < 0.7:
        cache = closing(await factory.for_web_app(redis_url=target.url(), memory_cache_size=500))
    elif memory_usage.get("utilization", 0) > 0.9:  # pragma: no cover - not this run
        cache = closing(await factory.for_web_app(redis_url=target.url(), memory_cache_size=100))
    assert cache.memory_usage()["max_entries"] == 500

    load_from_database = Calls(lambda key: {"key": key})

    async def preload_hot_data() -> None:
        for key in ("config:feature_flags", "config:rate_limits", "user:profile:active_admin"):
            data = await cache.get(key)
            if not data:
                data = await load_from_database(key)
                await cache.set(key, data, ttl=3600)

    await preload_hot_data()
    await preload_hot_data()
    assert load_from_database.count == 3

    sample = {"rows": ["r" * 50] * 200}
    await cache.set("sample", sample)
    data_sizes = [len(json.dumps(await cache.get(k))) for k in ["sample"]]
    avg_size = sum(data_sizes) / len(data_sizes)
    assert avg_size > 10000
    small = closing(await factory.for_web_app(redis_url=target.url(), compression_threshold=2000,
                                             compression_level=3))  # fmt: skip
    large = closing(await factory.for_web_app(redis_url=target.url(), compression_threshold=500,
                                             compression_level=8))  # fmt: skip
    for c in (small, large):
        await c.set("sample", sample)
        assert await c.get("sample") == sample
    assert len(large.encode_entry(sample, 60_000)) < len(json.dumps(sample)) / 10


async def test_dynamic_ttl_strategy(
    target: Target, factory: CacheFactory, closing: Callable[[Any], Any]
) -> None:
    cache = closing(await factory.for_web_app(redis_url=target.url()))

    def calculate_dynamic_ttl(data_type: str, last_modified: datetime) -> int:
        age_hours = (datetime.now() - last_modified).total_seconds() / 3600
        base_ttl = {"user_profile": 3600, "api_response": 1800,
                    "static_content": 86400}.get(data_type, 3600)  # fmt: skip
        if age_hours > 24:
            return min(300, base_ttl)
        if age_hours > 6:
            return base_ttl // 2
        return base_ttl

    ttl = calculate_dynamic_ttl("user_profile", datetime.now() - timedelta(hours=8))
    await cache.set("user:9", {"id": 9}, ttl=ttl)
    assert 1790 < (await cache.ttl("user:9") or 0) <= 1800


# --------------------------------------------------------------------------- monitoring


async def test_statistics_health_checks_and_debugging(
    target: Target,
    factory: CacheFactory,
    closing: Callable[[Any], Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    cache = closing(await factory.for_web_app(redis_url=target.url()))
    await cache.set("a", 1)
    await cache.get("a")
    stats = await cache.get_cache_stats()
    for field in ("hit_ratio", "total_operations", "memory_usage", "hits", "misses",
                  "memory_hits", "redis_hits", "sets", "deletes", "errors", "bypassed",
                  "coalesced", "redis"):  # fmt: skip
        assert field in stats, field
    assert {"entries", "total_mb", "utilization"} <= set(stats["memory_usage"])
    assert f"Cache Hit Ratio: {stats.get('hit_ratio', 0):.2%}" == "Cache Hit Ratio: 100.00%"
    assert f"Total Operations: {stats.get('total_operations', 0):,}" == "Total Operations: 2"
    assert stats.get("memory_usage", {}).get("total_mb", 0) < 1
    assert stats["redis"]["connected"] is target.redis

    async def cache_health_check() -> dict[str, Any]:
        try:
            test_key = f"health_check_{int(time.time())}"
            await cache.set(test_key, "test_value", ttl=60)
            retrieved = await cache.get(test_key)
            await cache.delete(test_key)
            stats = await cache.get_cache_stats()
            return {
                "status": "healthy" if retrieved == "test_value" else "degraded",
                "hit_ratio": stats.get("hit_ratio", 0),
                "memory_usage_mb": stats.get("memory_usage", {}).get("total_mb", 0),
                "total_operations": stats.get("total_operations", 0),
                "timestamp": datetime.now().isoformat(),
            }
        except Exception as e:  # pragma: no cover - the guide's shape
            return {"status": "unhealthy", "error": str(e)}

    assert (await cache_health_check())["status"] == "healthy"
    built_in = await cache.health_check()
    assert built_in["status"] == "healthy" and built_in["reason"]

    def debug_cache_operations(
        func: Callable[..., Awaitable[Any]],
    ) -> Callable[..., Awaitable[Any]]:
        @wraps(func)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            operation = func.__name__
            cache_key = args[0] if args else "unknown"
            start_time = time.time()
            result = await func(*args, **kwargs)
            duration = time.time() - start_time
            if operation == "get":
                status = "HIT" if result is not None else "MISS"
                logger.debug("Cache %s %s: %s (%.3fs)", operation, status, cache_key, duration)
            return result

        return wrapper

    cache.get = debug_cache_operations(cache.get)
    cache.set = debug_cache_operations(cache.set)
    with caplog.at_level(logging.DEBUG, logger="usage-guide"):
        await cache.set("dbg", 1)
        await cache.get("dbg")
        await cache.get("nothing")
    assert "get HIT: dbg" in caplog.text and "get MISS: nothing" in caplog.text

    monitor = CachePerformanceMonitor()
    monitor.configure_thresholds({
        "memory_warning": 50_000_000,
        "memory_critical": 100_000_000,
        "hit_ratio_warning": 0.6,
        "operation_slow": 0.1,
    })  # fmt: skip
    assert all(a.threshold != "memory_warning" for a in monitor.alerts())


# --------------------------------------------------------------------------- real-world


async def test_ecommerce_cms_and_multi_tenant_services(
    target: Target, factory: CacheFactory, closing: Callable[[Any], Any]
) -> None:
    web_cache = closing(await factory.for_web_app(redis_url=target.url()))
    ai_cache = closing(await factory.for_ai_app(redis_url=target.url()))

    class CartDB:
        def __init__(self) -> None:
            self.carts: dict[int, list[dict[str, Any]]] = {}
            self.reads = 0

        async def get_cart_items(self, user_id: int) -> list[dict[str, Any]]:
            self.reads += 1
            return list(self.carts.get(user_id, []))

        async def add_cart_item(self, user_id: int, item: dict[str, Any]) -> None:
            self.carts.setdefault(user_id, []).append(item)

    class EcommerceCartService:
        def __init__(self, web_cache: CacheInterface, db: CartDB) -> None:
            self.cache, self.db = web_cache, db

        async def get_cart_items(self, user_id: int) -> Any:
            cache_key = f"cart:items:{user_id}"
            cart_items = await self.cache.get(cache_key)
            if cart_items:
                return cart_items
            cart_items = await self.db.get_cart_items(user_id)
            await self.cache.set(cache_key, cart_items, ttl=900)
            return cart_items

        async def add_item_to_cart(self, user_id: int, item_data: dict[str, Any]) -> Any:
            await self.db.add_cart_item(user_id, item_data)
            await self.cache.delete(f"cart:items:{user_id}")
            return await self.get_cart_items(user_id)

    db = CartDB()
    cart = EcommerceCartService(web_cache, db)
    assert await cart.add_item_to_cart(1, {"sku": "A"}) == [{"sku": "A"}]
    assert await cart.get_cart_items(1) == [{"sku": "A"}]
    assert await cart.add_item_to_cart(1, {"sku": "B"}) == [{"sku": "A"}, {"sku": "B"}]
    assert db.reads == 2  # once per change; the reads between were hits

    summarize = Calls(lambda text, max_length, style: {"summary": text[:10]})

    async def generate_content_summary(article_id: int, content: str) -> dict[str, Any]:
        options = {"max_length": 150, "style": "news"}
        cached_summary = await ai_cache.get_cached_response(
            text=content, operation="summarize", options=options
        )
        if cached_summary:
            return {**cached_summary, "article_id": article_id, "from_cache": True}
        summary = await summarize(text=content, max_length=150, style="news")
        await ai_cache.cache_response(
            text=content, operation="summarize", options=options, response=summary
        )
        return {**summary, "article_id": article_id, "from_cache": False}

    body = "An article body. " * 100
    assert (await generate_content_summary(1, body))["from_cache"] is False
    assert (await generate_content_summary(1, body))["from_cache"] is True
    assert summarize.count == 1

    tenant_db = Calls(lambda tenant_id, page=None: {"tenant": tenant_id, "page": page})

    async def get_tenant_users(tenant_id: str, page: int = 1) -> Any:
        cache_key = f"tenant:{tenant_id}:users:page:{page}"
        users = await web_cache.get(cache_key)
        if users:
            return users
        users = await tenant_db(tenant_id, page)
        await web_cache.set(cache_key, users, ttl=1800)
        return users

    assert await get_tenant_users("acme") != await get_tenant_users("globex")
    await get_tenant_users("acme")
    assert tenant_db.count == 2
    assert await web_cache.invalidate_pattern("tenant:acme:*") == 1
    assert await web_cache.get("tenant:globex:users:page:1") is not None


# --------------------------------------------------------------------------- testing patterns


async def test_the_guides_testing_fixtures(
    target: Target, factory: CacheFactory, closing: Callable[[Any], Any]
) -> None:
    test_cache = closing(await factory.for_testing(use_memory_cache=True))
    for i in range(100):
        await test_cache.set(f"perf_key_{i}", f"value_{i}")
    got = [await test_cache.get(f"perf_key_{i}") for i in range(100)]
    # for_testing keeps 50 entries by default: the 50 most recent survive, in order.
    assert got == [None] * 50 + [f"value_{i}" for i in range(50, 100)]
    if not target.redis:
        return
    redis_test_cache = closing(
        await factory.for_testing(redis_url=target.url(15), fail_on_connection_error=False)
    )
    await redis_test_cache.set("persist_test", {"data": "persistent"})
    new_cache = closing(await factory.for_testing(redis_url=target.url(15)))
    assert await new_cache.get("persist_test") == {"data": "persistent"}
    assert await redis_test_cache.invalidate_all() == 1
    assert await new_cache.get("persist_test") is None


async def test_pre_deployment_validation(
    target: Target, factory: CacheFactory, closing: Callable[[Any], Any]
) -> None:
    checks: list[tuple[str, str]] = []
    cache = closing(
        await factory.for_web_app(redis_url=target.url(), fail_on_connection_error=True)
    )
    checks.append(("Redis connectivity", "PASS"))
    test_key = f"deploy_test_{int(time.time())}"
    await cache.set(test_key, "test", ttl=60)
    result = await cache.get(test_key)
    await cache.delete(test_key)
    checks.append(("Basic operations", "PASS" if result == "test" else "FAIL"))
    for i in range(10):
        await cache.set(f"perf_test_{i}", f"value_{i}", ttl=60)
        assert await cache.get(f"perf_test_{i}") == f"value_{i}"
    assert checks == [("Redis connectivity", "PASS"), ("Basic operations", "PASS")]


async def test_production_environment_variables(
    target: Target, monkeypatch: pytest.MonkeyPatch, factory: CacheFactory
) -> None:
    monkeypatch.setenv("CACHE_PRESET", "production")
    target.use_environment()
    monkeypatch.setenv("ENABLE_AI_CACHE", "true")
    monkeypatch.setenv(
        "CACHE_CUSTOM_CONFIG",
        '{"compression_threshold": 1000, "compression_level": 8, "l1_cache_size": 500,'
        ' "default_ttl": 3600, "fail_on_connection_error": true}',
    )
    cache = await factory.from_env()
    try:
        assert isinstance(cache, Cache) and type(cache) is target.cache_type
        assert cache.default_ttl_ms == 3_600_000 and cache.compression_level == 8
        assert cache.memory_usage()["max_entries"] == 500
        await cache.set("deployed", True)
        assert await cache.get("deployed") is True
    finally:
        await cache.aclose()
