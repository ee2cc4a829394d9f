"""The core of every cache: its parts, and the seam decorators and tools use.

``CacheCore`` holds what a cache is made of (backend, codec, counters, flights, tag
index, clock) and offers decorators, the CLI and the monitor one small named seam: read
an entry with its metadata, encode and store one, the flight table, the counters, the
clock. ``memo.cache.Cache`` adds the key-value API of the usage guide on top. Nothing
outside these two modules touches a cache's private state.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import time
import weakref
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, runtime_checkable

from memo._ai_settings import AISettings
from memo._clock import Clock, WallClock
from memo._codec import Codec, Entry
from memo._flight import FlightTable
from memo._glob import compile_glob
from memo._leasing import Leasing
from memo._options import CodecOptions
from memo._reporting import CountedFunction, Reporting, snapshot
from memo._savings import SavingsLedger, Usage
from memo._tags import BOOKKEEPING_SEGMENTS, TagIndex, tag_set_key
from memo._ttl import TTL, ttl_to_ms
from memo._validate import check_bool, check_key
from memo.backends.base import (
    LEASE_SUFFIX,
    AnnouncedWrites,
    Backend,
    LocalEntries,
    LocalReads,
    LocalTier,
    RemoteServer,
    TagListing,
)
from memo.exceptions import BackendError, ConfigError, DecodeError, EncodeError
from memo.stats import CacheStats

__all__ = ["CacheCore", "CacheSource", "StoredValue", "live_caches", "resolve_cache"]

logger = logging.getLogger("memo")

T = TypeVar("T")

_NAMESPACE_RE = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_NO_MEMORY = {"entries": 0, "bytes": 0, "total_mb": 0.0, "utilization": 0.0, "max_entries": 0}

_LIVE: weakref.WeakSet[CacheCore] = weakref.WeakSet()
_SERIALS = itertools.count()


def live_caches() -> list[CacheCore]:
    """Every cache of this process that has not been garbage-collected, oldest first."""
    return sorted(snapshot(_LIVE), key=lambda cache: cache.serial)


@runtime_checkable
class CacheSource(Protocol):
    """A cache, or anything that stands for one: an ``AIResponseCache`` (which wraps a
    cache), a decorated function's ``fn.cache`` (which builds its cache on first use)."""

    def resolve(self) -> CacheCore: ...


def resolve_cache(candidate: object, argument: str) -> CacheCore:
    """The cache ``candidate`` is or stands for; a ``TypeError`` naming ``argument`` for
    anything else."""
    if isinstance(candidate, CacheCore):
        return candidate
    if isinstance(candidate, CacheSource):
        resolved = candidate.resolve()
        if isinstance(resolved, CacheCore):
            return resolved
    raise TypeError(
        f"{argument}={candidate!r} is not a memo cache: pass an InMemoryCache, a cache from "
        f"CacheFactory, an AIResponseCache, or a decorated function's .cache"
    )


@dataclass(frozen=True)
class StoredValue:
    """What is stored under a key, read without changing anything (for operators).

    ``entry`` is None when the bytes do not decode; ``error`` then says why.
    """

    size: int
    entry: Entry | None
    error: str | None
    ttl: float | None


class CacheCore:
    """A cache's parts and its seam. ``memo.cache.Cache`` adds the key-value API and
    documents the arguments."""

    def __init__(
        self,
        backend: Backend,
        *,
        namespace: str = "default",
        default_ttl: TTL = 3600,
        codec: CodecOptions | None = None,
        ai: AISettings | None = None,
        fail_on_connection_error: bool = False,
        clock: Clock = time.monotonic,
    ) -> None:
        if not isinstance(namespace, str) or not _NAMESPACE_RE.fullmatch(namespace):
            raise ConfigError(
                f"namespace={namespace!r} is not usable: use 1-64 characters from A-Z a-z 0-9 _ . -"
            )
        self.namespace = namespace
        self.prefix = f"memo:{namespace}:"
        self.default_ttl_ms = ttl_to_ms(default_ttl, "default_ttl")
        self.ai = ai if ai is not None else AISettings()
        self._codec = Codec(codec if codec is not None else CodecOptions())
        self._backend = backend
        self._clock = clock
        self._wall = WallClock(clock)
        self._stats = CacheStats()
        #: Decorated functions, AI savings, and the figures shared with the fleet.
        self.reporting = Reporting(self, clock)
        self._flights = FlightTable()
        self._background: set[asyncio.Task[Any]] = set()
        self._logged: set[str] = set()
        self._closed = False
        self._strict_writes = check_bool("fail_on_connection_error", fail_on_connection_error)
        self.leasing = Leasing(backend, self.prefix, self.backend_failed)
        self._tags = TagIndex(
            backend,
            self.prefix,
            encode=lambda value, ttl_ms: self.encode_entry(value, ttl_ms),
            decode=self.decode_stored,
            failed=self.backend_failed,
        )
        # Reads that complete without I/O (a memory tier) are served synchronously on
        # the decorator's hit path; a purely local backend needs no second, awaited read.
        self._local_get: Callable[[str], bytes | None] | None = None
        self._remote: Backend | None = backend
        if isinstance(backend, LocalReads):
            self._local_get = backend.get_local
            if backend.local_only:
                self._remote = None
        self._local_tier = backend if isinstance(backend, LocalTier) else None
        # A memory tier whose entries the decorators' hit path may hold on to.
        self._local_entries = backend if isinstance(backend, LocalEntries) else None
        if isinstance(backend, AnnouncedWrites):
            this = weakref.ref(self)  # weak: the backend must not keep its cache alive

            def announced(keys: list[str] | None, pattern: str | None) -> None:
                cache = this()
                if cache is not None:
                    cache._announced_elsewhere(keys, pattern)

            backend.announce_to(announced, self._flights)  # the table holds no cache
        #: The order caches were built in (labels of caches that share a namespace).
        self.serial = next(_SERIALS)
        _LIVE.add(self)

    # ------------------------------------------------------------------ the seam
    # What decorators, the CLI and the monitor use. Keys here are full keys (the
    # prefix included), as the decorators' hot path builds them.

    @property
    def backend(self) -> Backend:
        """The byte backend behind this cache."""
        return self._backend

    @property
    def fail_on_connection_error(self) -> bool:
        """Whether explicit writes raise when the backend fails."""
        return self._strict_writes

    @property
    def stats(self) -> CacheStats:
        """Live counters (see ``get_cache_stats`` for a snapshot with derived fields)."""
        return self._stats

    @property
    def clock(self) -> Clock:
        """Monotonic seconds, as given at construction."""
        return self._clock

    def now_ms(self) -> int:
        """Wall-clock milliseconds, as stored in envelopes (driven by ``clock``)."""
        return self._wall.now_ms()

    @property
    def codec(self) -> Codec:
        """The codec of this cache's values."""
        return self._codec

    @property
    def flights(self) -> FlightTable:
        """The computations of decorated calls in flight, per event loop."""
        return self._flights

    @property
    def local_reader(self) -> Callable[[str], bytes | None] | None:
        """A synchronous read of the memory tier (full key to bytes), or None."""
        return self._local_get

    @property
    def local_entries(self) -> LocalEntries | None:
        """The memory tier itself when it is all there is and its entries may be held
        (see ``LocalEntries``), else None."""
        return self._local_entries

    @property
    def closed(self) -> bool:
        """True once ``aclose()`` has run."""
        return self._closed

    def full_key(self, key: str) -> str:
        """The full key (prefix included) of a relative ``key``."""
        return self.prefix + check_key(key, LEASE_SUFFIX, BOOKKEEPING_SEGMENTS)

    async def read_entry(self, full_key: str) -> Entry | None:
        """The stored entry under ``full_key``, fresh or stale, or None.

        Counts memory and Redis hits, not hits and misses (the caller knows which it
        was). A value that does not decode is None, and deleted when corrupt.
        """
        local = self._local_get
        data = local(full_key) if local is not None else None
        if data is not None:
            entry = await self.decode_stored(full_key, data)
            if entry is not None:
                self._stats.memory_hits += 1
            return entry
        if self._remote is None:
            return None
        self.reporting.remote_read(full_key)
        try:
            data = await self._remote.get(full_key)
        except BackendError as exc:
            self.backend_failed("get", exc)
            return None
        if data is None:
            return None
        entry = await self.decode_stored(full_key, data)
        if entry is not None:
            self._stats.redis_hits += 1
        return entry

    def encode_entry(self, value: Any, ttl_ms: int, *, compute_us: int = 0) -> bytes:
        """``value`` as envelope bytes, fresh for ``ttl_ms`` from now.

        Raises:
            EncodeError: counted as an error here; the caller decides what follows.
        """
        now = self._wall.now_ms()
        try:
            return self._codec.encode(
                value, created_ms=now, fresh_until_ms=now + ttl_ms, compute_us=compute_us
            )
        except EncodeError:
            self._stats.encode_errors += 1
            self._stats.errors += 1
            raise

    def stored_in_memory(self, full_key: str, data: bytes, ttl_ms: int) -> bool:
        """Store as ``store_entry`` does, without awaiting, when memory is all there is;
        False (nothing done) when the backend must be awaited."""
        if self._remote is not None or self._local_tier is None:
            return False
        self._local_tier.keep_local_copy(full_key, data, ttl_ms)
        self._stats.sets += 1
        return True

    async def store_entry(
        self, full_key: str, data: bytes, ttl_ms: int, *, strict: bool = False
    ) -> bool:
        """Store encoded bytes for ``ttl_ms`` in the backend; False (counted, logged)
        when the backend failed, or the error raised with ``strict``."""
        if self.stored_in_memory(full_key, data, ttl_ms):
            return True
        if self._remote is not None:  # a process that only writes is in the fleet too
            self.reporting.ensure_publishing()
        try:
            await self._backend.set(full_key, data, ttl_ms)
        except BackendError as exc:
            self.backend_failed("set", exc, strict=strict)
            return False
        self._stats.sets += 1
        return True

    async def tag_entry(self, tags: Sequence[str], full_key: str, ttl_ms: int) -> None:
        """Record that ``full_key`` was stored with each of ``tags``."""
        await self._tags.add(tags, full_key, ttl_ms)

    async def invalidate_tags(self, *tags: str) -> int:
        """Remove every entry stored with one of ``tags`` (see ``@cached(tags=...)``), in
        every process: on Redis each tag is one server-side step whatever its size, and
        computations of its members under way anywhere will not store."""
        if not self.leasing.active:
            removed = await self._tags.remove(tags, self._flights.invalidate)
        else:
            # Entries an older memo (or a server refusing scripts) tagged in the index
            # are reached too: an index entry costs one GET when there is none.
            removed = await self._tags.remove(tags, self._flights.invalidate)
            for tag in tags:
                count, members = await self.leasing.invalidate_tag(tag)
                for key in members:
                    self._flights.invalidate(key)
                removed += count
        self._stats.deletes += removed
        return removed

    async def tag_members(self, tag: str) -> list[str]:
        """The relative keys recorded under ``tag`` (some may have expired since): in
        the index, and in the tag's set on Redis."""
        members = await self._tags.members(tag)
        remote = self.remote_server()
        if self.leasing.active and isinstance(remote, TagListing):
            try:
                named = await remote.tag_members(tag_set_key(self.prefix, tag))
            except BackendError as exc:
                self.backend_failed("get", exc, strict=True)  # counted, and raised
            members += [k[len(self.prefix) :] for k in named if k.startswith(self.prefix)]
        return list(dict.fromkeys(members))

    async def read_stored(self, key: str) -> StoredValue | None:
        """What is stored under the relative ``key``, fresh, stale or undecodable, read
        without deleting or counting anything; None when nothing is stored."""
        full = self.full_key(key)
        try:
            data = await self._backend.get(full)
            ttl_ms = None if data is None else await self._backend.ttl(full)
        except BackendError as exc:
            self.backend_failed("get", exc, strict=True)  # counted, and raised
        if data is None:
            return None
        ttl = None if ttl_ms is None else ttl_ms / 1000.0
        try:
            return StoredValue(len(data), self._codec.decode(data), None, ttl)
        except DecodeError as exc:
            return StoredValue(len(data), None, str(exc), ttl)

    def remote_server(self) -> RemoteServer | None:
        """The server behind this cache (Redis), or None for a cache in memory."""
        backend = self._backend
        return backend if isinstance(backend, RemoteServer) else None

    def keep_local_copy(self, full_key: str, data: bytes, ttl_ms: int) -> None:
        """Keep encoded bytes in the memory tier only while it serves alone (Redis down);
        for a value that must not reach Redis (computed without a lease)."""
        if self._local_tier is not None:
            self._local_tier.keep_local_copy(full_key, data, ttl_ms)

    def memory_usage(self) -> dict[str, Any]:
        """``entries``, ``bytes``, ``total_mb``, ``utilization`` and ``max_entries`` of
        the memory tier (zeros without one)."""
        tier = self._local_tier
        return dict(_NO_MEMORY) if tier is None else tier.memory_usage()

    def register_function(self, function: CountedFunction) -> None:
        """Count ``function`` among this cache's decorated functions (``functions()``)."""
        self.reporting.register(function)

    def functions(self) -> list[dict[str, Any]]:
        """Each decorated function bound to this cache, with its counters."""
        return self.reporting.functions()

    @property
    def savings(self) -> SavingsLedger:
        """Tokens (and money) that AI hits on this cache saved, by operation."""
        return self.reporting.savings

    def record_saving(self, operation: str, usage: Usage) -> None:
        """Count what one AI hit saved (shared with the fleet in the background)."""
        self.reporting.record_saving(operation, usage)

    async def flush_savings(self) -> None:
        """Send the savings counted so far to the server now."""
        await self.reporting.flush_savings()

    async def publish_stats(self) -> bool:
        """Write this process's fleet record now (it is written every ``stats_interval``
        seconds anyway); False when there is no server or it could not take it."""
        return await self.reporting.publish()

    async def aclose(self) -> None:
        """Wait for background refreshes and kept computations, then close the backend."""
        pending = list(self._background) + self._flights.background()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        if not self._closed:
            await self.reporting.aclose()
        self._closed = True
        await self._backend.aclose()

    close = aclose

    def spawn(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """Run ``coro`` in the background; ``aclose()`` waits for it."""
        task: asyncio.Task[T] = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    def count_bypassed(self) -> None:
        """Count a call that ran uncached (``memo.bypass()``, AI caching off)."""
        self._stats.bypassed += 1

    def ttl_ms(self, ttl: TTL | None) -> int:
        """``ttl`` (checked) in milliseconds; None is the cache's ``default_ttl``."""
        return self.default_ttl_ms if ttl is None else ttl_to_ms(ttl)

    async def read_fresh_entry(self, full: str) -> Entry | None:
        """The entry under ``full`` if it is still fresh, else None (see ``read_entry``)."""
        entry = await self.read_entry(full)
        if entry is None or entry.fresh_until_ms <= self._wall.now_ms():
            return None
        return entry

    async def decode_stored(
        self, full: str, data: bytes, now_ms: int | None = None
    ) -> Entry | None:
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
            self.log_once(
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
                if self._local_tier is not None:
                    self._local_tier.discard_local(full)
                try:
                    await self._backend.delete(full)
                except BackendError as del_exc:
                    self.backend_failed("delete", del_exc)
            return None
        if now_ms is not None and entry.fresh_until_ms <= now_ms:
            return None
        return entry

    # ------------------------------------------------------------------ internals

    def _announced_elsewhere(self, keys: list[str] | None, pattern: str | None) -> None:
        """Another process wrote or deleted these: a computation of them under way here
        began before that, so its result is returned to its callers but not stored."""
        if keys is not None:
            for key in keys:
                self._flights.invalidate(key)
        elif pattern is not None:
            self._flights.invalidate_matching(compile_glob(pattern))

    def backend_failed(self, operation: str, exc: BackendError, *, strict: bool = False) -> None:
        """Count a backend failure and log it once per kind; raise it with ``strict``."""
        self._stats.errors += 1
        if strict:
            raise exc
        self.log_once(
            f"backend:{operation}:{type(exc).__name__}",
            "memo: %s on cache %r failed (%s); the call goes on without the cache",
            operation,
            self.namespace,
            exc,
        )

    def log_once(self, topic: str, message: str, *args: object) -> None:
        """A WARNING the first time ``topic`` comes up on this cache, DEBUG after."""
        if topic in self._logged:
            logger.debug(message, *args)
            return
        self._logged.add(topic)
        logger.warning(message, *args)
