"""``GenericRedisCache``: values in Redis, a bounded memory tier in front.

Building one does no I/O; ``connect()`` (which the factory and ``async with`` call) checks
that Redis answers. What happens when it does not is chosen by
``fail_on_connection_error``:

* False (default): the cache works from memory (an outage tier of ``memory_cache_size``
  entries, even with ``enable_memory_cache=False``) and goes back to Redis once it
  answers, flushing that tier first. Explicit writes that cannot reach Redis land in
  memory, are counted and logged; ``delete`` returns False.
* True: ``connect()`` and explicit writes raise ``BackendUnavailable``.

Decorated calls never fail because of Redis, whichever is chosen.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from memo._clock import Clock
from memo._ttl import TTL, ttl_to_ms
from memo.backends.base import Backend
from memo.backends.memory import MemoryBackend
from memo.backends.redis import RedisBackend
from memo.backends.tiered import TieredBackend
from memo.cache import Cache
from memo.exceptions import BackendUnavailable, ConfigError

__all__ = ["GenericRedisCache"]

logger = logging.getLogger("memo")

_warned_memory_only = False


def _warn_memory_only_once() -> None:
    global _warned_memory_only
    if not _warned_memory_only:
        _warned_memory_only = True
        logger.warning(
            "memo: no redis_url given and CACHE_REDIS_URL is not set: this cache keeps "
            "values in this process's memory only"
        )


class GenericRedisCache(Cache):
    """A cache in Redis with an in-process memory tier in front of it.

    Args:
        redis_url: ``redis://``, ``rediss://`` or ``unix://``; None reads
            ``CACHE_REDIS_URL``, and without it the cache is memory-only (said once in a
            WARNING).
        enable_memory_cache: keep a memory tier in front of Redis.
        memory_cache_size: entries in the memory tier (also the outage tier's size).
        memory_max_ttl: seconds a memory-tier copy may live, at most (it never outlives
            the Redis entry either).
        fail_on_connection_error: see the module docstring.
        connect_timeout, operation_timeout: seconds; the operation deadline covers pool
            wait, retry and I/O.
        max_connections: the pool's size; callers wait (within the deadline) for a
            free connection rather than fail.
        use_tls, ssl_ca_certs, ssl_certfile, ssl_keyfile: TLS settings.
        invalidation_channel: announce this cache's writes on Redis pub/sub and drop
            what other processes announce from the memory tier (default True). Turn it
            off only where no other process keeps a memory tier of the same keys.
        Other arguments as for ``Cache``.
    """

    def __init__(
        self,
        redis_url: str | None = None,
        *,
        default_ttl: TTL = 3600,
        enable_memory_cache: bool = True,
        memory_cache_size: int = 100,
        memory_max_ttl: TTL = 60,
        compression_threshold: int = 1000,
        compression_level: int = 6,
        fail_on_connection_error: bool = False,
        namespace: str = "default",
        connect_timeout: float = 1.0,
        operation_timeout: float = 0.5,
        max_connections: int = 50,
        use_tls: bool | None = None,
        ssl_ca_certs: str | None = None,
        ssl_certfile: str | None = None,
        ssl_keyfile: str | None = None,
        max_value_size: int = 1024 * 1024,
        signing_key: bytes | str | None = None,
        invalidation_channel: bool = True,
        clock: Clock = time.monotonic,
    ) -> None:
        if redis_url is None:
            redis_url = os.environ.get("CACHE_REDIS_URL") or None
        if not isinstance(memory_cache_size, int) or memory_cache_size < 1:
            raise ConfigError(
                f"memory_cache_size={memory_cache_size!r}: entries, an int of at least 1"
            )
        # memory_max_ttl bounds how long a copy of a Redis entry is trusted; a
        # memory-only cache has nothing to defer to, so its entries get their full TTL.
        max_ttl_ms = ttl_to_ms(memory_max_ttl, "memory_max_ttl")
        memory = MemoryBackend(
            max_entries=memory_cache_size,
            max_ttl_ms=max_ttl_ms if redis_url is not None else None,
            clock=clock,
        )
        self.redis: RedisBackend | None = None
        backend: Backend
        if redis_url is None:
            _warn_memory_only_once()
            backend = memory
        else:
            self.redis = RedisBackend(
                redis_url,
                connect_timeout=connect_timeout,
                operation_timeout=operation_timeout,
                max_connections=max_connections,
                use_tls=use_tls,
                ssl_ca_certs=ssl_ca_certs,
                ssl_certfile=ssl_certfile,
                ssl_keyfile=ssl_keyfile,
                clock=clock,
            )
            self.redis.announce = invalidation_channel
            backend = TieredBackend(
                memory,
                self.redis,
                memory_reads=enable_memory_cache,
                listen=invalidation_channel,
            )
        super().__init__(
            backend,
            namespace=namespace,
            default_ttl=default_ttl,
            compression_threshold=compression_threshold,
            compression_level=compression_level,
            max_value_size=max_value_size,
            signing_key=signing_key,
            clock=clock,
        )
        self.enable_memory_cache = enable_memory_cache
        self.invalidation_channel = invalidation_channel
        self.fail_on_connection_error = fail_on_connection_error
        self._strict_writes = fail_on_connection_error

    async def connect(self) -> bool:
        """Check that Redis answers; True when it does (always True when memory-only).

        Raises:
            BackendUnavailable: Redis does not answer and ``fail_on_connection_error``.
        """
        if self.redis is None:
            return True
        backend = self._backend
        if await self.redis.ping():
            if isinstance(backend, TieredBackend):
                # The memory tier is read only once the invalidation channel is
                # confirmed; waiting here (briefly) lets the first calls use it.
                await backend.start_listening(self.redis.connect_timeout)
            return True
        if isinstance(backend, TieredBackend):
            backend.mark_remote_down()
        if self.fail_on_connection_error:
            raise BackendUnavailable(
                f"Redis at {self.redis.masked_url} does not answer: start it, fix "
                f"redis_url, or pass fail_on_connection_error=False to cache in memory "
                f"until it is back"
            )
        self._log_once(
            "connect",
            "memo: Redis at %s does not answer; caching in memory until it is back",
            self.redis.masked_url,
        )
        return False

    async def get_cache_stats(self) -> dict[str, Any]:
        out = await super().get_cache_stats()
        if self.redis is not None:
            out["redis"] = {
                "configured": True,
                "connected": self.redis.connected,
                "url": self.redis.masked_url,
                "circuit": self.redis.breaker.state,
                "latency_ms": self.redis.latency.summary(),
                "invalidation": self._invalidation_stats(),
            }
        return out

    def _invalidation_stats(self) -> dict[str, Any]:
        backend = self._backend
        listener = backend.listener if isinstance(backend, TieredBackend) else None
        assert self.redis is not None
        return {
            "channel": self.redis.invalidation_channel if self.invalidation_channel else None,
            "announcing": self.redis.announce,
            "listening": listener is not None and listener.trusted,
            "reconnects": listener.reconnects if listener is not None else 0,
        }

    async def health_check(self) -> dict[str, Any]:
        if self.redis is None:
            result = await super().health_check()
            result["reason"] += " (memory only: no Redis configured)"
            return result
        if not await self.redis.ping():
            status = "unhealthy" if self.fail_on_connection_error else "degraded"
            return {
                "status": status,
                "reason": f"Redis at {self.redis.masked_url} does not answer"
                + ("" if self.fail_on_connection_error else "; serving from memory"),
                "backend": self._backend.name,
            }
        result = await super().health_check()
        backend = self._backend
        listener = backend.listener if isinstance(backend, TieredBackend) else None
        if result["status"] == "healthy" and listener is not None and not listener.trusted:
            # Correct but slower: every read goes to Redis until the channel is back.
            result["status"] = "degraded"
            result["reason"] = (
                f"invalidation channel {listener.channel} is not subscribed; the memory "
                f"tier is bypassed and reads go to Redis"
            )
        return result

    def __repr__(self) -> str:
        where = self.redis.masked_url if self.redis is not None else "memory only"
        return f"GenericRedisCache(namespace={self.namespace!r}, redis={where!r})"
