"""Caches: Python values over a byte backend.

``Cache`` owns everything between a value and the bytes a backend stores: the key prefix,
the codec (envelope, msgpack, lz4, optional signing), TTL rules, counters, the flights of
decorated calls and the tag index (its parts and the seam other modules use are in
``memo._cache_core``). Backends only move bytes.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any, TypeVar

from memo._ai_settings import AISettings
from memo._cache_core import CacheCore, StoredValue, live_caches
from memo._clock import Clock
from memo._glob import compile_glob
from memo._options import CodecOptions, MemoryOptions
from memo._tags import BOOKKEEPING_SEGMENTS, check_tag_names
from memo._ttl import TTL
from memo._validate import check_int
from memo.backends.base import LEASE_SUFFIX
from memo.backends.memory import MemoryBackend
from memo.backends.null import NullBackend
from memo.exceptions import BackendError, ConfigError

__all__ = ["Cache", "InMemoryCache", "NullCache", "StoredValue", "live_caches"]

CacheT = TypeVar("CacheT", bound="Cache")


class Cache(CacheCore):
    """Python values over a byte ``Backend``: the key-value API.

    Args:
        backend: where the bytes live.
        namespace: heads every stored key (``memo:{namespace}:``); keys passed to the
            methods below are relative to it.
        default_ttl: seconds (or a timedelta) used when ``ttl`` is not given.
        codec: how values become bytes (compression, size limit, signing).
        ai: the AI features ``@ai_cached`` and ``AIResponseCache`` read.
        fail_on_connection_error: explicit writes raise ``BackendError`` instead of
            being counted and logged (decorated calls never raise for the backend).
        clock: monotonic seconds; ``memo.testing.FakeClock`` in tests.
    """

    # ------------------------------------------------------------------ public API

    def resolve(self: CacheT) -> CacheT:
        """This cache. ``fn.cache`` of a ``preset=`` function is a handle whose
        ``resolve()`` builds and returns its cache, so ``fn.cache.resolve()`` always
        gives a ``Cache``."""
        return self

    @property
    def compression_threshold(self) -> int:
        """Values whose encoding exceeds this many bytes are lz4-compressed."""
        return self.codec.compression_threshold

    @property
    def compression_level(self) -> int:
        """lz4 level, 1-9 (7-9 use high-compression mode)."""
        return self.codec.compression_level

    async def get(self, key: str, default: Any = None) -> Any:
        """The value stored under ``key``, or ``default`` when there is none.

        Pass ``default=memo.MISSING`` to tell a stored ``None`` from a miss.
        """
        entry = await self.read_fresh_entry(self.full_key(key))
        if entry is None:
            self.stats.misses += 1
            return default
        self.stats.hits += 1
        return entry.value

    async def set(
        self, key: str, value: Any, ttl: TTL | None = None, *, tags: Iterable[str] = ()
    ) -> None:
        """Store ``value`` under ``key`` for ``ttl`` seconds (default: ``default_ttl``),
        recorded under each of ``tags`` (``invalidate_tags`` drops it with them).

        On Redis the value and its tags are written in one server-side step, as a
        decorated call's are, so no invalidation of a tag can fall between them.

        Raises:
            EncodeError: the value has a type memo cannot store, or is too large.
            ConfigError: the TTL is out of range, or a tag is not a non-empty str.
        """
        ttl_ms = self.ttl_ms(ttl)
        full = self.full_key(key)
        tags = check_tag_names(tags)
        data = self.encode_entry(value, ttl_ms)
        self.flights.invalidate(full)
        if tags and self.leasing.active:
            lease = await self.leasing.take(full, tags, None, force=True)
            if lease is not None:  # None: Redis failed; stored below as any write is
                strict = self.fail_on_connection_error
                if await self.leasing.store(lease, data, ttl_ms, strict=strict):
                    self.stats.sets += 1
                else:
                    # Refused: an invalidation (or another write) came after this one
                    # began. The value this set replaces must not outlive it: a miss is
                    # always safe, a value older than an invalidation never is.
                    await self.delete(key)
                return
        stored = await self.store_entry(full, data, ttl_ms, strict=self.fail_on_connection_error)
        if stored and tags:
            await self.tag_entry(tags, full, ttl_ms)

    async def delete(self, key: str) -> bool:
        """Remove ``key``; True when an entry was there."""
        full = self.full_key(key)
        self.flights.invalidate(full)
        self.stats.deletes += 1
        try:
            return await self.backend.delete(full)
        except BackendError as exc:
            self.backend_failed("delete", exc, strict=self.fail_on_connection_error)
            return False

    async def exists(self, key: str) -> bool:
        """True when a fresh value is stored under ``key`` (not counted as a read)."""
        return await self.read_fresh_entry(self.full_key(key)) is not None

    async def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """The hits among ``keys``, as a dict; misses are left out."""
        keys = list(keys)
        fulls = [self.full_key(k) for k in keys]
        try:
            blobs = await self.backend.get_many(fulls)
        except BackendError as exc:
            self.backend_failed("get_many", exc)
            blobs = [None] * len(fulls)
        found: dict[str, Any] = {}
        now = self.now_ms()
        for key, full, data in zip(keys, fulls, blobs, strict=True):
            entry = None if data is None else await self.decode_stored(full, data, now)
            if entry is None:
                self.stats.misses += 1
            else:
                self.stats.hits += 1
                found[key] = entry.value
        return found

    async def set_many(self, mapping: Mapping[str, Any], ttl: TTL | None = None) -> None:
        """Store every item of ``mapping`` with the same TTL."""
        ttl_ms = self.ttl_ms(ttl)
        items = {self.full_key(k): self.encode_entry(v, ttl_ms) for k, v in mapping.items()}
        for full in items:
            self.flights.invalidate(full)
        try:
            await self.backend.set_many(items, ttl_ms)
        except BackendError as exc:
            self.backend_failed("set_many", exc, strict=self.fail_on_connection_error)
            return
        self.stats.sets += len(items)

    async def invalidate_pattern(self, pattern: str) -> int:
        """Remove every key matching a glob ``pattern`` (relative keys); return how many."""
        if not isinstance(pattern, str) or not pattern:
            raise ConfigError(
                f"pattern={pattern!r}: pass a non-empty glob such as 'user:*' "
                f"(relative to this cache's namespace)"
            )
        full = self.prefix + pattern
        self.flights.invalidate_matching(compile_glob(full))
        try:
            removed = await self.backend.delete_pattern(full)
        except BackendError as exc:
            self.backend_failed("invalidate_pattern", exc, strict=self.fail_on_connection_error)
            return 0
        self.stats.deletes += removed
        return removed

    async def keys(self, pattern: str = "*", *, limit: int = 1000) -> list[str]:
        """Up to ``limit`` stored keys matching a glob ``pattern``, relative to the prefix.

        On Redis this walks the keyspace with SCAN (never KEYS), in no particular order.
        """
        if not isinstance(pattern, str) or not pattern:
            raise ConfigError(f"pattern={pattern!r}: pass a non-empty glob such as 'user:*'")
        check_int("limit", limit, 1)
        cut = len(self.prefix)
        bookkeeping = tuple(self.prefix + segment for segment in BOOKKEEPING_SEGMENTS)
        asked = limit
        while True:  # memo's own keys (leases, tag sets) are scanned, then left out
            try:
                fulls = await self.backend.scan_keys(self.prefix + pattern, asked)
            except BackendError as exc:
                self.backend_failed("keys", exc, strict=self.fail_on_connection_error)
                return []
            found = [
                full[cut:]
                for full in fulls
                if not full.startswith(bookkeeping) and not full.endswith(LEASE_SUFFIX)
            ]
            if len(found) >= limit or len(fulls) < asked or asked >= 64 * limit:
                return sorted(found)[:limit]
            asked *= 4

    async def invalidate_all(self) -> int:
        """Remove every key of this cache's namespace; return how many."""
        return await self.invalidate_pattern("*")

    clear = invalidate_all

    async def ttl(self, key: str) -> float | None:
        """Seconds ``key`` still lives in the backend, or None when it is not stored."""
        try:
            ms = await self.backend.ttl(self.full_key(key))
        except BackendError as exc:
            self.backend_failed("ttl", exc)
            return None
        return None if ms is None else ms / 1000.0

    async def get_cache_stats(self) -> dict[str, Any]:
        """Counters and sizes: hits, misses, hit_ratio (0-1, reads only), memory_usage …"""
        out = self.stats.as_dict()
        out["cache_type"] = type(self).__name__
        out["namespace"] = self.namespace
        out["memory_usage"] = self.memory_usage()
        out["redis"] = {"configured": False, "connected": False, "url": None}
        out["ai_savings"] = self.savings.summary(self.ai.model_prices)
        return out

    async def health_check(self) -> dict[str, Any]:
        """Write, read and delete a probe value; ``status`` is healthy, degraded or unhealthy."""
        probe = f"__memo_health__:{id(self):x}"
        started = self.clock()
        try:
            await self.set(probe, "ok", ttl=60)
            entry = await self.read_fresh_entry(self.full_key(probe))
            await self.backend.delete(self.full_key(probe))
        except Exception as exc:  # a health check reports failures, it does not raise them
            return {
                "status": "unhealthy",
                "reason": f"probe failed: {type(exc).__name__}",
                "backend": self.backend.name,
            }
        latency_ms = (self.clock() - started) * 1000.0
        if entry is None or entry.value != "ok":
            status, reason = "degraded", "probe value was not read back"
        else:
            status, reason = "healthy", "probe value written, read back and deleted"
        return {
            "status": status,
            "reason": reason,
            "backend": self.backend.name,
            "latency_ms": round(latency_ms, 3),
        }

    async def connect(self) -> bool:
        """Make sure the backend is reachable; True when it is. Memory caches always are."""
        return True

    async def __aenter__(self: CacheT) -> CacheT:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(namespace={self.namespace!r}, backend={self.backend!r})"


class InMemoryCache(Cache):
    """A cache in this process's memory: bounded, scan-resistant, exact TTLs, no I/O.

    Args:
        memory_cache_size: most entries kept (when full, one-off keys are evicted first,
            then the entries longest without a hit).
        memory_max_bytes: most bytes kept, counting keys and encoded values.
        Other arguments as for ``Cache``; the codec's knobs are those of ``CodecOptions``.
    """

    def __init__(
        self,
        *,
        default_ttl: TTL = 3600,
        memory_cache_size: int = MemoryOptions.memory_cache_size,
        memory_max_bytes: int = MemoryOptions.memory_max_bytes,
        namespace: str = "default",
        compression_threshold: int = CodecOptions.compression_threshold,
        compression_level: int = CodecOptions.compression_level,
        max_value_size: int = CodecOptions.max_value_size,
        signing_key: bytes | str | None = None,
        ai: AISettings | None = None,
        fail_on_connection_error: bool = False,
        clock: Clock = time.monotonic,
    ) -> None:
        memory = MemoryOptions(
            memory_cache_size=memory_cache_size, memory_max_bytes=memory_max_bytes
        )
        codec = CodecOptions(
            compression_threshold=compression_threshold,
            compression_level=compression_level,
            max_value_size=max_value_size,
            signing_key=signing_key,  # type: ignore[arg-type]  # CodecOptions takes str too
        )
        self._memory = MemoryBackend(memory, clock=clock)
        super().__init__(
            self._memory,
            namespace=namespace,
            default_ttl=default_ttl,
            codec=codec,
            ai=ai,
            fail_on_connection_error=fail_on_connection_error,
            clock=clock,
        )

    @classmethod
    def from_options(
        cls,
        memory: MemoryOptions,
        codec: CodecOptions,
        *,
        namespace: str = "default",
        default_ttl: TTL = 3600,
        ai: AISettings | None = None,
        fail_on_connection_error: bool = False,
        clock: Clock = time.monotonic,
    ) -> InMemoryCache:
        """The cache these options describe (the factory's way in)."""
        return cls(
            default_ttl=default_ttl,
            memory_cache_size=memory.memory_cache_size,
            memory_max_bytes=memory.memory_max_bytes,
            namespace=namespace,
            compression_threshold=codec.compression_threshold,
            compression_level=codec.compression_level,
            max_value_size=codec.max_value_size,
            signing_key=codec.signing_key,
            ai=ai,
            fail_on_connection_error=fail_on_connection_error,
            clock=clock,
        )

    @property
    def memory_cache_size(self) -> int:
        """The most entries this cache keeps."""
        return self._memory.max_entries


class NullCache(Cache):
    """Caching switched off (the ``disabled`` preset): every read misses, writes are dropped."""

    def __init__(
        self,
        *,
        namespace: str = "default",
        default_ttl: TTL = 3600,
        ai: AISettings | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        super().__init__(
            NullBackend(), namespace=namespace, default_ttl=default_ttl, ai=ai, clock=clock
        )

    async def set(
        self, key: str, value: Any, ttl: TTL | None = None, *, tags: Iterable[str] = ()
    ) -> None:
        self.ttl_ms(ttl)  # still validated, so a bad TTL fails in tests with caching off
        self.full_key(key)
        check_tag_names(tags)

    async def set_many(self, mapping: Mapping[str, Any], ttl: TTL | None = None) -> None:
        self.ttl_ms(ttl)

    async def health_check(self) -> dict[str, Any]:
        """Always healthy: there is nothing to reach, and misses are the intended outcome."""
        return {
            "status": "healthy",
            "reason": "caching is disabled (NullCache): every read misses by design",
            "backend": self.backend.name,
        }
