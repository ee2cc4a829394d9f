"""``AIResponseCache``: AI responses keyed by operation, text and options.

``build_key(text, operation, options)`` gives ``ai:{operation}:v1:{digest}``, the key
``@ai_cached(operation=...)`` derives for the same call, so a response stored by either
is found by the other. Each operation's TTL comes from ``operation_ttls``, falling back
to ``default_ttl``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from memo._keys import ai_key
from memo._ttl import TTL, ttl_to_ms
from memo.exceptions import ConfigError
from memo.redis_cache import GenericRedisCache

__all__ = ["AIResponseCache"]


class AIResponseCache(GenericRedisCache):
    """A ``GenericRedisCache`` for AI responses.

    Args:
        text_hash_threshold: texts longer than this many characters enter keys as a hash.
        operation_ttls: seconds per operation (``{"summarize": 7200, ...}``).
        ai_enabled: False makes every AI read miss and every AI write a no-op, counted
            as ``bypassed``; ``@ai_cached`` calls run uncached. None (the default) reads
            ``ENABLE_AI_CACHE`` (true unless set to false).
        Other arguments as for ``GenericRedisCache``.
    """

    def __init__(
        self,
        redis_url: str | None = None,
        *,
        text_hash_threshold: int = 1000,
        operation_ttls: Mapping[str, TTL] | None = None,
        ai_enabled: bool | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(redis_url, **kwargs)
        if not isinstance(text_hash_threshold, int) or text_hash_threshold < 1:
            raise ConfigError(
                f"text_hash_threshold={text_hash_threshold!r}: characters, an int of at least 1"
            )
        self.text_hash_threshold = text_hash_threshold
        self._operation_ttls_ms = {
            op: ttl_to_ms(ttl, f"operation_ttls[{op!r}]")
            for op, ttl in (operation_ttls or {}).items()
        }
        self.operation_ttls = {op: ms / 1000 for op, ms in self._operation_ttls_ms.items()}
        if ai_enabled is not None:
            self.ai_enabled = ai_enabled  # else ENABLE_AI_CACHE, read by Cache

    def operation_ttl_ms(self, operation: str) -> int:
        """The TTL of ``operation`` in milliseconds: its own, else ``default_ttl``."""
        return self._operation_ttls_ms.get(operation, self.default_ttl_ms)

    def build_key(self, text: str, operation: str, options: Mapping[str, Any] | None = None) -> str:
        """The key of an AI request, relative to this cache's prefix."""
        return ai_key(
            operation=operation,
            text=text,
            options=options,
            text_hash_threshold=self.text_hash_threshold,
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
            self._stats.bypassed += 1
            return
        ttl_ms = self.operation_ttl_ms(operation) if ttl is None else ttl_to_ms(ttl)
        await self.set(self.build_key(text, operation, options), response, ttl=ttl_ms / 1000)

    async def get_cached_response(
        self, text: str, operation: str, options: Mapping[str, Any] | None = None
    ) -> Any:
        """The stored response for (text, operation, options), or None."""
        if not self.ai_enabled:
            self._stats.bypassed += 1
            return None
        return await self.get(self.build_key(text, operation, options))

    async def invalidate_operation(self, operation: str) -> int:
        """Remove every stored response of ``operation``; return how many."""
        return await self.invalidate_pattern(f"ai:{operation}:*")
