"""``@cached`` and ``@ai_cached``.

The call path is a plain ``async def`` closure, so a decorated function stays a real
coroutine function (``inspect``, FastAPI and type checkers see it as one) and a memory hit
costs one key derivation, one dict lookup and one decode. Everything else — resolving the
cache, freshness, stale values, early refresh, single-flight, storing — lives on the slow
path in ``_Plan``.

Instance methods (first parameter ``self``) are wrapped in a descriptor so that
``obj.method.invalidate(...)`` knows its instance; functions whose first parameter is
``cls`` are treated as class methods, whose class never enters the key.
"""

from __future__ import annotations

import functools
import inspect
import logging
import random
import string
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any, ParamSpec, TypeVar, overload

from memo._flight import Flight, computing_here, should_refresh_early
from memo._keys import AIKeyBuilder, KeyBuilder, make_binder
from memo._methods import CachedMethod, attach_helpers
from memo._sentinel import MISSING
from memo._slots import CacheSlot, DeferredCache, default_slot, preset_slot
from memo._switch import SWITCH, is_bypassed
from memo._ttl import TTL, ttl_to_ms
from memo._types import CachedFunction
from memo.cache import Cache
from memo.exceptions import ConfigError, DecodeError, EncodeError
from memo.stats import CacheStats, FunctionStats

__all__ = ["ai_cached", "cached", "default_cache"]

logger = logging.getLogger("memo")

KeyFunc = Callable[[tuple[Any, ...], dict[str, Any]], str]
P = ParamSpec("P")
R = TypeVar("R")


def default_cache() -> Cache:
    """The cache used by decorators given neither ``cache=`` nor ``preset=``.

    The cache of the preset ``CACHE_PRESET`` names, else an in-memory cache of 10 000
    entries; built on first use, rebuilt after ``memo.aclose_all()``.
    """
    return default_slot().get()


# (namespace, function id, version) -> the live function claiming it, to warn about clashes.
_claims: dict[tuple[str, str, int], weakref.ref[Callable[..., Any]]] = {}


def _claim(namespace: str, function_id: str, version: int, func: Callable[..., Any]) -> None:
    key = (namespace, function_id, version)
    previous = _claims.get(key)
    other = previous() if previous is not None else None
    if other is not None and other is not func:
        logger.warning(
            "memo: %r (%s) and %r (%s) both cache under %s version %d: their entries "
            "overwrite each other. Give one a namespace= or version=.",
            other,
            getattr(other, "__code__", None) and other.__code__.co_filename,
            func,
            func.__code__.co_filename,
            function_id,
            version,
        )
    _claims[key] = weakref.ref(func)


class _Plan:
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
        self.tag_binder = make_binder(func, skip_first=method) if tags else None
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
        self.decode: Callable[[bytes], Any] = cache._codec.decode
        self.decode_local: Callable[[bytes], Any] = cache._codec.decode_local
        self.ai_off = self.operation is not None and getattr(cache, "ai_enabled", True) is False
        if self._rekey is not None:
            threshold = getattr(cache, "text_hash_threshold", 1000)
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
        entry = await cache._read_any(full)
        if entry is not None:
            now = cache._wall.now_ms()
            if entry.fresh_until_ms > now:
                self._count_hit(cache)
                if (
                    self.early_refresh
                    and should_refresh_early(
                        now, entry.fresh_until_ms, entry.compute_us, self._rand
                    )
                    and cache._flights.running(full) is None
                ):
                    self.stats.refreshes += 1
                    cache._spawn(self._refresh_quietly(full, args, kwargs))
                return entry.value
            if self.stale_ms:
                # Stale but kept: one caller refreshes while the others are served the
                # old value; with stale_if_error, the refresher falls back to it too.
                if cache._flights.running(full) is not None:
                    self.stats.stale_served += 1
                    self._count_hit(cache)
                    return entry.value
                self._count_miss(cache)
                try:
                    return await self.compute(cache, full, args, kwargs)
                except Exception:
                    if not self.stale_if_error:
                        raise
                    self.stats.stale_served += 1
                    return entry.value
        self._count_miss(cache)
        return await self.compute(cache, full, args, kwargs)

    async def uncached(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """The path taken under ``memo.disable()`` or ``memo.bypass()``."""
        if not is_bypassed():
            return await self.lookup(None, args, kwargs)
        return await self._bypass(self.resolve(), args, kwargs)

    async def _bypass(self, cache: Cache, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        self.stats.bypassed += 1
        cache._stats.bypassed += 1
        return await self.func(*args, **kwargs)

    async def compute(
        self, cache: Cache, full: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """Compute through the cache's single-flight table and return this caller's copy."""
        flights = cache._flights
        running = flights.running(full)
        flight = running or flights.start(
            full, lambda f: self._work(cache, f, full, args, kwargs), keep=self.keep_abandoned
        )
        value, data = await flights.join(flight)
        if running is None or data is None:
            return value  # the caller that started it gets the function's own object
        # Joiners get their own decoded copy, so that no two callers share mutable state.
        try:
            return self.decode(data).value
        except DecodeError:
            return value

    async def _work(
        self,
        cache: Cache,
        flight: Flight[Any] | None,
        full: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> tuple[Any, bytes | None]:
        clock = cache._clock
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
            data = cache._encode(value, ttl_ms, compute_us=compute_us)
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
        await cache._put(full, data, ttl_ms + self.stale_ms)
        if self.tags and self.tag_binder is not None:
            bound = dict(self.tag_binder(args, kwargs))
            await cache._tag([t.format_map(bound) for t in self.tags], full, ttl_ms + self.stale_ms)
        return data

    def ttl_for(self, cache: Cache, value: Any) -> int:
        if value is None and self.none_ttl_ms is not None:
            return self.none_ttl_ms
        ttl_ms = self.ttl_ms
        if ttl_ms is None:
            op_ttl = getattr(cache, "operation_ttl_ms", None)
            ttl_ms = op_ttl(self.operation) if op_ttl and self.operation else cache.default_ttl_ms
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
        cache._stats.hits += 1

    def _count_miss(self, cache: Cache) -> None:
        self.stats.misses += 1
        cache._stats.misses += 1

    # ---------------------------------------------------------------- helpers

    def key_for(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        return self.keys(args, kwargs)

    async def invalidate(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
        return await self.resolve().delete(self.keys(args, kwargs))

    async def invalidate_all(self) -> int:
        pattern = getattr(self.keys, "pattern", None)
        if pattern is None:
            raise ConfigError("invalidate_all() needs a key builder with a pattern")
        return await self.resolve().invalidate_pattern(pattern())

    async def refresh(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        cache = self.resolve()
        full = cache.prefix + self.keys(args, kwargs)
        # An older computation still running must not overwrite the value computed here.
        cache._flights.invalidate(full)
        self.stats.refreshes += 1
        value, _ = await self._work(cache, None, full, args, kwargs)
        return value

    async def peek(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        cache = self.resolve()
        entry = await cache._read(cache.prefix + self.keys(args, kwargs))
        return MISSING if entry is None else entry.value


def _no_key(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    return ""


def _make_call(plan: _Plan) -> Callable[..., Coroutine[Any, Any, Any]]:
    # The hot path reads these from its closure. Until the cache is bound (the first
    # call of a preset or default function) they route every call to plan.lookup,
    # which binds it; bind/unbind below keep them in step with the plan.
    keys = plan.keys
    fstats = plan.stats
    lookup = plan.lookup
    cstats = CacheStats()
    prefix = ""
    decode_local: Callable[[bytes], Any] = bytes
    local_get: Callable[[str], bytes | None] | None = None

    def bind(cache: Cache) -> None:
        nonlocal keys, cstats, prefix, decode_local, local_get
        # Under ENABLE_AI_CACHE=false every call goes to lookup, which runs it uncached.
        keys = _no_key if plan.ai_off else plan.keys
        cstats = cache._stats
        prefix = cache.prefix
        decode_local = plan.decode_local
        # Only a local tier can be read without awaiting, and only with no stale window
        # may its own expiry stand in for the freshness check.
        local_get = cache._local_get if plan.simple and not plan.ai_off else None

    def unbind() -> None:
        nonlocal local_get, prefix
        local_get = None
        prefix = ""

    plan.add_hooks(bind, unbind)

    async def call(*args: Any, **kwargs: Any) -> Any:
        if SWITCH.quiet:
            full = prefix + keys(args, kwargs)
            if local_get is not None:
                data = local_get(full)
                if data is not None:
                    try:
                        value = decode_local(data)
                    except DecodeError:
                        pass  # the slow path counts it and deletes the bad bytes
                    else:
                        fstats.hits += 1
                        cstats.hits += 1
                        cstats.memory_hits += 1
                        return value
            return await lookup(full, args, kwargs)
        return await plan.uncached(args, kwargs)

    return call


def _first_param(func: Callable[..., Any]) -> str | None:
    params = list(inspect.signature(func).parameters.values())
    if params and params[0].kind in (
        inspect.Parameter.POSITIONAL_ONLY,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
    ):
        return params[0].name
    return None


def _defined_in_class(func: Callable[..., Any]) -> bool:
    parts = func.__qualname__.split(".")
    return len(parts) >= 2 and parts[-2] != "<locals>"


def _check_async(func: Any, decorator: str) -> None:
    if inspect.isasyncgenfunction(func):
        raise TypeError(
            f"@{decorator} cannot cache async generator {func.__qualname__}: collect its "
            f"items into a list in an async function and decorate that"
        )
    if not inspect.iscoroutinefunction(func):
        name = getattr(func, "__qualname__", repr(func))
        raise TypeError(
            f"@{decorator} decorates async functions, and {name} is not one: define it "
            f"with `async def`, or cache a synchronous function with functools.lru_cache"
        )


def _check_tags(func: Callable[..., Any], tags: Iterable[str]) -> tuple[str, ...]:
    if isinstance(tags, str):
        tags = (tags,)
    tags = tuple(tags)
    params = set(inspect.signature(func).parameters)
    for tag in tags:
        if not isinstance(tag, str) or not tag:
            raise ConfigError(f"tags={tags!r}: each tag is a non-empty string template")
        for _, field, _, _ in string.Formatter().parse(tag):
            if field is not None and field.split(".")[0].split("[")[0] not in params:
                raise ConfigError(
                    f"tags: {tag!r} names {{{field}}}, which is not a parameter of "
                    f"{func.__qualname__} (parameters: {', '.join(sorted(params))})"
                )
    return tags


def _wrap(
    func: Any,
    decorator: str,
    build: Callable[[Callable[..., Any], bool], _Plan],
) -> Any:
    # @cached above @classmethod / @staticmethod: wrap the function, then re-wrap.
    if isinstance(func, (classmethod, staticmethod)):
        inner = _wrap(func.__func__, decorator, build)
        return type(func)(inner)
    _check_async(func, decorator)
    first = _first_param(func)
    is_method = first in ("self", "cls") and _defined_in_class(func)
    plan = build(func, is_method)
    call = _make_call(plan)
    if is_method and first == "self":
        return CachedMethod(call, plan)
    functools.update_wrapper(call, func)
    # A class method's class never enters the key, so its helpers take the arguments
    # without it (a placeholder stands in for the skipped first parameter).
    attach_helpers(call, plan, leading=(None,) if is_method else ())
    call.cache = plan.cache_handle()  # type: ignore[attr-defined]
    return call


def _common_checks(
    cache: Cache | DeferredCache | None, preset: str | None, jitter: float, lock_wait: float
) -> tuple[Cache | None, CacheSlot | None]:
    """Check the shared options; return the cache given, or the slot to build one from."""
    if cache is not None and preset is not None:
        raise TypeError("pass either cache= (an instance) or preset= (a name), not both")
    if cache is not None and not isinstance(cache, (Cache, DeferredCache)):
        raise TypeError(
            f"cache={cache!r} is not a memo cache: pass an InMemoryCache, a cache from "
            f"CacheFactory, or preset='name'"
        )
    if not isinstance(jitter, (int, float)) or isinstance(jitter, bool) or not 0 <= jitter < 1:
        raise ConfigError(f"jitter={jitter!r}: a fraction of the TTL, 0 <= jitter < 1")
    if not isinstance(lock_wait, (int, float)) or lock_wait <= 0:
        raise ConfigError(f"lock_wait={lock_wait!r}: seconds a waiter waits, more than 0")
    if isinstance(cache, DeferredCache):
        return None, cache._slot  # another function's fn.cache: share its slot
    if cache is not None:
        return cache, None
    return None, preset_slot(preset) if preset is not None else default_slot()


@overload
def cached(ttl: Callable[P, Awaitable[R]], /) -> CachedFunction[P, R]: ...
@overload
def cached(
    ttl: TTL | None = None,
    *,
    cache: Cache | None = None,
    preset: str | None = None,
    namespace: str | None = None,
    key: Callable[..., Any] | None = None,
    ignore: Iterable[str] = (),
    version: int = 1,
    tags: Iterable[str] = (),
    condition: Callable[[Any], bool] | None = None,
    cache_none: bool = False,
    none_ttl: TTL | None = None,
    jitter: float = 0.0,
    stale_ttl: TTL | None = None,
    stale_if_error: bool = False,
    early_refresh: bool = False,
    lock: bool = False,
    lock_wait: float = 5.0,
    text_hash_threshold: int = 1000,
) -> Callable[[Callable[P, Awaitable[R]]], CachedFunction[P, R]]: ...
def cached(
    ttl: Any = None,
    *,
    cache: Cache | None = None,
    preset: str | None = None,
    namespace: str | None = None,
    key: Callable[..., Any] | None = None,
    ignore: Iterable[str] = (),
    version: int = 1,
    tags: Iterable[str] = (),
    condition: Callable[[Any], bool] | None = None,
    cache_none: bool = False,
    none_ttl: TTL | None = None,
    jitter: float = 0.0,
    stale_ttl: TTL | None = None,
    stale_if_error: bool = False,
    early_refresh: bool = False,
    lock: bool = False,
    lock_wait: float = 5.0,
    text_hash_threshold: int = 1000,
) -> Any:
    """Cache an async function's results, keyed by its arguments.

    Args:
        ttl: seconds (or a timedelta) a result stays fresh; None: the cache's default.
        cache: the cache to use; preset: the name of a preset whose process-wide cache to
            use. Neither: the default in-memory cache.
        namespace: heads the key, so ``invalidate_pattern("users:*")`` drops the group.
        key: a callable taking the function's arguments and returning the key material.
        ignore: parameter names left out of the key (connections, sessions, loggers).
        version: bump to orphan entries written by an older version of the function.
        tags: templates such as ``"user:{user_id}"``; ``cache.invalidate_tags(...)``
            removes every entry stored with a tag.
        condition: store a result only when ``condition(result)`` is true.
        cache_none: store None results too (default: a None is returned, not stored);
            none_ttl: their TTL (implies cache_none).
        jitter: shorten each TTL by a random fraction up to this, so that entries written
            together do not expire together.
        stale_ttl: seconds a value is kept past ``ttl``; while one caller recomputes it,
            the others are served the stale value.
        stale_if_error: when recomputing raises, serve the stale value instead.
        early_refresh: recompute hot keys in the background shortly before they expire
            (probabilistic early expiration, scaled by how long the value took).
        lock, lock_wait: a cross-process lock for the computation (Redis caches); within
            one process, concurrent callers always share one computation.
        text_hash_threshold: strings longer than this enter the key as a hash.

    The wrapper has ``invalidate``, ``key_for``, ``refresh``, ``peek``,
    ``invalidate_all``, ``stats`` and ``cache``; ``__wrapped__`` is the original.
    """
    if callable(ttl) and not isinstance(ttl, (int, float)):
        return cached()(ttl)  # bare @cached
    given, slot = _common_checks(cache, preset, jitter, lock_wait)
    if ttl is not None:
        ttl_to_ms(ttl)
    del lock  # within a process single-flight already serialises computations

    def build(func: Callable[..., Any], method: bool) -> _Plan:
        keys = KeyBuilder(
            func,
            namespace=namespace,
            version=version,
            ignore=ignore,
            key=key,
            text_hash_threshold=text_hash_threshold,
            method=method,
        )
        _claim(namespace or "", keys.function_id, version, func)
        return _Plan(
            func,
            keys,
            cache=given,
            slot=slot,
            ttl=ttl,
            none_ttl=none_ttl,
            cache_none=cache_none,
            condition=condition,
            jitter=jitter,
            stale_ttl=stale_ttl,
            stale_if_error=stale_if_error,
            early_refresh=early_refresh,
            tags=_check_tags(func, tags),
            method=method,
            keep_abandoned=False,
        )

    def decorate(func: Any) -> Any:
        return _wrap(func, "cached", build)

    return decorate


def ai_cached(
    operation: str,
    *,
    text: str = "text",
    options: str = "options",
    ttl: TTL | None = None,
    cache: Cache | None = None,
    preset: str | None = None,
    ignore: Iterable[str] = (),
    version: int = 1,
    condition: Callable[[Any], bool] | None = None,
    cache_none: bool = False,
    stale_ttl: TTL | None = None,
    stale_if_error: bool = False,
    early_refresh: bool = False,
    lock: bool = False,
    lock_wait: float = 5.0,
    text_hash_threshold: int | None = None,
) -> Callable[[Callable[P, Awaitable[R]]], CachedFunction[P, R]]:
    """Cache an AI service call by (operation, text, options).

    The key is ``ai:{operation}:v{version}:{digest}``, the same key
    ``AIResponseCache.build_key(text, operation, options)`` gives, so values stored by
    either are found by the other. Options are normalised (sorted keys, None values
    dropped, 100.0 == 100). Other arguments enter the key only when they differ from
    their defaults. A computation whose callers all went away is still finished and
    stored: its tokens are already paid for.

    Args:
        operation: the operation name (``summarize``, ``sentiment`` …); its TTL comes
            from the cache's ``operation_ttls`` unless ``ttl`` is given.
        text, options: the names of the parameters holding the text and the options.
        Other arguments as for ``cached``.
    """
    given, slot = _common_checks(cache, preset, 0.0, lock_wait)
    if not isinstance(operation, str) or not operation:
        raise ConfigError(f"operation={operation!r}: name the AI operation, e.g. 'summarize'")
    del lock

    def build(func: Callable[..., Any], method: bool) -> _Plan:
        def keys_for(threshold: int) -> AIKeyBuilder:
            return AIKeyBuilder(
                func,
                operation=operation,
                text_arg=text,
                options_arg=options,
                version=version,
                text_hash_threshold=threshold,
                ignore=ignore,
                method=method,
            )

        # Without an explicit threshold, the key follows the cache's, as
        # AIResponseCache.build_key does; it is known once the cache is.
        keys = keys_for(1000 if text_hash_threshold is None else text_hash_threshold)
        return _Plan(
            func,
            keys,
            cache=given,
            slot=slot,
            ttl=ttl,
            none_ttl=None,
            cache_none=cache_none,
            condition=condition,
            jitter=0.0,
            stale_ttl=stale_ttl,
            stale_if_error=stale_if_error,
            early_refresh=early_refresh,
            tags=(),
            method=method,
            keep_abandoned=True,
            operation=operation,
            rekey=keys_for if text_hash_threshold is None else None,
        )

    def decorate(func: Any) -> Any:
        return _wrap(func, "ai_cached", build)

    return decorate
