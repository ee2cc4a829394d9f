"""The slow path of a decorated function: everything but a plain memory hit.

``CallPlan`` holds what a decorated function needs besides its hot path (see
``memo._hotpath``): the cache it is bound to (given, or built at the first call from a
slot), freshness, stale values, early refresh, single-flight, storing and tagging, and
the helpers (``invalidate``, ``refresh``, ``peek`` …). It talks to its cache only through
the cache's seam (``memo._cache_core``).
"""

from __future__ import annotations

import copy
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from memo._binder import make_binder
from memo._flight import Flight, computing_here, should_refresh_early
from memo._sentinel import MISSING
from memo._slots import CacheSlot, DeferredCache
from memo._switch import is_bypassed
from memo._ttl import TTL, ttl_to_ms
from memo.cache import Cache
from memo.exceptions import DecodeError, EncodeError
from memo.stats import FunctionStats

__all__ = ["CallPlan", "KeyFunc"]

logger = logging.getLogger("memo")


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
        operation: str | None = None,
        rekey: Callable[[int], KeyFunc] | None = None,
    ) -> None:
        self.func = func
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
        # Tags see every argument, self included ("tenant:{self.tenant_id}").
        self.tag_binder = make_binder(func) if tags else None
        self.keep_abandoned = keep_abandoned
        self.operation = operation
        self.stats = FunctionStats()
        # The hit path may skip the freshness check only when the backend's own expiry
        # is the logical one: no stale window and no early refresh.
        self.simple = self.stale_ms == 0 and not early_refresh
        self._rand = random.random
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
        if entry is None and flights.running(full) is None and flights.settled(full) != settled:
            # A computation of this key finished while the read was out: its value may
            # have been stored after the read was answered. Read again, not compute again.
            entry = await cache.read_entry(full)
        if entry is not None:
            now = cache.now_ms()
            if entry.fresh_until_ms > now:
                self._count_hit(cache)
                if (
                    self.early_refresh
                    and should_refresh_early(
                        now, entry.fresh_until_ms, entry.compute_us, self._rand
                    )
                    and cache.flights.running(full) is None
                ):
                    self.stats.refreshes += 1
                    cache.spawn(self._refresh_quietly(full, args, kwargs))
                return entry.value
            if self.stale_ms:
                # Stale but kept: one caller refreshes while the others are served the
                # old value; with stale_if_error, the refresher falls back to it too.
                if cache.flights.running(full) is not None:
                    self.stats.stale_served += 1
                    self._count_hit(cache)
                    return entry.value
                try:
                    return await self.compute(cache, full, args, kwargs, counted=True)
                except Exception:
                    if not self.stale_if_error:
                        raise
                    self.stats.stale_served += 1
                    return entry.value
        return await self.compute(cache, full, args, kwargs, counted=True)

    async def uncached(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """The path taken under ``memo.disable()`` or ``memo.bypass()``."""
        if not is_bypassed():
            return await self.lookup(None, args, kwargs)
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
    ) -> Any:
        """Compute through the cache's single-flight table and return this caller's copy.

        With ``counted``, this caller is counted: a miss when it starts the computation,
        ``coalesced`` when it joins one already running (it neither hit nor computed).
        """
        flights = cache.flights
        running = flights.running(full)
        if counted and running is not None:
            self._count_join(cache)
        elif counted:
            self._count_miss(cache)
        flight = running or flights.start(
            full, lambda f: self._work(cache, f, full, args, kwargs), keep=self.keep_abandoned
        )
        value, data = await flights.join(flight)
        if running is None:
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

    async def _work(
        self,
        cache: Cache,
        flight: Flight[Any] | None,
        full: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> tuple[Any, bytes | None]:
        clock = cache.clock
        started = clock()
        try:
            value = await self.func(*args, **kwargs)
        except Exception:
            self.stats.errors += 1
            raise
        elapsed = clock() - started
        self.stats.computations += 1
        self.stats.compute_seconds += elapsed
        if flight is not None and flight.invalidated:
            return value, None
        data = await self._store(cache, full, value, int(elapsed * 1_000_000), args, kwargs, flight)
        return value, data

    async def _store(
        self,
        cache: Cache,
        full: str,
        value: Any,
        compute_us: int,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        flight: Flight[Any] | None,
    ) -> bytes | None:
        if value is None and not self.cache_none:
            return None
        if self.condition is not None and not self.condition(value):
            return None
        ttl_ms = self.ttl_for(cache, value)
        try:
            data = cache.encode_entry(value, ttl_ms, compute_us=compute_us)
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
        if flight is not None and flight.invalidated:
            return data  # invalidated while encoding: hand it to waiters, don't store
        await cache.store_entry(full, data, ttl_ms + self.stale_ms)
        if self.tags and self.tag_binder is not None:
            try:
                bound = dict(self.tag_binder(args, kwargs))
                tags = [t.format_map(bound) for t in self.tags]
                await cache.tag_entry(tags, full, ttl_ms + self.stale_ms)
            except Exception as exc:  # a tag never fails the call it labels
                cache.log_once(
                    f"tags:{self.func.__qualname__}",
                    "memo: tags of %s were not recorded: %r",
                    self.func.__qualname__,
                    exc,
                )
        return data

    def ttl_for(self, cache: Cache, value: Any) -> int:
        if value is None and self.none_ttl_ms is not None:
            return self.none_ttl_ms
        ttl_ms = self.ttl_ms
        if ttl_ms is None:
            ttl_ms = cache.ai.operation_ttl_ms(self.operation) or cache.default_ttl_ms
        if self.jitter:
            ttl_ms = max(1, ttl_ms - int(ttl_ms * self.jitter * self._rand()))
        return ttl_ms

    async def _refresh_quietly(
        self, full: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        cache = self.resolve()
        try:
            await self.compute(cache, full, args, kwargs)
        except Exception as exc:  # the caller already has its value; log and move on
            logger.warning("memo: early refresh of %s failed: %r", full, exc)

    def _count_hit(self, cache: Cache) -> None:
        self.stats.hits += 1
        cache.stats.hits += 1

    def _count_miss(self, cache: Cache) -> None:
        self.stats.misses += 1
        cache.stats.misses += 1

    def _count_join(self, cache: Cache) -> None:
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
        value, _ = await self._work(cache, None, full, args, kwargs)
        return value

    async def peek(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        cache = self.resolve()
        entry = await cache.read_fresh_entry(cache.prefix + self.keys(args, kwargs))
        return MISSING if entry is None else entry.value
