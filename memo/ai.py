"""``AIResponseCache``: AI responses keyed by operation, text and options.

It wraps a cache (any ``Cache``: in Redis, in memory) and reads the AI settings that
cache carries (``cache.ai``: text hashing threshold, per-operation TTLs, on/off), so
``@ai_cached`` functions bound to the same cache agree with it.
``build_key(text, operation, options)`` gives ``ai:{operation}:v1:{digest}``, the key
``@ai_cached(operation=...)`` derives for the same call, so a response stored by either
is found by the other.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any

from memo._ai_settings import AISettings
from memo._aikeys import ai_key, ai_operation_pattern
from memo._savings import usage_of
from memo._ttl import TTL, ttl_to_ms
from memo.cache import Cache

__all__ = ["AIResponseCache"]


class AIResponseCache:
    """AI responses over a cache.

    Args:
        cache: where responses live; its ``ai`` settings give the text hashing
            threshold, the per-operation TTLs and whether AI caching is on
            (``ENABLE_AI_CACHE``). ``CacheFactory.for_ai_app()`` builds one.

    Every method of the cache interface (``get``, ``set``, ``invalidate_pattern``,
    ``get_cache_stats`` …) is the wrapped cache's. Decorators given this object use the
    wrapped cache (``resolve()``).
    """

    def __init__(self, cache: Cache) -> None:
        if not isinstance(cache, Cache):
            raise TypeError(
                f"cache={cache!r}: AIResponseCache wraps a memo cache; build one with "
                f"CacheFactory().for_ai_app() or pass InMemoryCache(ai=AISettings(...))"
            )
        self.cache = cache

    # ------------------------------------------------------------------ AI responses

    @property
    def settings(self) -> AISettings:
        """The AI settings of the wrapped cache."""
        return self.cache.ai

    @property
    def text_hash_threshold(self) -> int:
        return self.cache.ai.text_hash_threshold

    @property
    def operation_ttls(self) -> Mapping[str, TTL]:
        return self.cache.ai.operation_ttls

    @property
    def ai_enabled(self) -> bool:
        return self.cache.ai.enabled

    def operation_ttl_ms(self, operation: str) -> int:
        """The TTL of ``operation`` in milliseconds: its own, else ``default_ttl``."""
        return self.cache.ai.operation_ttl_ms(operation) or self.cache.default_ttl_ms

    def build_key(self, text: str, operation: str, options: Mapping[str, Any] | None = None) -> str:
        """The key of an AI request, relative to the cache's prefix."""
        return ai_key(
            operation=operation,
            text=text,
            options=options,
            text_hash_threshold=self.cache.ai.text_hash_threshold,
        )

    async def cache_response(
        self,
        text: str,
        operation: str,
        options: Mapping[str, Any] | None = None,
        response: Any = None,
        ttl: TTL | None = None,
    ) -> None:
        """Store ``response`` for (text, operation, options) for the operation's TTL."""
        if not self.ai_enabled:
            self.cache.count_bypassed()
            return
        ttl_ms = self.operation_ttl_ms(operation) if ttl is None else ttl_to_ms(ttl)
        await self.cache.set(self.build_key(text, operation, options), response, ttl=ttl_ms / 1000)

    async def get_cached_response(
        self, text: str, operation: str, options: Mapping[str, Any] | None = None
    ) -> Any:
        """The stored response for (text, operation, options), or None."""
        if not self.ai_enabled:
            self.cache.count_bypassed()
            return None
        response = await self.cache.get(self.build_key(text, operation, options))
        usage = None if response is None else usage_of(response)
        if usage is not None:  # a hit on a reply with a usage record saved its tokens
            self.cache.record_saving(operation, usage)
        return response

    async def invalidate_operation(self, operation: str) -> int:
        """Remove every stored response of ``operation``; return how many."""
        return await self.cache.invalidate_pattern(ai_operation_pattern(operation))

    # ------------------------------------------------------------------ the cache's API

    def resolve(self) -> Cache:
        """The wrapped cache (what ``@ai_cached(cache=this)`` binds to)."""
        return self.cache

    @property
    def namespace(self) -> str:
        return self.cache.namespace

    @property
    def prefix(self) -> str:
        return self.cache.prefix

    @property
    def default_ttl_ms(self) -> int:
        return self.cache.default_ttl_ms

    async def get(self, key: str, default: Any = None) -> Any:
        return await self.cache.get(key, default)

    async def set(self, key: str, value: Any, ttl: TTL | None = None) -> None:
        await self.cache.set(key, value, ttl)

    async def delete(self, key: str) -> bool:
        return await self.cache.delete(key)

    async def exists(self, key: str) -> bool:
        return await self.cache.exists(key)

    async def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        return await self.cache.get_many(keys)

    async def set_many(self, mapping: Mapping[str, Any], ttl: TTL | None = None) -> None:
        await self.cache.set_many(mapping, ttl)

    async def invalidate_pattern(self, pattern: str) -> int:
        return await self.cache.invalidate_pattern(pattern)

    async def invalidate_all(self) -> int:
        return await self.cache.invalidate_all()

    clear = invalidate_all

    async def invalidate_tags(self, *tags: str) -> int:
        return await self.cache.invalidate_tags(*tags)

    async def keys(self, pattern: str = "*", *, limit: int = 1000) -> list[str]:
        return await self.cache.keys(pattern, limit=limit)

    async def ttl(self, key: str) -> float | None:
        return await self.cache.ttl(key)

    async def get_cache_stats(self) -> dict[str, Any]:
        out = await self.cache.get_cache_stats()
        out["cache_type"] = f"AIResponseCache({out['cache_type']})"
        out["ai"] = {
            "enabled": self.ai_enabled,
            "text_hash_threshold": self.text_hash_threshold,
            "operation_ttls": {op: ms / 1000 for op, ms in self.settings.operation_ttls_ms.items()},
            "model_prices": dict(self.settings.model_prices),
        }
        return out

    async def health_check(self) -> dict[str, Any]:
        return await self.cache.health_check()

    async def connect(self) -> bool:
        return await self.cache.connect()

    async def aclose(self) -> None:
        await self.cache.aclose()

    close = aclose

    async def __aenter__(self) -> AIResponseCache:
        await self.cache.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.cache.aclose()

    def __repr__(self) -> str:
        return f"AIResponseCache({self.cache!r})"
