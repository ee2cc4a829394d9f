"""The hot path of a decorated function: a plain ``async def`` closure.

A memory hit costs one key derivation, one dict lookup and one decode; everything else
goes to the plan's slow path. The closure keeps its own copies of the bound cache's
parts, which the plan's hooks keep in step when the cache is bound or closed.

On a cache that is a memory tier alone, calls hit again and again skip even that: the
closure holds, by the call's arguments (``KeyBuilder.map_key``), the tier's entry and
the decoded value remembered for it, and a hit checks that the entry still stands
(``LocalEntries``) and copies the value. Nothing is held for a call until it has been
hit, so a tier filled by misses holds no more than its entries.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Hashable
from typing import Any

from memo._flight import computing_here
from memo._keys import FAST_STR_LEN
from memo._plan import CallPlan
from memo._switch import SWITCH
from memo.backends._eviction import GONE, MAX_FREQUENCY, Entry
from memo.backends.base import LocalEntries
from memo.cache import Cache
from memo.exceptions import DecodeError
from memo.stats import CacheStats

__all__ = ["make_call"]

#: Calls held before the first sweep of entries gone from the tier.
_HELD_AT_LEAST = 1024

_Held = tuple[Entry, Any, Callable[[Any], Any]]


def _no_key(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    return ""


def _never() -> float:
    return float("inf")


def _nothing_remembered(data: bytes) -> tuple[Any, Callable[[Any], Any]] | None:
    return None


def make_call(plan: CallPlan) -> Callable[..., Coroutine[Any, Any, Any]]:
    # The hot path reads these from its closure. Until the cache is bound (the first
    # call of a preset or default function) they route every call to plan.lookup,
    # which binds it; bind/unbind below keep them in step with the plan.
    keys: Callable[[tuple[Any, ...], dict[str, Any]], str] = plan.keys
    # Key builders that can tell a call's identity without deriving its key offer these.
    map_key: Callable[[tuple[Any, ...], dict[str, Any]], Hashable | None] | None = getattr(
        plan.keys, "map_key", None
    )
    key_by_map: Callable[..., str] | None = getattr(plan.keys, "key_by_map", None)
    plain = False  # see KeyBuilder.plain
    fstats = plan.stats
    lookup = plan.lookup
    cstats = CacheStats()
    prefix = ""
    decode_local: Callable[[bytes], Any] = bytes
    local_get: Callable[[str], bytes | None] | None = None
    # Calls hit before, by their arguments: the tier's entry, the decoded value, its copier.
    held: dict[Hashable, _Held] | None = None
    # The same for one positional int (the commonest call), by the int itself: no tuple
    # to build and hash per hit.
    held_ints: dict[int, _Held] = {}
    held_max = _HELD_AT_LEAST
    tier: LocalEntries | None = None
    clock: Callable[[], float] = _never
    remembered: Callable[[bytes], tuple[Any, Callable[[Any], Any]] | None] = _nothing_remembered
    # AI functions count the tokens each hit saved (plan.saved); None elsewhere.
    saving: Callable[[Cache, Any], None] | None = None
    bound: Cache | None = None
    alone = False  # the memory tier read by local_get is all the cache has
    compute = plan.compute

    def bind(cache: Cache) -> None:
        nonlocal keys, cstats, prefix, decode_local, local_get, held, held_ints, tier, clock
        nonlocal remembered
        nonlocal map_key, key_by_map, plain, saving, bound, alone
        # Under ENABLE_AI_CACHE=false every call goes to lookup, which runs it uncached.
        keys = _no_key if plan.ai_off else plan.keys
        map_key = getattr(plan.keys, "map_key", None)  # binding may have rebuilt the keys
        key_by_map = getattr(plan.keys, "key_by_map", None)
        plain = bool(getattr(plan.keys, "plain", False))
        cstats = cache.stats
        prefix = cache.prefix
        decode_local = plan.decode_local
        # Only a local tier can be read without awaiting, and only with no stale window
        # may its own expiry stand in for the freshness check.
        local_get = cache.local_reader if plan.simple and not plan.ai_off else None
        tier = cache.local_entries if local_get is not None and map_key is not None else None
        held = {} if tier is not None else None
        held_ints = {}
        alone = local_get is not None and cache.local_entries is not None
        clock = tier.clock if tier is not None else _never
        remembered = cache.codec.remembered
        saving = plan.saved if plan.usage_of is not None else None
        bound = cache

    def unbind() -> None:
        nonlocal local_get, prefix, held, held_ints, tier, bound, alone
        local_get = bound = None
        alone = False
        prefix = ""
        held = tier = None
        held_ints = {}

    plan.add_hooks(bind, unbind)

    def hold(mk: Hashable, full: str, data: bytes, one_int: bool) -> None:
        """Hold a call just hit, if its value was remembered and its entry stands."""
        nonlocal held, held_ints, held_max
        found = remembered(data)  # None until a second hit: most first hits stop here
        if found is None or tier is None or held is None:
            return
        entry = tier.entry_local(full)
        if entry is None or entry.value is not data:
            return
        if len(held) + len(held_ints) >= held_max:
            # Sweep out what the tier has dropped; what is left is all live entries of
            # this function, so the next sweep comes after as many holds again.
            held = {k: v for k, v in held.items() if v[0].queue != GONE}
            held_ints = {k: v for k, v in held_ints.items() if v[0].queue != GONE}
            held_max = max(_HELD_AT_LEAST, 2 * (len(held) + len(held_ints)))
        if one_int:
            held_ints[mk[1]] = (entry, found[0], found[1])  # type: ignore[index]
        else:
            held[mk] = (entry, found[0], found[1])

    async def call(*args: Any, **kwargs: Any) -> Any:
        if SWITCH.quiet:
            mk: Hashable | None = None
            one_int = False
            if held is not None:
                known: _Held | None = None
                if plain and len(args) == 1 and not kwargs:
                    # KeyBuilder.map_key's own answer for this shape, without the call.
                    a = args[0]
                    t = type(a)
                    if t is int:
                        known = held_ints.get(a)
                        one_int = True
                    elif t is bool or a is None or (t is str and len(a) <= FAST_STR_LEN):
                        mk = (t, a)
                        known = held.get(mk)
                else:
                    mk = map_key(args, kwargs)  # type: ignore[misc]  # set whenever held is
                    if mk is not None:
                        known = held.get(mk)
                if known is not None:
                    entry, template, copy = known
                    if entry.queue != GONE and clock() < entry:  # an Entry is its deadline
                        if entry.freq < MAX_FREQUENCY:
                            entry.freq += 1
                        fstats.hits += 1
                        cstats.hits += 1
                        cstats.memory_hits += 1
                        return copy(template)
                if one_int:  # not held (yet): the identity the slow path needs
                    mk = (int, args[0])
            if mk is None or key_by_map is None:
                full = prefix + keys(args, kwargs)
            else:  # the identity is known already: do not work it out twice
                full = prefix + key_by_map(mk, args, kwargs)
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
                        if mk is not None:
                            hold(mk, full, data, one_int)
                        elif saving is not None:
                            saving(bound, value)  # type: ignore[arg-type]  # set with it
                        return value
                elif alone and not computing_here(full):
                    # The tier is all there is and it has not got the key: nothing else
                    # to read (lookup would ask it again), so straight to computing.
                    return await compute(bound, full, args, kwargs, counted=True)  # type: ignore[arg-type]  # set with alone
            return await lookup(full, args, kwargs)
        return await plan.uncached(args, kwargs)

    return call
