"""``GenericRedisCache``: values in Redis, a bounded memory tier in front.

Building one does no I/O (and redis-py itself is imported only now, so that a
memory-only user never loads it); ``connect()`` (which the factory and ``async with``
call) checks that Redis answers. What happens when it does not is chosen by
``fail_on_connection_error``:

* False (default): the cache works from memory (an outage tier of ``memory_cache_size``
  entries, even with ``enable_memory_cache=False``) and goes back to Redis once it
  answers, flushing that tier first. Explicit writes that cannot reach Redis land in
  memory, are counted and logged; ``delete`` returns False.
* True: ``connect()`` and explicit writes raise ``BackendUnavailable``.

Decorated calls never fail because of Redis, whichever is chosen.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from memo._ai_settings import AISettings
from memo._clock import Clock
from memo._options import REDIS_MEMORY_MAX_TTL, CodecOptions, MemoryOptions
from memo._redis_options import RedisOptions
from memo._savings import shared_rows, shared_savings_key, summarize
from memo._ttl import TTL
from memo._validate import check_bool
from memo.backends.memory import MemoryBackend
from memo.backends.tiered import TieredBackend
from memo.cache import Cache
from memo.exceptions import BackendError, BackendUnavailable, ConfigError

if TYPE_CHECKING:
    from memo.backends.redis import RedisBackend

__all__ = ["GenericRedisCache"]


class GenericRedisCache(Cache):
    """A cache in Redis with an in-process memory tier in front of it.

    Args:
        redis_url: ``redis://``, ``rediss://`` or ``unix://`` (validated now; a bad one
            is a ``ConfigError`` naming the part that is wrong).
        enable_memory_cache: keep a memory tier in front of Redis.
        memory_cache_size: entries in the memory tier (also the outage tier's size).
        memory_max_ttl: seconds a memory-tier copy may live, at most (it never outlives
            the Redis entry either).
        memory_max_bytes: bytes the memory tier may hold.
        fail_on_connection_error: see the module docstring.
        connect_timeout, operation_timeout: seconds; the operation deadline covers pool
            wait, retry and I/O.
        max_connections: the pool's size; callers wait (within the deadline) for a
            free connection rather than fail.
        use_tls, ssl_ca_certs, ssl_certfile, ssl_keyfile: TLS settings.
        invalidation_channel: keep the memory tier coherent with what other processes
            (and any Redis client) write (default True). Turn it off only where no
            other process writes the keys a memory tier holds.
        coherence: ``"tracking"`` (default): Redis tells the memory tier when a key it
            read changes (``CLIENT TRACKING``, Redis 6+; the channel where refused);
            ``"channel"``: writes are announced on pub/sub and every tier hears all.
        invalidation_batch: with tracking, under a dense stream of invalidations
            the tier reads them at most once per this many seconds (default 0.001:
            one wake-up of the event loop for several; a change reaches the tier up
            to 1 ms later); 0 reads each as it comes; at most 0.01.
        Other arguments as for ``InMemoryCache``.
    """

    def __init__(
        self,
        redis_url: str | None = None,
        *,
        default_ttl: TTL = 3600,
        enable_memory_cache: bool = True,
        memory_cache_size: int = MemoryOptions.memory_cache_size,
        memory_max_ttl: float = REDIS_MEMORY_MAX_TTL,
        memory_max_bytes: int = MemoryOptions.memory_max_bytes,
        compression_threshold: int = CodecOptions.compression_threshold,
        compression_level: int = CodecOptions.compression_level,
        max_value_size: int = CodecOptions.max_value_size,
        signing_key: bytes | str | None = None,
        fail_on_connection_error: bool = False,
        namespace: str = "default",
        connect_timeout: float = RedisOptions.connect_timeout,
        operation_timeout: float = RedisOptions.operation_timeout,
        max_connections: int = RedisOptions.max_connections,
        use_tls: bool = False,
        ssl_ca_certs: str | None = None,
        ssl_certfile: str | None = None,
        ssl_keyfile: str | None = None,
        invalidation_channel: bool = True,
        coherence: str = RedisOptions.coherence,
        invalidation_batch: float = RedisOptions.invalidation_batch,
        stats_interval: float = RedisOptions.stats_interval,
        ai: AISettings | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        if not isinstance(redis_url, str) or not redis_url:
            raise ConfigError(
                f"redis_url={redis_url!r}: GenericRedisCache needs the URL of a Redis "
                f"server (redis://host:6379/0); for a cache in this process's memory use "
                f"InMemoryCache, or CacheFactory().for_web_app(), which reads "
                f"CACHE_REDIS_URL and falls back to memory without it"
            )
        self._setup(
            RedisOptions.from_url(
                redis_url,
                connect_timeout=connect_timeout,
                operation_timeout=operation_timeout,
                max_connections=max_connections,
                use_tls=use_tls,
                ssl_ca_certs=ssl_ca_certs,
                ssl_certfile=ssl_certfile,
                ssl_keyfile=ssl_keyfile,
                invalidation_channel=invalidation_channel,
                coherence=coherence,
                invalidation_batch=invalidation_batch,
                stats_interval=stats_interval,
            ),
            MemoryOptions(
                memory_cache_size=memory_cache_size,
                memory_max_bytes=memory_max_bytes,
                memory_max_ttl=memory_max_ttl,
            ),
            CodecOptions(
                compression_threshold=compression_threshold,
                compression_level=compression_level,
                max_value_size=max_value_size,
                signing_key=signing_key,  # type: ignore[arg-type]  # a str is encoded there
            ),
            enable_memory_cache=enable_memory_cache,
            fail_on_connection_error=fail_on_connection_error,
            namespace=namespace,
            default_ttl=default_ttl,
            ai=ai,
            clock=clock,
        )

    @classmethod
    def from_options(
        cls,
        redis: RedisOptions,
        memory: MemoryOptions,
        codec: CodecOptions,
        *,
        enable_memory_cache: bool = True,
        fail_on_connection_error: bool = False,
        namespace: str = "default",
        default_ttl: TTL = 3600,
        ai: AISettings | None = None,
        clock: Clock = time.monotonic,
    ) -> GenericRedisCache:
        """The cache these (already validated) options describe: the factory's way in."""
        cache = cls.__new__(cls)
        cache._setup(
            redis,
            memory,
            codec,
            enable_memory_cache=enable_memory_cache,
            fail_on_connection_error=fail_on_connection_error,
            namespace=namespace,
            default_ttl=default_ttl,
            ai=ai,
            clock=clock,
        )
        return cache

    def _setup(
        self,
        redis: RedisOptions,
        memory: MemoryOptions,
        codec: CodecOptions,
        *,
        enable_memory_cache: bool,
        fail_on_connection_error: bool,
        namespace: str,
        default_ttl: TTL,
        ai: AISettings | None,
        clock: Clock,
    ) -> None:
        from memo.backends.redis import RedisBackend  # redis-py loads on first Redis use

        enable_memory_cache = check_bool("enable_memory_cache", enable_memory_cache)
        if redis.url.cluster_nodes:
            from memo.backends.cluster import RedisClusterBackend

            self.redis: RedisBackend = RedisClusterBackend(redis, clock=clock)
        else:
            self.redis = RedisBackend(redis, clock=clock)
        self.redis_options = redis
        self.enable_memory_cache = enable_memory_cache
        self._tiered = TieredBackend(
            MemoryBackend(memory, clock=clock),
            self.redis,
            memory_reads=enable_memory_cache,
            listen=redis.invalidation_channel,
        )
        super().__init__(
            self._tiered,
            namespace=namespace,
            default_ttl=default_ttl,
            codec=codec,
            ai=ai,
            fail_on_connection_error=fail_on_connection_error,
            clock=clock,
        )
        self.reporting.interval = redis.stats_interval

    def remote_server(self) -> RedisBackend:
        """The Redis backend behind the memory tier."""
        return self.redis

    @property
    def invalidation_channel(self) -> bool:
        """Whether writes are announced and memory tiers listen (see the class doc)."""
        return self.redis_options.invalidation_channel

    async def connect(self) -> bool:
        """Check that Redis answers; True when it does.

        Raises:
            BackendUnavailable: Redis does not answer (or refuses the credentials) and
                ``fail_on_connection_error``; the message says which.
        """
        try:
            await self.redis.check()
        except BackendError as exc:
            self._tiered.mark_remote_down()
            if self.fail_on_connection_error:
                kind = type(exc) if isinstance(exc, BackendUnavailable) else BackendUnavailable
                raise kind(
                    f"{exc}; or pass fail_on_connection_error=False to cache in memory "
                    f"until Redis is back"
                ) from exc
            self.log_once(
                "connect",
                "memo: Redis at %s cannot be used (%s); caching in memory until it is back",
                self.redis.masked_url,
                exc,
            )
            return False
        # The memory tier is read only once the invalidation channel is confirmed;
        # waiting here (briefly) lets the first calls use it.
        await self._tiered.start_listening(self.redis_options.connect_timeout)
        return True

    async def get_cache_stats(self) -> dict[str, Any]:
        out = await super().get_cache_stats()
        listener = self._tiered.listener
        out["redis"] = {
            "configured": True,
            "connected": self.redis.connected,
            "url": self.redis.masked_url,
            "circuit": self.redis.breaker.state,
            "latency_ms": self.redis.latency.summary(),
            "invalidation": {
                "channel": self.redis.invalidation_channel if self.invalidation_channel else None,
                "announcing": self.redis.announce,
                # How the memory tier hears of changes: "tracking", "channel" or None.
                "mode": None
                if listener is None
                else ("tracking" if listener.reads_tracked else "channel"),
                "listening": listener is not None and listener.trusted,
                "reconnects": listener.reconnects if listener is not None else 0,
            },
        }
        # What every process's hits saved, as added to the server's figures so far.
        try:
            counts = await self.redis.hashes.read_counts(shared_savings_key(self.prefix))
            fleet = summarize(shared_rows(counts), self.ai.model_prices)
        except BackendError:
            fleet = None
        out["ai_savings_fleet"] = fleet
        return out

    async def health_check(self) -> dict[str, Any]:
        if not await self.redis.ping():
            status = "unhealthy" if self.fail_on_connection_error else "degraded"
            return {
                "status": status,
                "reason": f"Redis at {self.redis.masked_url} does not answer"
                + ("" if self.fail_on_connection_error else "; serving from memory"),
                "backend": self._tiered.name,
            }
        result = await super().health_check()
        listener = self._tiered.listener
        if result["status"] == "healthy" and listener is not None and not listener.trusted:
            # Correct but slower: every read goes to Redis until the channel is back.
            result["status"] = "degraded"
            lost = (
                "the tracking connection is down"
                if listener.reads_tracked
                else f"invalidation channel {listener.channel} is not subscribed"
            )
            result["reason"] = f"{lost}; the memory tier is bypassed and reads go to Redis"
        return result

    def __repr__(self) -> str:
        return f"GenericRedisCache(namespace={self.namespace!r}, redis={self.redis.masked_url!r})"
