"""Caches: Python values over a byte backend.

``Cache`` owns everything between a value and the bytes a backend stores: the key prefix,
the codec (envelope, msgpack, lz4, optional signing), TTL rules, counters, the flights of
decorated calls and the tag index. Backends only move bytes.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import weakref
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

import xxhash

from memo._clock import Clock, WallClock
from memo._codec import Codec, Entry
from memo._env import env_flag
from memo._flight import FlightTable
from memo._glob import compile_glob
from memo._ttl import TTL, ttl_to_ms
from memo.backends.base import Backend
from memo.backends.memory import MemoryBackend
from memo.backends.null import NullBackend
from memo.backends.tiered import TieredBackend
from memo.exceptions import BackendError, ConfigError, DecodeError, EncodeError
from memo.stats import CacheStats

__all__ = ["Cache", "InMemoryCache", "NullCache", "live_caches"]

logger = logging.getLogger("memo")

T = TypeVar("T")
CacheT = TypeVar("CacheT", bound="Cache")

_NAMESPACE_RE = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_SAFE_TAG_RE = re.compile(r"[A-Za-z0-9_.:\-]{1,128}")
_TAG_INDEX_LIMIT = 1024  # members kept per tag before expired ones are pruned

_LIVE: weakref.WeakSet[Cache] = weakref.WeakSet()


def live_caches() -> list[Cache]:
    """Every cache of this process that has not been garbage-collected."""
    return list(_LIVE)


class Cache:
    """Python values over a byte ``Backend``.

    Args:
        backend: where the bytes live.
        namespace: heads every stored key (``memo:{namespace}:``); keys passed to the
            methods below are relative to it.
        default_ttl: seconds (or a timedelta) used when ``ttl`` is not given.
        compression_threshold, compression_level: lz4 above this many bytes, level 1-9.
        max_value_size: largest encoded value, in bytes.
        signing_key: when set, values are HMAC-SHA256 signed and unsigned ones rejected.
        clock: monotonic seconds; ``memo.testing.FakeClock`` in tests.
    """

    def __init__(
        self,
        backend: Backend,
        *,
        namespace: str = "default",
        default_ttl: TTL = 3600,
        compression_threshold: int = 1000,
        compression_level: int = 6,
        max_value_size: int = 1024 * 1024,
        signing_key: bytes | str | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        if not isinstance(namespace, str) or not _NAMESPACE_RE.fullmatch(namespace):
            raise ConfigError(
                f"namespace={namespace!r} is not usable: use 1-64 characters from A-Z a-z 0-9 _ . -"
            )
        self.namespace = namespace
        self.prefix = f"memo:{namespace}:"
        self.default_ttl_ms = ttl_to_ms(default_ttl, "default_ttl")
        if isinstance(signing_key, str):
            signing_key = signing_key.encode()
        self._codec = Codec(
            compression_threshold=compression_threshold,
            compression_level=compression_level,
            max_value_size=max_value_size,
            signing_key=signing_key,
        )
        self._backend = backend
        self._clock = clock
        self._wall = WallClock(clock)
        self._stats = CacheStats()
        self._flights = FlightTable()
        self._background: set[asyncio.Task[Any]] = set()
        self._tag_lock: asyncio.Lock | None = None
        self._logged: set[str] = set()
        self._closed = False
        # ENABLE_AI_CACHE=false, read when the cache is built: @ai_cached calls run
        # uncached (counted as bypassed). AIResponseCache also takes it as an argument.
        self.ai_enabled = env_flag("ENABLE_AI_CACHE", True)
        # fail_on_connection_error=True: explicit writes raise instead of degrading.
        # Decorated calls never raise for the backend's sake, whatever this says.
        self._strict_writes = False
        # Reads that complete without I/O (the memory tier) are served synchronously on
        # the decorator's hit path; a purely local backend needs no second, awaited read.
        self._local_get = getattr(backend, "get_local", None)
        self._remote: Backend | None = (
            None if isinstance(backend, (MemoryBackend, NullBackend)) else backend
        )
        if isinstance(backend, TieredBackend):
            method = weakref.WeakMethod(self._announced_elsewhere)

            def announced(keys: list[str] | None, pattern: str | None) -> None:
                bound = method()  # weak: the backend must not keep its cache alive
                if bound is not None:
                    bound(keys, pattern)

            backend.on_announced = announced
        _LIVE.add(self)

    # ------------------------------------------------------------------ public API

    @property
    def backend(self) -> Backend:
        """The byte backend behind this cache."""
        return self._backend

    def resolve(self: CacheT) -> CacheT:
        """This cache. ``fn.cache`` of a ``preset=`` function is a handle whose
        ``resolve()`` builds and returns its cache, so ``fn.cache.resolve()`` always
        gives a ``Cache``."""
        return self

    @property
    def compression_threshold(self) -> int:
        """Values whose encoding exceeds this many bytes are lz4-compressed."""
        return self._codec.compression_threshold

    @property
    def compression_level(self) -> int:
        """lz4 level, 1-9 (7-9 use high-compression mode)."""
        return self._codec.compression_level

    @property
    def stats(self) -> CacheStats:
        """Live counters (see ``get_cache_stats`` for a snapshot with derived fields)."""
        return self._stats

    async def get(self, key: str, default: Any = None) -> Any:
        """The value stored under ``key``, or ``default`` when there is none.

        Pass ``default=memo.MISSING`` to tell a stored ``None`` from a miss.
        """
        entry = await self._read(self._full(key))
        if entry is None:
            self._stats.misses += 1
            return default
        self._stats.hits += 1
        return entry.value

    async def set(self, key: str, value: Any, ttl: TTL | None = None) -> None:
        """Store ``value`` under ``key`` for ``ttl`` seconds (default: ``default_ttl``).

        Raises:
            EncodeError: the value has a type memo cannot store, or is too large.
            ConfigError: the TTL is out of range.
        """
        ttl_ms = self._ttl_ms(ttl)
        full = self._full(key)
        data = self._encode(value, ttl_ms)
        self._flights.invalidate(full)
        await self._put(full, data, ttl_ms, strict=self._strict_writes)

    async def delete(self, key: str) -> bool:
        """Remove ``key``; True when an entry was there."""
        full = self._full(key)
        self._flights.invalidate(full)
        self._stats.deletes += 1
        try:
            return await self._backend.delete(full)
        except BackendError as exc:
            self._backend_failed("delete", exc, strict=self._strict_writes)
            return False

    async def exists(self, key: str) -> bool:
        """True when a fresh value is stored under ``key`` (not counted as a read)."""
        return await self._read(self._full(key)) is not None

    async def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """The hits among ``keys``, as a dict; misses are left out."""
        keys = list(keys)
        fulls = [self._full(k) for k in keys]
        try:
            blobs = await self._backend.get_many(fulls)
        except BackendError as exc:
            self._backend_failed("get_many", exc)
            blobs = [None] * len(fulls)
        found: dict[str, Any] = {}
        now = self._wall.now_ms()
        for key, full, data in zip(keys, fulls, blobs, strict=True):
            entry = None if data is None else await self._decode(full, data, now)
            if entry is None:
                self._stats.misses += 1
            else:
                self._stats.hits += 1
                found[key] = entry.value
        return found

    async def set_many(self, mapping: Mapping[str, Any], ttl: TTL | None = None) -> None:
        """Store every item of ``mapping`` with the same TTL."""
        ttl_ms = self._ttl_ms(ttl)
        items = {self._full(k): self._encode(v, ttl_ms) for k, v in mapping.items()}
        for full in items:
            self._flights.invalidate(full)
        try:
            await self._backend.set_many(items, ttl_ms)
        except BackendError as exc:
            self._backend_failed("set_many", exc, strict=self._strict_writes)
            return
        self._stats.sets += len(items)

    async def invalidate_pattern(self, pattern: str) -> int:
        """Remove every key matching a glob ``pattern`` (relative keys); return how many."""
        if not isinstance(pattern, str) or not pattern:
            raise ConfigError(
                f"pattern={pattern!r}: pass a non-empty glob such as 'user:*' "
                f"(relative to this cache's namespace)"
            )
        full = self.prefix + pattern
        self._flights.invalidate_matching(compile_glob(full))
        try:
            removed = await self._backend.delete_pattern(full)
        except BackendError as exc:
            self._backend_failed("invalidate_pattern", exc, strict=self._strict_writes)
            return 0
        self._stats.deletes += removed
        return removed

    async def keys(self, pattern: str = "*", *, limit: int = 1000) -> list[str]:
        """Up to ``limit`` stored keys matching a glob ``pattern``, relative to the prefix.

        On Redis this walks the keyspace with SCAN (never KEYS), in no particular order.
        """
        if not isinstance(pattern, str) or not pattern:
            raise ConfigError(f"pattern={pattern!r}: pass a non-empty glob such as 'user:*'")
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise ConfigError(f"limit={limit!r}: the most keys to return, an int of at least 1")
        try:
            fulls = await self._backend.scan_keys(self.prefix + pattern, limit)
        except BackendError as exc:
            self._backend_failed("keys", exc, strict=self._strict_writes)
            return []
        cut = len(self.prefix)
        tag_index = self.prefix + "__tags__:"
        return sorted(full[cut:] for full in fulls if not full.startswith(tag_index))

    async def invalidate_all(self) -> int:
        """Remove every key of this cache's namespace; return how many."""
        return await self.invalidate_pattern("*")

    clear = invalidate_all

    async def invalidate_tags(self, *tags: str) -> int:
        """Remove every entry stored with one of ``tags`` (see ``@cached(tags=...)``)."""
        removed = 0
        async with self._tags_locked():
            for tag in tags:
                index_key = self._tag_index_key(tag)
                members = await self._tag_members(index_key)
                fulls = [self.prefix + m for m in members]
                for full in fulls:
                    self._flights.invalidate(full)
                try:
                    removed += await self._backend.delete_many(fulls)
                    await self._backend.delete(index_key)
                except BackendError as exc:
                    self._backend_failed("invalidate_tags", exc)
        self._stats.deletes += removed
        return removed

    async def ttl(self, key: str) -> float | None:
        """Seconds ``key`` still lives in the backend, or None when it is not stored."""
        try:
            ms = await self._backend.ttl(self._full(key))
        except BackendError as exc:
            self._backend_failed("ttl", exc)
            return None
        return None if ms is None else ms / 1000.0

    async def get_cache_stats(self) -> dict[str, Any]:
        """Counters and sizes: hits, misses, hit_ratio (0-1, reads only), memory_usage …"""
        out = self._stats.as_dict()
        out["cache_type"] = type(self).__name__
        out["namespace"] = self.namespace
        out["memory_usage"] = self._memory_usage()
        out["redis"] = {"configured": False, "connected": False, "url": None}
        return out

    async def health_check(self) -> dict[str, Any]:
        """Write, read and delete a probe value; ``status`` is healthy, degraded or unhealthy."""
        probe = f"__memo_health__:{id(self):x}"
        started = self._clock()
        try:
            await self.set(probe, "ok", ttl=60)
            entry = await self._read(self._full(probe))
            await self._backend.delete(self._full(probe))
        except Exception as exc:  # a health check reports failures, it does not raise them
            return {
                "status": "unhealthy",
                "reason": f"probe failed: {type(exc).__name__}",
                "backend": self._backend.name,
            }
        latency_ms = (self._clock() - started) * 1000.0
        if entry is None or entry.value != "ok":
            status, reason = "degraded", "probe value was not read back"
        else:
            status, reason = "healthy", "probe value written, read back and deleted"
        return {
            "status": status,
            "reason": reason,
            "backend": self._backend.name,
            "latency_ms": round(latency_ms, 3),
        }

    async def connect(self) -> bool:
        """Make sure the backend is reachable; True when it is. Memory caches always are."""
        return True

    async def aclose(self) -> None:
        """Wait for background refreshes and kept computations, then close the backend."""
        pending = list(self._background) + self._flights.background()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        self._closed = True
        await self._backend.aclose()

    close = aclose

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
        return f"{type(self).__name__}(namespace={self.namespace!r}, backend={self._backend!r})"

    # ------------------------------------------------------------------ internals
    # Used by the decorators: full keys (prefix included), entries with metadata.

    def _full(self, key: str) -> str:
        if not isinstance(key, str) or not key:
            raise ConfigError(f"key={key!r}: cache keys are non-empty strings")
        return self.prefix + key

    def _ttl_ms(self, ttl: TTL | None) -> int:
        return self.default_ttl_ms if ttl is None else ttl_to_ms(ttl)

    def _encode(
        self, value: Any, ttl_ms: int, *, compute_us: int = 0, now_ms: int | None = None
    ) -> bytes:
        now = self._wall.now_ms() if now_ms is None else now_ms
        try:
            return self._codec.encode(
                value, created_ms=now, fresh_until_ms=now + ttl_ms, compute_us=compute_us
            )
        except EncodeError:
            self._stats.encode_errors += 1
            self._stats.errors += 1
            raise

    async def _put(
        self, full: str, data: bytes, backend_ttl_ms: int, *, strict: bool = False
    ) -> bool:
        try:
            await self._backend.set(full, data, backend_ttl_ms)
        except BackendError as exc:
            self._backend_failed("set", exc, strict=strict)
            return False
        self._stats.sets += 1
        return True

    async def _read(self, full: str) -> Entry | None:
        """The fresh entry under ``full``, or None. Counts tier hits, not hits/misses."""
        entry = await self._read_any(full)
        if entry is None or entry.fresh_until_ms <= self._wall.now_ms():
            return None
        return entry

    async def _read_any(self, full: str) -> Entry | None:
        """The stored entry under ``full``, fresh or stale, or None."""
        local = self._local_get
        data = local(full) if local is not None else None
        if data is not None:
            entry = await self._decode(full, data)
            if entry is not None:
                self._stats.memory_hits += 1
            return entry
        if self._remote is None:
            return None
        try:
            data = await self._remote.get(full)
        except BackendError as exc:
            self._backend_failed("get", exc)
            return None
        if data is None:
            return None
        entry = await self._decode(full, data)
        if entry is not None:
            self._stats.redis_hits += 1
        return entry

    async def _decode(self, full: str, data: bytes, now_ms: int | None = None) -> Entry | None:
        """Decode stored bytes; a value that does not decode is a miss, never an exception.

        Corrupt bytes are deleted. Bytes from a newer format version, or naming a type
        this process has not registered, are left for the processes that can read them.
        """
        try:
            entry = self._codec.decode(data)
        except DecodeError as exc:
            self._stats.decode_errors += 1
            self._stats.errors += 1
            kind = "corrupt" if exc.corrupt else "unreadable"
            self._log_once(
                f"decode:{kind}",
                "memo: a %s value was found in cache %r and treated as a miss (%s)%s",
                kind,
                self.namespace,
                exc,
                "; it was deleted" if exc.corrupt else "; it was left for newer readers",
            )
            if exc.corrupt:
                # First, synchronously, out of the memory tier: a tiered read filled it
                # with these bytes a moment ago, and the hot path trusts what is there.
                self._discard_local(full)
                try:
                    await self._backend.delete(full)
                except BackendError as del_exc:
                    self._backend_failed("delete", del_exc)
            return None
        if now_ms is not None and entry.fresh_until_ms <= now_ms:
            return None
        return entry

    def _announced_elsewhere(self, keys: list[str] | None, pattern: str | None) -> None:
        """Another process wrote or deleted these: a computation of them under way here
        began before that, so its result is returned to its callers but not stored."""
        if keys is not None:
            for key in keys:
                self._flights.invalidate(key)
        elif pattern is not None:
            self._flights.invalidate_matching(compile_glob(pattern))

    def _discard_local(self, full: str) -> None:
        backend = self._backend
        memory = backend if isinstance(backend, MemoryBackend) else getattr(backend, "memory", None)
        if isinstance(memory, MemoryBackend):
            memory.discard(full)

    def _backend_failed(self, operation: str, exc: BackendError, *, strict: bool = False) -> None:
        self._stats.errors += 1
        if strict:
            raise exc
        self._log_once(
            f"backend:{operation}:{type(exc).__name__}",
            "memo: %s on cache %r failed (%s); the call goes on without the cache",
            operation,
            self.namespace,
            exc,
        )

    def _log_once(self, topic: str, message: str, *args: object) -> None:
        if topic in self._logged:
            logger.debug(message, *args)
            return
        self._logged.add(topic)
        logger.warning(message, *args)

    def _memory_usage(self) -> dict[str, Any]:
        memory: Any = self._backend
        if not isinstance(memory, MemoryBackend):
            memory = getattr(memory, "memory", None)  # a tiered backend's front tier
        if not isinstance(memory, MemoryBackend):
            return {"entries": 0, "bytes": 0, "total_mb": 0.0, "utilization": 0.0, "max_entries": 0}
        return {
            "entries": len(memory),
            "bytes": memory.bytes_used,
            "total_mb": memory.bytes_used / (1024 * 1024),
            "utilization": memory.utilization(),
            "max_entries": memory.max_entries,
        }

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        """Run ``coro`` in the background; ``aclose()`` waits for it."""
        task: asyncio.Task[Any] = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    # -- tags: an index entry per tag listing the relative keys stored with it.
    # Read-modify-write under one lock per cache; across processes a backend with native
    # sets will do this atomically.

    def _tag_index_key(self, tag: str) -> str:
        if not isinstance(tag, str) or not tag:
            raise ConfigError(f"tag={tag!r}: tags are non-empty strings")
        if not _SAFE_TAG_RE.fullmatch(tag):
            tag = "h-" + xxhash.xxh3_128_hexdigest(tag.encode("utf-8", "surrogatepass"))
        return f"{self.prefix}__tags__:{tag}"  # keys() hides this prefix

    def _tags_locked(self) -> asyncio.Lock:
        if self._tag_lock is None:
            self._tag_lock = asyncio.Lock()
        return self._tag_lock

    async def _tag_members(self, index_key: str) -> list[str]:
        try:
            data = await self._backend.get(index_key)
        except BackendError as exc:
            self._backend_failed("get", exc)
            return []
        if data is None:
            return []
        entry = await self._decode(index_key, data)
        return list(entry.value) if entry is not None else []

    async def _tag(self, tags: Sequence[str], full: str, ttl_ms: int) -> None:
        """Record that ``full`` was stored with each of ``tags``."""
        relative = full[len(self.prefix) :]
        async with self._tags_locked():
            for tag in tags:
                index_key = self._tag_index_key(tag)
                members = await self._tag_members(index_key)
                if relative not in members:
                    members.append(relative)
                if len(members) > _TAG_INDEX_LIMIT:
                    members = [
                        m for m in members if await self._backend.ttl(self.prefix + m) is not None
                    ]
                remaining = await self._backend.ttl(index_key) or 0
                index_ttl = max(ttl_ms, remaining)
                try:
                    await self._backend.set(index_key, self._encode(members, index_ttl), index_ttl)
                except BackendError as exc:
                    self._backend_failed("set", exc)


class InMemoryCache(Cache):
    """A cache in this process's memory: bounded LRU, exact TTLs, no I/O.

    Args:
        max_size: most entries kept (least recently used are evicted first).
        max_bytes: most bytes kept, counting keys and encoded values.
        Other arguments as for ``Cache``.
    """

    def __init__(
        self,
        *,
        default_ttl: TTL = 3600,
        max_size: int = 1000,
        max_bytes: int = 64 * 1024 * 1024,
        namespace: str = "default",
        compression_threshold: int = 1000,
        compression_level: int = 6,
        max_value_size: int = 1024 * 1024,
        signing_key: bytes | str | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        super().__init__(
            MemoryBackend(max_entries=max_size, max_bytes=max_bytes, clock=clock),
            namespace=namespace,
            default_ttl=default_ttl,
            compression_threshold=compression_threshold,
            compression_level=compression_level,
            max_value_size=max_value_size,
            signing_key=signing_key,
            clock=clock,
        )

    @property
    def max_size(self) -> int:
        backend = self._backend
        assert isinstance(backend, MemoryBackend)
        return backend.max_entries


class NullCache(Cache):
    """Caching switched off (the ``disabled`` preset): every read misses, writes are dropped."""

    def __init__(
        self, *, namespace: str = "default", default_ttl: TTL = 3600, clock: Clock = time.monotonic
    ) -> None:
        super().__init__(NullBackend(), namespace=namespace, default_ttl=default_ttl, clock=clock)

    async def set(self, key: str, value: Any, ttl: TTL | None = None) -> None:
        self._ttl_ms(ttl)  # still validated, so a bad TTL fails in tests with caching off
        self._full(key)

    async def set_many(self, mapping: Mapping[str, Any], ttl: TTL | None = None) -> None:
        self._ttl_ms(ttl)

    async def health_check(self) -> dict[str, Any]:
        """Always healthy: there is nothing to reach, and misses are the intended outcome."""
        return {
            "status": "healthy",
            "reason": "caching is disabled (NullCache): every read misses by design",
            "backend": self._backend.name,
        }
