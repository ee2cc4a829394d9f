"""The slow path of a decorated function: everything but a plain memory hit.

``CallPlan`` holds what a decorated function needs besides its hot path (see
``memo._hotpath``): the cache it is bound to (given, or built at the first call from a
slot), freshness, stale values, early refresh, single-flight, storing and tagging, and
the helpers (``invalidate``, ``refresh``, ``peek`` …). It talks to its cache only through
the cache's seam (``memo._cache_core``).
"""

from __future__ import annotations

import asyncio
import copy
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from memo._codec import Entry
from memo._flight import Flight, computing_here, should_refresh_early
from memo._leasing import Lease
from memo._savings import Usage
from memo._sentinel import MISSING
from memo._slots import CacheSlot, DeferredCache
from memo._switch import is_bypassed
from memo._tags import TagTemplates
from memo._ttl import TTL, ttl_to_ms
from memo.cache import Cache
from memo.exceptions import DecodeError, EncodeError
from memo.stats import FunctionStats

__all__ = ["CallPlan", "KeyFunc"]

logger = logging.getLogger("memo")


#: Stale keys remembered as "refresh failed" at most, per decorated function.
_REMEMBERED_FAILURES = 10_000


class KeyFunc(Protocol):
    """A key builder: the relative key of a call, and the glob of every key it makes."""

    def __call__(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str: ...

    def pattern(self) -> str: ...


class CallPlan:
    """Everything a decorated function needs besides its hot path."""

    def __init__(
        self,
        func: Callable[..., Awaitable[Any]],
        keys: KeyFunc,
        *,
        cache: Cache | None,
        slot: CacheSlot | None,
        ttl: TTL | None,
        none_ttl: TTL | None,
        cache_none: bool,
        condition: Callable[[Any], bool] | None,
        jitter: float,
        stale_ttl: TTL | None,
        stale_if_error: bool,
        early_refresh: bool,
        tags: tuple[str, ...],
        method: bool,
        keep_abandoned: bool,
        lock: bool = False,
        lock_wait: float = 5.0,
        operation: str | None = None,
        rekey: Callable[[int], KeyFunc] | None = None,
        usage_of: Callable[[Any], Usage | None] | None = None,
        run: Callable[..., Awaitable[Any]] | None = None,
        namespace: str = "",
    ) -> None:
        self.func = func
        # How operators see this function (memo stats, memo top, Prometheus labels).
        self.namespace, self.function_id = namespace, f"{func.__module__}.{func.__qualname__}"
        # What a computation awaits: the function itself, or for a stream the recorder
        # that drains it (memo._streams.recording).
        self.run = func if run is None else run
        self.keys = keys
        self.ttl_ms = None if ttl is None else ttl_to_ms(ttl)
        self.none_ttl_ms = None if none_ttl is None else ttl_to_ms(none_ttl, "none_ttl")
        self.cache_none = cache_none or none_ttl is not None
        self.condition = condition
        self.jitter = jitter
        self.stale_ms = 0 if stale_ttl is None else ttl_to_ms(stale_ttl, "stale_ttl")
        self.stale_if_error = stale_if_error
        self.early_refresh = early_refresh
        self.tags = tags
        self.tag_templates = TagTemplates(func, tags) if tags else None
        self.keep_abandoned = keep_abandoned
        # Across processes sharing a cache with leases (Redis): wait up to lock_wait for
        # the process computing a cold key instead of computing it too.
        self.lock = lock
        self.lock_wait = lock_wait
        self.operation = operation
        # Reads the usage record of a reply, to count what a hit saved (AI functions).
        self.usage_of = usage_of
        self.stats = FunctionStats()
        # The hit path may skip the freshness check only when the backend's own expiry
        # is the logical one: no stale window and no early refresh.
        self.simple = self.stale_ms == 0 and not early_refresh
        self._rand = random.random
        # Stale keys whose background refresh failed (without stale_if_error): their next
        # caller computes in the foreground instead of being served the stale value.
        self._refresh_failed: set[str] = set()
        self._warned_encode = False
        # ENABLE_AI_CACHE=false on the bound cache: AI calls run uncached.
        self.ai_off = False
        # An AI key builder whose text threshold follows the cache's, once bound.
        self._rekey = rekey
        self._rekeyed_for: int | None = None
        # The cache is bound now when given, else at the first call (slot). The hot
        # path keeps its own copies of the cache's parts; hooks keep them in step.
        self.slot = slot
        self.cache: Cache | None = None
        self._hooks: list[tuple[Callable[[Cache], None], Callable[[], None]]] = []
        if cache is not None:
            self._bind(cache)

    def resolve(self) -> Cache:
        """The cache behind this function, built and bound now if it is not yet."""
        cache = self.cache
        if cache is None:
            assert self.slot is not None  # a plan has a cache or a slot
            cache = self._bind(self.slot.get())
        return cache

    def cache_handle(self) -> Any:
        """What ``fn.cache`` shows: the cache, or a handle that builds it on first use."""
        if self.slot is None:
            return self.cache
        return DeferredCache(self.slot)

    def add_hooks(self, bind: Callable[[Cache], None], unbind: Callable[[], None]) -> None:
        """Keep a hot path's copies of the cache's parts in step with this plan."""
        self._hooks.append((bind, unbind))
        if self.cache is not None:
            bind(self.cache)

    def _bind(self, cache: Cache) -> Cache:
        self.cache = cache
        self.decode: Callable[[bytes], Any] = cache.codec.decode
        self.decode_local: Callable[[bytes], Any] = cache.codec.decode_local
        self.ai_off = self.operation is not None and not cache.ai.enabled
        if self._rekey is not None:
            threshold = cache.ai.text_hash_threshold
            if threshold != self._rekeyed_for:
                self.keys = self._rekey(threshold)
                self._rekeyed_for = threshold
        for bind, _ in self._hooks:
            bind(cache)
        cache.register_function(self)
        if self.slot is not None:
            self.slot.watch(self)
        return cache

    def unbind(self) -> None:
        """Forget the cache (it was closed); the next call binds the slot's new one."""
        self.cache = None
        for _, unbind in self._hooks:
            unbind()

    # ---------------------------------------------------------------- call paths

    async def lookup(self, full: str | None, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Everything but a plain memory hit: remote reads, staleness, computing."""
        cache = self.cache
        if cache is None:  # the first call: build the cache (the key had no prefix yet)
            cache = self.resolve()
            full = None
        if self.ai_off:
            return await self._bypass(cache, args, kwargs)
        if full is None:
            full = cache.prefix + self.keys(args, kwargs)
        if computing_here(full):
            # Called from inside its own computation: waiting would deadlock.
            return await self.func(*args, **kwargs)
        flights = cache.flights
        settled = flights.settled(full)
        entry = await cache.read_entry(full)
        if entry is None and flights.settled(full) != settled and flights.running(full) is None:
            # A computation of this key finished while the read was out: its value may
            # have been stored after the read was answered. Read again, not compute again.
            entry = await cache.read_entry(full)
        if entry is not None:
            now = cache.now_ms()
            if entry.fresh_until_ms > now:
                self.count_hit(cache, entry.value)
                if self.early_refresh and should_refresh_early(
                    now, entry.fresh_until_ms, entry.compute_us, self._rand
                ):
                    self._refresh_in_background(cache, full, args, kwargs, entry)
                return entry.value
            if self.stale_ms and full not in self._refresh_failed:
                # Stale but kept: every caller is served it at once, and one refresh per
                # key runs in the background (across processes: the lease holder's).
                self.stats.stale_served += 1
                self.count_hit(cache, entry.value)
                self._refresh_in_background(cache, full, args, kwargs, entry)
                return entry.value
            # A refresh of this stale value failed (no stale_if_error): this caller
            # computes in the foreground, and sees the error if it fails again.
            self._refresh_failed.discard(full)
        return await self.compute(cache, full, args, kwargs, counted=True)

    async def uncached(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """The path taken under ``memo.disable()`` or ``memo.bypass()``."""
        if not is_bypassed():
            return await self.lookup(None, args, kwargs)
        return await self._bypass(self.resolve(), args, kwargs)

    async def skip(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Run a call uncached by policy (``deterministic_only``), counted as such."""
        self.stats.nondeterministic += 1
        return await self._bypass(self.resolve(), args, kwargs)

    async def _bypass(self, cache: Cache, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        self.stats.bypassed += 1
        cache.count_bypassed()
        return await self.func(*args, **kwargs)

    async def compute(
        self,
        cache: Cache,
        full: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        counted: bool = False,
        replacing: Entry | None = None,
        background: bool = False,
    ) -> Any:
        """Compute through the cache's single-flight table and return this caller's copy.

        With ``counted``, this caller is counted: a miss when it starts the computation,
        ``coalesced`` when it joins one already running (it neither hit nor computed).
        ``replacing`` is the entry the result replaces (a stale or soon-stale value),
        ``background`` a refresh nobody waits for."""
        flights = cache.flights
        flight, joined = flights.join_or_start(
            full,
            lambda f: self.work(cache, f, full, args, kwargs, replacing, background),
            keep=self.keep_abandoned,
        )
        if counted and joined:
            self.count_join(cache)
        elif counted:
            self.count_miss(cache)
        if flight.settled and not joined:  # it never waited: it has ended, nobody joined
            return flight.outcome()[0]
        waiter = flights.waiter(flight)  # awaited here, not in a coroutine: a frame fewer
        try:
            value, data = await waiter
        finally:
            flights.leave(flight)
        if not joined:
            return value  # the caller that started it gets the function's own object
        # Joiners get their own copy, so that no two callers share mutable state: decoded
        # from the stored bytes, or, when the result was not stored (condition, None,
        # invalidated in flight, not encodable), a deep copy.
        if data is not None:
            try:
                return self.decode(data).value
            except DecodeError:
                pass
        try:
            return copy.deepcopy(value)
        except Exception:  # a value that cannot be copied is shared, as it cannot be stored
            return value

    async def work(
        self,
        cache: Cache,
        flight: Flight[Any] | None,
        full: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        replacing: Entry | None = None,
        background: bool = False,
    ) -> tuple[Any, bytes | None]:
        """Compute, and store as the cache allows: under a lease where leases are shared
        (Redis), plainly where they are not (memory). ``flight`` is None for an explicit
        ``refresh()``, whose store wins over any computation under way."""
        tags = [] if self.tag_templates is None else self.tag_templates.render(cache, args, kwargs)
        lease = None
        if cache.leasing.active:
            # An explicit refresh (no flight) takes the lease whoever holds it: it wins
            # over computations under way, and loses to invalidations during its own.
            lease = await cache.leasing.take(full, tags, replacing, force=flight is None)
            if lease is not None and not lease.held:
                if background and replacing is not None:
                    return replacing.value, None  # another process is refreshing it
                if lease.superseded:  # stored since this caller read: read, not compute
                    entry = await cache.read_fresh_entry(full)
                    if entry is not None:
                        return entry.value, None
                if self.lock:
                    waited = await self._wait_for_holder(cache, full, tags, replacing)
                    if isinstance(waited, Entry):
                        return waited.value, None
                    lease = waited or lease  # gave up waiting: compute, store nothing
        clock = cache.clock
        started = clock()
        try:
            if lease is None:
                value = await self.run(*args, **kwargs)
            else:
                async with cache.leasing.kept(lease):
                    value = await self.run(*args, **kwargs)
        except BaseException as exc:
            if isinstance(exc, Exception):
                self.stats.errors += 1
            if lease is not None:
                await cache.leasing.release(lease)  # a waiter may compute now
            raise
        elapsed = clock() - started
        self.stats.computations += 1
        self.stats.compute_seconds += elapsed
        try:
            data = await self._store(
                cache, full, value, int(elapsed * 1_000_000), tags, flight, lease
            )
        except BaseException:  # a condition that raised, a cancellation while storing
            if lease is not None:
                await cache.leasing.release(lease)
            raise
        return value, data

    async def _wait_for_holder(
        self, cache: Cache, full: str, tags: list[str], replacing: Entry | None
    ) -> Entry | Lease | None:
        """``lock=True``: wait for the process holding the lease of ``full`` to store
        its value, up to ``lock_wait`` seconds. The value; or the lease, once the holder
        gave it up (it failed, or crashed and the lease expired); or None when the wait
        ran out (the caller then computes without storing)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.lock_wait
        pause = 0.005
        while (left := deadline - loop.time()) > 0:
            await asyncio.sleep(min(pause, left))  # polling: a store announces nothing here
            pause = min(pause * 2, 0.1)
            entry = await cache.read_fresh_entry(full)
            if entry is not None:
                return entry
            lease = await cache.leasing.take(full, tags, replacing)
            if lease is None or lease.held:
                return lease
        return None

    async def _store(
        self,
        cache: Cache,
        full: str,
        value: Any,
        compute_us: int,
        tags: list[str],
        flight: Flight[Any] | None,
        lease: Lease | None,
    ) -> bytes | None:
        """Encode and store a result (if it should be); the bytes, for joiners' copies.

        Under a lease the store is one server-side step refused when anything overtook
        the computation (a write, a delete, a tag invalidation, in any process)."""
        encoded = self._encode(cache, value, compute_us)
        data = None if encoded is None else encoded[0]
        if encoded is None or (flight is not None and flight.invalidated):
            if lease is not None:
                await cache.leasing.release(lease)
            return data  # not stored: handed to joiners only
        data, fresh_ms = encoded
        ttl_ms = fresh_ms + self.stale_ms
        if not cache.leasing.active:  # memory, or a server refusing scripts
            stored = cache.stored_in_memory(full, data, ttl_ms)  # no frame to await
            if (stored or await cache.store_entry(full, data, ttl_ms)) and tags:
                try:
                    await cache.tag_entry(tags, full, ttl_ms)
                except Exception as exc:  # a tag never fails the call it labels
                    cache.log_once(f"tags:{full}", "memo: tags were not recorded: %r", exc)
        elif lease is not None and lease.held:
            if await cache.leasing.store(lease, data, ttl_ms):
                cache.stats.sets += 1
        else:
            # No lease of ours (the holder stores; or Redis failed when it was asked):
            # nothing goes to Redis, where it could land after an invalidation it never
            # heard of; during an outage the memory tier keeps a copy, as for any write.
            cache.keep_local_copy(full, data, ttl_ms)
        return data

    def _encode(self, cache: Cache, value: Any, compute_us: int) -> tuple[bytes, int] | None:
        """The envelope of a result that should be stored, and its TTL; None when it
        should not be (a None, a failed ``condition``) or cannot (too large, a type memo
        cannot store)."""
        if value is None and not self.cache_none:
            return None
        if self.condition is not None and not self.condition(value):
            return None
        ttl_ms = self.ttl_for(cache, value)
        try:
            return cache.encode_entry(value, ttl_ms, compute_us=compute_us), ttl_ms
        except EncodeError as exc:
            self.stats.errors += 1
            if not self._warned_encode:
                self._warned_encode = True
                logger.warning(
                    "memo: a result of %s was returned but not cached: %s",
                    getattr(self.func, "__qualname__", self.func),
                    exc,
                )
            return None

    def ttl_for(self, cache: Cache, value: Any) -> int:
        if value is None and self.none_ttl_ms is not None:
            return self.none_ttl_ms
        ttl_ms = self.ttl_ms
        if ttl_ms is None:
            ttl_ms = cache.ai.operation_ttl_ms(self.operation) or cache.default_ttl_ms
        if self.jitter:
            ttl_ms = max(1, ttl_ms - int(ttl_ms * self.jitter * self._rand()))
        return ttl_ms

    def _refresh_in_background(
        self,
        cache: Cache,
        full: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        entry: Entry,
    ) -> None:
        """Start refreshing a stale (or, with ``early_refresh``, soon stale) entry nobody
        waits for, unless a computation of it runs already. The flight starts now, so
        every other caller of this tick sees it; across processes only the lease holder
        computes."""
        flights = cache.flights
        if flights.running(full) is not None:
            return
        self.stats.refreshes += 1
        flight = flights.start(
            full,
            lambda f: self.work(cache, f, full, args, kwargs, entry, True),
            keep=True,  # nobody waits for it; aclose() does
        )

        def failed(exc: Exception) -> None:  # told before the flight leaves the table
            logger.warning("memo: background refresh of %s failed: %r", full, exc)
            if entry.fresh_until_ms <= cache.now_ms() and not self.stale_if_error:
                if len(self._refresh_failed) >= _REMEMBERED_FAILURES:
                    self._refresh_failed.clear()
                self._refresh_failed.add(full)

        flight.failed = failed

    def count_hit(self, cache: Cache, value: Any) -> None:
        self.stats.hits += 1
        cache.stats.hits += 1
        if self.usage_of is not None:
            self.saved(cache, value)

    def saved(self, cache: Cache, value: Any) -> None:
        """Count the tokens a hit on ``value`` saved (AI functions)."""
        usage = None if self.usage_of is None else self.usage_of(value)
        if usage is not None and self.operation is not None:
            cache.record_saving(self.operation, usage)

    def count_miss(self, cache: Cache) -> None:
        self.stats.misses += 1
        cache.stats.misses += 1

    def count_join(self, cache: Cache) -> None:
        self.stats.coalesced += 1
        cache.stats.coalesced += 1

    # ---------------------------------------------------------------- helpers

    def key_for(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        return self.keys(args, kwargs)

    async def invalidate(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
        return await self.resolve().delete(self.keys(args, kwargs))

    async def invalidate_all(self) -> int:
        return await self.resolve().invalidate_pattern(self.keys.pattern())

    async def refresh(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        cache = self.resolve()
        full = cache.prefix + self.keys(args, kwargs)
        # An older computation still running must not overwrite the value computed here.
        cache.flights.invalidate(full)
        self.stats.refreshes += 1
        value, _ = await self.work(cache, None, full, args, kwargs)
        return value

    async def peek(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        cache = self.resolve()
        entry = await cache.read_fresh_entry(cache.prefix + self.keys(args, kwargs))
        return MISSING if entry is None else entry.value
