"""The caches decorators use when they are not given one: ``preset=`` and the default.

A decorator runs at import, before an application has set its environment, so these
caches are built at the first call instead: from the preset's figures and the ``CACHE_*``
variables as they are then. There is one per preset name for the whole process (its Redis
clients are per event loop inside it). ``aclose_all()`` closes them; the next call builds
them again from the environment of that moment, which is what tests that change the
environment between cases need.

The default cache (no ``cache=``, no ``preset=``) is the cache of the preset
``CACHE_PRESET`` names, or, when it is unset, a private in-memory cache.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

from memo._presets import preset_values

if TYPE_CHECKING:
    from memo.cache import Cache

__all__ = [
    "CacheSlot",
    "DeferredCache",
    "aclose_all",
    "default_slot",
    "invalidate_tags",
    "preset_slot",
    "release_connections",
]

#: Entries of the in-memory default cache (no preset, no CACHE_PRESET).
DEFAULT_MEMORY_ENTRIES = 10_000


class CacheSlot:
    """Where decorated functions find a cache that is built on first use."""

    def __init__(self, name: str | None) -> None:
        self.name = name  # a preset name; None for the default cache
        self.cache: Cache | None = None
        # Told when the cache is closed, so that functions bound to it bind anew. Held
        # weakly: a function defined in a closure and dropped must not be kept alive.
        self._bound: weakref.WeakSet[Any] = weakref.WeakSet()

    def get(self) -> Cache:
        """The slot's cache, built now if it is not built yet."""
        cache = self.cache
        if cache is None:
            cache = self.cache = self._build()
        return cache

    def watch(self, user: Any) -> None:
        """Call ``user.unbind()`` when this slot's cache is closed."""
        self._bound.add(user)

    def _build(self) -> Cache:
        from memo.config import PRESETS, configured_preset, env_overrides
        from memo.factory import build_cache

        if self.name is not None:
            return _build_preset(self.name)
        preset = configured_preset()
        if preset is not None:
            return preset_slot(preset).get()
        # In memory (CACHE_REDIS_URL alone does not move the default to Redis: a URL is
        # a connection detail, CACHE_PRESET the choice of tier); the other variables apply.
        _, overrides = env_overrides()
        overrides.pop("redis_url", None)
        config = PRESETS["simple"].replace(memory_cache_size=DEFAULT_MEMORY_ENTRIES)
        return build_cache(config.replace(**overrides), warn=False)

    def detach(self) -> Cache | None:
        """Forget the cache (returned, for closing) and unbind the functions using it."""
        cache, self.cache = self.cache, None
        for user in list(self._bound):
            user.unbind()
        self._bound.clear()
        return cache

    def __repr__(self) -> str:
        what = "the default cache" if self.name is None else f"preset {self.name!r}"
        state = "built" if self.cache is not None else "not built yet"
        return f"<cache slot for {what}, {state}>"


def _build_preset(name: str) -> Cache:
    from memo.config import PRESETS, env_overrides
    from memo.factory import build_cache

    _, overrides = env_overrides()  # the other CACHE_* variables; the name is given
    return build_cache(PRESETS[name].replace(**overrides))


_slots: dict[str | None, CacheSlot] = {}


def preset_slot(name: str) -> CacheSlot:
    """The slot of preset ``name``; an unknown name is a ConfigError listing the valid ones."""
    slot = _slots.get(name)
    if slot is None:
        preset_values(name)
        slot = _slots[name] = CacheSlot(name)
    return slot


def default_slot() -> CacheSlot:
    """The slot of the default cache."""
    slot = _slots.get(None)
    if slot is None:
        slot = _slots[None] = CacheSlot(None)
    return slot


def built_caches() -> list[Cache]:
    """The slot caches built so far."""
    return [slot.cache for slot in _slots.values() if slot.cache is not None]


async def aclose_all() -> None:
    """Close every cache that ``preset=`` or the default built (at application shutdown).

    Functions using them keep working: their next call builds the cache again.
    """
    closing: list[Cache] = []
    for slot in _slots.values():
        cache = slot.detach()
        if cache is not None and all(cache is not c for c in closing):
            closing.append(cache)  # the default may be a preset's cache: close it once
    for cache in closing:
        await cache.aclose()


async def invalidate_tags(*tags: str) -> int:
    """Remove the entries stored with any of ``tags`` from every open cache of this
    process (the default cache, ``preset=`` caches, every cache a decorated function
    has used), and through Redis from every process sharing those caches. How many
    entries were removed."""
    from memo.cache import live_caches

    default_slot().get()  # so that a default cache in Redis is reached even if unused here
    removed = 0
    for cache in live_caches():
        if not cache.closed:
            removed += await cache.invalidate_tags(*tags)
    return removed


async def release_connections() -> None:
    """Close this event loop's Redis connections, keeping every cache usable.

    Call it at the end of a job that runs in its own loop (``asyncio.run`` per task):
    connections belong to the loop that opened them and cannot be closed once it has
    ended. The caches open new connections in the next loop that uses them.
    """
    from memo.backends._registry import release_loop_connections

    await release_loop_connections()


class DeferredCache:
    """``fn.cache`` of a function whose cache is built at the first call.

    Attribute access goes to that cache, building it first if needed, so
    ``await fn.cache.get_cache_stats()`` works before or after the first call.
    ``resolve()`` returns the cache itself.
    """

    __slots__ = ("_slot",)

    def __init__(self, slot: CacheSlot) -> None:
        self._slot = slot

    def resolve(self) -> Cache:
        """The cache itself (built now if it is not built yet)."""
        return self._slot.get()

    @property
    def slot(self) -> CacheSlot:
        """Where the cache is built (functions given this handle share it)."""
        return self._slot

    def __getattr__(self, name: str) -> Any:
        return getattr(self._slot.get(), name)

    async def __aenter__(self) -> Cache:
        return await self._slot.get().__aenter__()

    async def __aexit__(self, *exc: object) -> None:
        await self._slot.get().__aexit__(*exc)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return f"<deferred cache: {self._slot!r}>"
