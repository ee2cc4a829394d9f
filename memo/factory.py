"""``CacheFactory``: caches built for a purpose, connected and ready.

Each method describes the cache as a ``CacheConfig`` (its own defaults first, then the
arguments given), builds it with ``build_cache`` and awaits ``connect()`` (which raises
only with ``fail_on_connection_error=True``). Arguments a method does not name are
``CacheConfig`` fields (``namespace=``, ``operation_timeout=`` …), so every knob has the
one name, default and check ``CacheConfig`` gives it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any, TypeVar

from memo._clock import Clock
from memo.ai import AIResponseCache
from memo.cache import Cache, InMemoryCache, NullCache
from memo.config import (
    PRESETS,
    CacheConfig,
    config_from_env,
    configured_ai_caching,
    configured_redis_url,
)
from memo.exceptions import ConfigError
from memo.redis_cache import GenericRedisCache

__all__ = ["DEFAULT_OPERATION_TTLS", "CacheFactory", "build_cache"]

logger = logging.getLogger("memo")

CacheT = TypeVar("CacheT", Cache, AIResponseCache)

#: The operation TTLs for_ai_app uses unless given others (seconds).
DEFAULT_OPERATION_TTLS = {
    "summarize": 7200,
    "sentiment": 86400,
    "key_points": 5400,
    "questions": 3600,
    "qa": 1800,
}

_warned_memory_only = False


def _warn_memory_only_once() -> None:
    global _warned_memory_only
    if not _warned_memory_only:
        _warned_memory_only = True
        logger.warning(
            "memo: no redis_url given and CACHE_REDIS_URL is not set: this cache keeps "
            "values in this process's memory only"
        )


def _from_environment() -> dict[str, Any]:
    """What the environment decides for a web or AI cache whatever its purpose: the
    Redis URL (``CACHE_REDIS_URL``) and whether AI calls are cached (``ENABLE_AI_CACHE``)."""
    return {"redis_url": configured_redis_url(), "enable_ai_cache": configured_ai_caching()}


def _describe(purpose: str, fields: dict[str, Any], options: dict[str, Any]) -> CacheConfig:
    """A configuration for ``purpose`` from the simple preset, ``fields`` and the caller's
    ``options``; an unknown option names itself and lists the known ones."""
    return PRESETS["simple"].replace(preset=purpose, **fields).replace(**options)


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
    ) -> Cache:
        """Redis with a memory tier: sessions, API responses, pages (30-minute TTL).

        Without ``redis_url`` or ``CACHE_REDIS_URL`` the cache keeps values in memory
        (said once in a WARNING).
        """
        clock = options.pop("clock", self._clock)
        config = _describe(
            "web",
            {
                **_from_environment(),
                **({} if redis_url is None else {"redis_url": redis_url}),
                "default_ttl": default_ttl,
                "enable_memory_cache": enable_memory_cache,
                "memory_cache_size": memory_cache_size,
                "compression_threshold": compression_threshold,
                "compression_level": compression_level,
                "fail_on_connection_error": fail_on_connection_error,
            },
            options,
        )
        return await self._ready(build_cache(config, clock))

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
        clock = options.pop("clock", self._clock)
        config = _describe(
            "ai",
            {
                **_from_environment(),
                **({} if redis_url is None else {"redis_url": redis_url}),
                "default_ttl": default_ttl,
                "enable_memory_cache": enable_memory_cache,
                "memory_cache_size": memory_cache_size,
                "compression_threshold": compression_threshold,
                "compression_level": compression_level,
                "text_hash_threshold": text_hash_threshold,
                "operation_ttls": (
                    DEFAULT_OPERATION_TTLS if operation_ttls is None else operation_ttls
                ),
                "fail_on_connection_error": fail_on_connection_error,
            },
            options,
        )
        return await self._ready(AIResponseCache(build_cache(config, clock)))

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
        or on a test Redis database without a memory tier, for predictable behaviour.
        The environment is not read: a test says what it uses."""
        memory_only = use_memory_cache or redis_url is None
        clock = options.pop("clock", self._clock)
        config = _describe(
            "testing",
            {
                "redis_url": None if memory_only else redis_url,
                "default_ttl": default_ttl,
                "enable_memory_cache": enable_memory_cache,
                "memory_cache_size": memory_cache_size,
                "compression_level": compression_level,
                "fail_on_connection_error": fail_on_connection_error,
            },
            options,
        )
        return await self._ready(build_cache(config, clock, warn=False))

    async def create_cache_from_config(
        self, config: CacheConfig | Mapping[str, Any], **overrides: Any
    ) -> Cache | AIResponseCache:
        """The cache a configuration describes (a ``CacheConfig`` or a dict of its fields).

        ``disabled`` gives a ``NullCache``; a configuration with AI features an
        ``AIResponseCache``; otherwise a ``GenericRedisCache``, or an ``InMemoryCache``
        without a Redis URL.
        """
        if isinstance(config, Mapping):
            config = CacheConfig.from_fields(config, source="config")
        if not isinstance(config, CacheConfig):
            raise ConfigError(f"config={config!r}: pass a CacheConfig or a dict of its fields")
        clock = overrides.pop("clock", self._clock)
        if overrides:
            config = config.replace(**overrides)
        cache = build_cache(config, clock)
        if config.has_ai_features and config.enabled:
            return await self._ready(AIResponseCache(cache))
        return await self._ready(cache)

    async def from_env(self) -> Cache | AIResponseCache:
        """The cache ``CACHE_PRESET`` and the other ``CACHE_*`` variables describe."""
        return await self.create_cache_from_config(config_from_env())


def build_cache(config: CacheConfig, clock: Clock = time.monotonic, *, warn: bool = True) -> Cache:
    """The (unconnected) cache of ``config``: a ``NullCache`` when caching is off, a
    ``GenericRedisCache`` with a Redis URL, else an ``InMemoryCache`` (with a WARNING
    once, unless ``warn=False``). AI settings travel on the cache (``cache.ai``)."""
    ai = config.ai_settings()
    if not config.enabled:
        return NullCache(
            namespace=config.namespace, default_ttl=config.default_ttl, ai=ai, clock=clock
        )
    redis = config.redis_options()
    if redis is None:
        if warn:
            _warn_memory_only_once()
        return InMemoryCache.from_options(
            config.memory_options(),
            config.codec_options(),
            namespace=config.namespace,
            default_ttl=config.default_ttl,
            ai=ai,
            fail_on_connection_error=config.fail_on_connection_error,
            clock=clock,
        )
    return GenericRedisCache.from_options(
        redis,
        config.memory_options(),
        config.codec_options(),
        enable_memory_cache=config.enable_memory_cache,
        fail_on_connection_error=config.fail_on_connection_error,
        namespace=config.namespace,
        default_ttl=config.default_ttl,
        ai=ai,
        clock=clock,
    )
