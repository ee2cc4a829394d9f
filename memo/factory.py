"""``CacheFactory``: caches built for a purpose, connected and ready.

Each method builds a cache, awaits ``connect()`` (which raises only with
``fail_on_connection_error=True``) and returns it. Arguments a method does not name are
passed to the cache's constructor (``namespace=``, ``operation_timeout=``, ``clock=`` …).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from typing import Any, TypeVar

from memo._clock import Clock
from memo.ai import AIResponseCache
from memo.cache import Cache, InMemoryCache, NullCache
from memo.config import ALIASES, CacheConfig, config_from_env
from memo.exceptions import ConfigError
from memo.redis_cache import GenericRedisCache

__all__ = ["CacheFactory", "build_cache"]

CacheT = TypeVar("CacheT", bound=Cache)

#: The operation TTLs for_ai_app uses unless given others (seconds).
DEFAULT_OPERATION_TTLS = {
    "summarize": 7200,
    "sentiment": 86400,
    "key_points": 5400,
    "questions": 3600,
    "qa": 1800,
}


class CacheFactory:
    """Builds caches for web applications, AI applications, tests, or a configuration."""

    def __init__(self, *, clock: Clock = time.monotonic) -> None:
        self._clock = clock

    async def _ready(self, cache: CacheT) -> CacheT:
        await cache.connect()
        return cache

    async def for_web_app(
        self,
        redis_url: str | None = None,
        *,
        default_ttl: float = 1800,
        enable_memory_cache: bool = True,
        memory_cache_size: int = 200,
        compression_threshold: int = 2000,
        compression_level: int = 6,
        fail_on_connection_error: bool = False,
        **options: Any,
    ) -> GenericRedisCache:
        """Redis with a memory tier: sessions, API responses, pages (30-minute TTL)."""
        options.setdefault("clock", self._clock)
        cache = GenericRedisCache(
            redis_url,
            default_ttl=default_ttl,
            enable_memory_cache=enable_memory_cache,
            memory_cache_size=memory_cache_size,
            compression_threshold=compression_threshold,
            compression_level=compression_level,
            fail_on_connection_error=fail_on_connection_error,
            **options,
        )
        return await self._ready(cache)

    async def for_ai_app(
        self,
        redis_url: str | None = None,
        *,
        default_ttl: float = 3600,
        enable_memory_cache: bool = True,
        memory_cache_size: int = 100,
        compression_threshold: int = 1000,
        compression_level: int = 6,
        text_hash_threshold: int = 500,
        operation_ttls: Mapping[str, float] | None = None,
        fail_on_connection_error: bool = False,
        **options: Any,
    ) -> AIResponseCache:
        """An AI response cache: per-operation TTLs, long texts hashed into keys."""
        options.setdefault("clock", self._clock)
        cache = AIResponseCache(
            redis_url,
            default_ttl=default_ttl,
            enable_memory_cache=enable_memory_cache,
            memory_cache_size=memory_cache_size,
            compression_threshold=compression_threshold,
            compression_level=compression_level,
            text_hash_threshold=text_hash_threshold,
            operation_ttls=DEFAULT_OPERATION_TTLS if operation_ttls is None else operation_ttls,
            fail_on_connection_error=fail_on_connection_error,
            **options,
        )
        return await self._ready(cache)

    async def for_testing(
        self,
        redis_url: str | None = None,
        *,
        use_memory_cache: bool = False,
        default_ttl: float = 60,
        memory_cache_size: int = 50,
        enable_memory_cache: bool = False,
        compression_level: int = 1,
        fail_on_connection_error: bool = False,
        **options: Any,
    ) -> Cache:
        """A cache for tests: in memory (``use_memory_cache=True``, or no Redis URL given),
        or on a test Redis database without a memory tier, for predictable behaviour."""
        options.setdefault("clock", self._clock)
        if use_memory_cache or redis_url is None:
            cache: Cache = InMemoryCache(
                default_ttl=default_ttl,
                max_size=memory_cache_size,
                compression_level=compression_level,
                **options,
            )
        else:
            cache = GenericRedisCache(
                redis_url,
                default_ttl=default_ttl,
                enable_memory_cache=enable_memory_cache,
                memory_cache_size=memory_cache_size,
                compression_level=compression_level,
                fail_on_connection_error=fail_on_connection_error,
                **options,
            )
        return await self._ready(cache)

    async def create_cache_from_config(
        self, config: CacheConfig | Mapping[str, Any], **overrides: Any
    ) -> Cache:
        """The cache a configuration describes (a ``CacheConfig`` or a dict of its fields).

        ``disabled`` gives a ``NullCache``; a configuration with AI features an
        ``AIResponseCache``; otherwise a ``GenericRedisCache`` (memory-only without a URL).
        """
        if isinstance(config, Mapping):
            known = {f.name for f in dataclasses.fields(CacheConfig)}
            fields = {ALIASES.get(k, k): v for k, v in config.items()}
            unknown = sorted(set(fields) - known)
            if unknown:
                raise ConfigError(
                    f"config: unknown field(s) {unknown}; known: {', '.join(sorted(known))}"
                )
            config = CacheConfig(**fields)
        if not isinstance(config, CacheConfig):
            raise ConfigError(f"config={config!r}: pass a CacheConfig or a dict of its fields")
        if overrides:
            config = config.replace(**overrides)
        return await self._ready(build_cache(config, self._clock))

    async def from_env(self) -> Cache:
        """The cache ``CACHE_PRESET`` and the other ``CACHE_*`` variables describe."""
        return await self.create_cache_from_config(config_from_env())


def build_cache(config: CacheConfig, clock: Clock = time.monotonic) -> Cache:
    """The (unconnected) cache of ``config``."""
    if not config.enabled:
        return NullCache(namespace=config.namespace, default_ttl=config.default_ttl, clock=clock)
    common: dict[str, Any] = {
        "default_ttl": config.default_ttl,
        "enable_memory_cache": config.enable_memory_cache,
        "memory_cache_size": config.memory_cache_size,
        "memory_max_ttl": config.memory_max_ttl,
        "compression_threshold": config.compression_threshold,
        "compression_level": config.compression_level,
        "fail_on_connection_error": config.fail_on_connection_error,
        "namespace": config.namespace,
        "connect_timeout": config.connect_timeout,
        "operation_timeout": config.operation_timeout,
        "max_connections": config.max_connections,
        "use_tls": config.use_tls or None,
        "ssl_ca_certs": config.ssl_ca_certs,
        "ssl_certfile": config.ssl_certfile,
        "ssl_keyfile": config.ssl_keyfile,
        "max_value_size": config.max_value_size,
        "invalidation_channel": config.invalidation_channel,
        "clock": clock,
    }
    if config.has_ai_features:
        return AIResponseCache(
            config.redis_url,
            text_hash_threshold=config.text_hash_threshold or 1000,
            operation_ttls=dict(config.operation_ttls),
            ai_enabled=config.enable_ai_cache,
            **common,
        )
    cache = GenericRedisCache(config.redis_url, **common)
    cache.ai_enabled = config.enable_ai_cache
    return cache
