"""``@cached`` and ``@ai_cached``.

The call path is a plain ``async def`` closure, so a decorated function stays a real
coroutine function (``inspect``, FastAPI and type checkers see it as one) and a memory hit
costs one key derivation, one dict lookup and one decode. Everything else — resolving the
cache, freshness, stale values, early refresh, single-flight, storing — lives on the slow
path in ``CallPlan``.

Instance methods (first parameter ``self``) are wrapped in a descriptor so that
``obj.method.invalidate(...)`` knows its instance; functions whose first parameter is
``cls`` are treated as class methods, whose class never enters the key.
"""

from __future__ import annotations

import functools
import inspect
import logging
import string
import weakref
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, ParamSpec, TypeVar, overload

from memo._aikeys import AIKeyBuilder
from memo._cache_core import CacheSource, resolve_cache
from memo._canonical import DEFAULT_TEXT_HASH_THRESHOLD
from memo._hotpath import make_call
from memo._keys import KeyBuilder
from memo._methods import CachedMethod, CachedStreamMethod, attach_helpers
from memo._plan import CallPlan
from memo._requestkeys import RequestKeyBuilder, is_nondeterministic
from memo._savings import custom_usage, usage_of
from memo._slots import CacheSlot, DeferredCache, default_slot, preset_slot
from memo._streams import make_stream_call, recording
from memo._tracing import traced_computation
from memo._ttl import TTL, ttl_to_ms
from memo._types import CacheDecorator, CachedFunction
from memo._validate import check_bool, check_fraction, check_seconds
from memo.cache import Cache
from memo.exceptions import ConfigError

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
        return  # a stream: recorded once, replayed (memo._streams)
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


#: Builds a function's plan: (the function to run, is it a method, is it a stream).
Build = Callable[[Callable[..., Any], bool, bool], CallPlan]


def _skip_nondeterministic(plan: CallPlan) -> Callable[[tuple[Any, ...], dict[str, Any]], bool]:
    """``deterministic_only``: true for a call whose request may be answered differently
    each time (the key builder, rebuilt when the cache binds, finds the request)."""

    def skip(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
        return is_nondeterministic(plan.keys.request_of(args, kwargs))  # type: ignore[attr-defined]

    return skip


def _with_policy(plan: CallPlan, call: Callable[..., Any]) -> Callable[..., Any]:
    skip = _skip_nondeterministic(plan)

    async def checked(*args: Any, **kwargs: Any) -> Any:
        if skip(args, kwargs):
            return await plan.skip(args, kwargs)
        return await call(*args, **kwargs)

    return checked


def _wrap(
    func: Any,
    decorator: str,
    build: Build,
    *,
    pace: float = 0.0,
    deterministic_only: bool = False,
) -> Any:
    # @cached above @classmethod / @staticmethod: wrap the function, then re-wrap.
    if isinstance(func, (classmethod, staticmethod)):
        inner = _wrap(
            func.__func__, decorator, build, pace=pace, deterministic_only=deterministic_only
        )
        return type(func)(inner)
    _check_async(func, decorator)
    first = _first_param(func)
    is_method = first in ("self", "cls") and _defined_in_class(func)
    stream = inspect.isasyncgenfunction(func)
    plan = build(func, is_method, stream)
    plan.run = traced_computation(plan.run, plan.function_id, plan.operation)
    if stream:
        if plan.stale_ms or plan.early_refresh:
            raise ConfigError(
                f"{func.__qualname__} is a stream: stale_ttl and early_refresh do not apply "
                f"to streams (a stale stream would be replayed whole); leave them out"
            )
        # Another process's stream cannot be followed, only its stored end: waiting for
        # it would leave a caller silent for the whole stream (time to first token is
        # what streams are for). So each process streams, and the lease holder stores.
        plan.lock = False
        skip = _skip_nondeterministic(plan) if deterministic_only else None
        call: Any = make_stream_call(plan, func, pace=pace, skip=skip)
        if is_method and first == "self":
            return CachedStreamMethod(call, plan)
    else:
        call = make_call(plan)
        if deterministic_only:
            call = _with_policy(plan, call)
        if is_method and first == "self":
            return CachedMethod(call, plan)
    functools.update_wrapper(call, func)
    # A class method's class never enters the key, so its helpers take the arguments
    # without it (a placeholder stands in for the skipped first parameter).
    attach_helpers(call, plan, leading=(None,) if is_method else ())
    call.cache = plan.cache_handle()
    return call


def _common_checks(
    cache: CacheSource | None, preset: str | None, jitter: float, lock_wait: float
) -> tuple[Cache | None, CacheSlot | None]:
    """Check the shared options; return the cache given, or the slot to build one from."""
    if cache is not None and preset is not None:
        raise TypeError("pass either cache= (an instance) or preset= (a name), not both")
    check_fraction("jitter", jitter)
    check_seconds("lock_wait", lock_wait, 3600)
    if isinstance(cache, DeferredCache):
        return None, cache.slot  # another function's fn.cache: share its slot
    if cache is not None:
        resolved = resolve_cache(cache, "cache")
        if not isinstance(resolved, Cache):
            raise TypeError(f"cache={cache!r}: decorators need a Cache (InMemoryCache, ...)")
        return resolved, None
    return None, preset_slot(preset) if preset is not None else default_slot()


@overload
def cached(ttl: Callable[P, Awaitable[R]], /) -> CachedFunction[P, R]: ...
@overload
def cached(
    ttl: TTL | None = None,
    *,
    cache: CacheSource | None = None,
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
    text_hash_threshold: int = DEFAULT_TEXT_HASH_THRESHOLD,
) -> CacheDecorator: ...
def cached(
    ttl: Any = None,
    *,
    cache: CacheSource | None = None,
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
    text_hash_threshold: int = DEFAULT_TEXT_HASH_THRESHOLD,
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
        lock, lock_wait: on a cache shared by processes (Redis), a process that misses
            while another computes the key waits up to ``lock_wait`` seconds for its
            value instead of computing too (a lease per cold key; the holder's crash
            lets a waiter take over within seconds); within
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
    check_bool("lock", lock)

    def build(func: Callable[..., Any], method: bool, stream: bool) -> CallPlan:
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
        return CallPlan(
            func,
            keys,
            run=recording(func) if stream else None,
            namespace=namespace or "",
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
            lock=lock,
            lock_wait=lock_wait,
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
    cache: CacheSource | None = None,
    preset: str | None = None,
    ignore: Iterable[str] = (),
    version: int = 1,
    condition: Callable[[Any], bool] | None = None,
    cache_none: bool = False,
    stale_ttl: TTL | None = None,
    stale_if_error: bool = False,
    early_refresh: bool = False,
    lock: bool = True,
    lock_wait: float = 5.0,
    text_hash_threshold: int | None = None,
    request: str | None = None,
    request_ignore: Iterable[str] = (),
    deterministic_only: bool = False,
    usage: Callable[[Any], Any] | None = None,
    replay_pace: float = 0.0,
) -> CacheDecorator:
    """Cache an AI service call by (operation, text, options), or by its whole request.

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
        request: the name of the parameter holding a whole chat-style request (a dict,
            a pydantic model, a dataclass; ``**kwargs`` for ``create(**request)``). The
            key then covers every field that shapes the reply (``memo._requestkeys``),
            and ``text``/``options`` are not used. request_ignore: more request fields
            to leave out of the key.
        deterministic_only: run uncached (counted as ``nondeterministic`` and
            ``bypassed``) a request with a temperature above 0 (or none) and no seed.
            Default False: such replies are cached too (caching is about cost).
        usage: a function reading a reply's usage, returning (prompt tokens,
            completion tokens) or a usage record; by default ``reply.usage`` /
            ``reply["usage"]`` is read. Each hit adds the tokens it saved to the cache's
            ``ai_savings`` stats.
        replay_pace: for a stream (an async generator), seconds between the chunks
            of a replayed hit; 0 replays at once.
        Other arguments as for ``cached``.
    """
    given, slot = _common_checks(cache, preset, 0.0, lock_wait)
    if not isinstance(operation, str) or not operation:
        raise ConfigError(f"operation={operation!r}: name the AI operation, e.g. 'summarize'")
    check_bool("lock", lock)
    check_bool("deterministic_only", deterministic_only)
    check_seconds("replay_pace", replay_pace, 60, allow_zero=True)
    if request is not None and (not isinstance(request, str) or not request):
        raise ConfigError(f"request={request!r}: name the parameter holding the request")
    if deterministic_only and request is None:
        raise ConfigError(
            "deterministic_only=True needs request=: only a whole request tells its "
            "temperature and seed"
        )
    if usage is not None and not callable(usage):
        raise ConfigError(f"usage={usage!r}: pass a function of the reply, or leave it out")
    read_usage = usage_of if usage is None else custom_usage(usage)

    def build(func: Callable[..., Any], method: bool, stream: bool) -> CallPlan:
        def keys_for(threshold: int) -> AIKeyBuilder | RequestKeyBuilder:
            if request is not None:
                return RequestKeyBuilder(
                    func,
                    operation=operation,
                    request_arg=request,
                    request_ignore=request_ignore,
                    version=version,
                    text_hash_threshold=threshold,
                    ignore=ignore,
                    method=method,
                    stream=stream,
                )
            return AIKeyBuilder(
                func,
                operation=operation,
                text_arg=text,
                options_arg=options,
                version=version,
                text_hash_threshold=threshold,
                ignore=ignore,
                method=method,
                stream=stream,
            )

        # Without an explicit threshold, the key follows the cache's, as
        # AIResponseCache.build_key does; it is known once the cache is.
        keys = keys_for(
            DEFAULT_TEXT_HASH_THRESHOLD if text_hash_threshold is None else text_hash_threshold
        )
        return CallPlan(
            func,
            keys,
            run=recording(func) if stream else None,
            usage_of=read_usage,
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
            lock=lock,
            lock_wait=lock_wait,
            operation=operation,
            rekey=keys_for if text_hash_threshold is None else None,
        )

    def decorate(func: Any) -> Any:
        return _wrap(
            func, "ai_cached", build, pace=replay_pace, deterministic_only=deterministic_only
        )

    return decorate
