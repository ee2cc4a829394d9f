"""The hot path of a decorated function: a plain ``async def`` closure.

A memory hit costs one key derivation, one dict lookup and one decode; everything else
goes to the plan's slow path. The closure keeps its own copies of the bound cache's
parts, which the plan's hooks keep in step when the cache is bound or closed.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from memo._plan import CallPlan
from memo._switch import SWITCH
from memo.cache import Cache
from memo.exceptions import DecodeError
from memo.stats import CacheStats

__all__ = ["make_call"]


def _no_key(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    return ""


def make_call(plan: CallPlan) -> Callable[..., Coroutine[Any, Any, Any]]:
    # The hot path reads these from its closure. Until the cache is bound (the first
    # call of a preset or default function) they route every call to plan.lookup,
    # which binds it; bind/unbind below keep them in step with the plan.
    keys: Callable[[tuple[Any, ...], dict[str, Any]], str] = plan.keys
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
        cstats = cache.stats
        prefix = cache.prefix
        decode_local = plan.decode_local
        # Only a local tier can be read without awaiting, and only with no stale window
        # may its own expiry stand in for the freshness check.
        local_get = cache.local_reader if plan.simple and not plan.ai_off else None

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
