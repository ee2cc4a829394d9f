"""Tags: an index entry per tag listing the relative keys stored with it.

The index is a value like any other (encoded by the cache's codec, stored in its
backend), updated read-modify-write under one lock per cache and event loop. That holds within
one loop; across loops and processes a backend with native sets has to make it atomic.
"""

from __future__ import annotations

import asyncio
import re
import weakref
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import xxhash

from memo._binder import make_binder
from memo._codec import Entry
from memo.backends.base import Backend
from memo.exceptions import BackendError, ConfigError

__all__ = [
    "BOOKKEEPING_SEGMENTS",
    "TAG_INDEX_SEGMENT",
    "TAG_SET_SEGMENT",
    "TagIndex",
    "TagTemplates",
    "check_tag_names",
    "tag_set_key",
]

_SAFE_TAG_RE = re.compile(r"[A-Za-z0-9_.:\-]{1,128}")
_INDEX_LIMIT = 1024  # members kept per tag before expired ones are pruned

#: Index entries live under ``{prefix}__tags__:``.
TAG_INDEX_SEGMENT = "__tags__:"
#: Tag sets on a backend that keeps them itself (Redis).
TAG_SET_SEGMENT = "__tagset__:"
#: The keys memo keeps for its own bookkeeping under a cache's prefix start with one of
#: these (tag indexes, tag sets); key listings hide them, and user keys may not use them.
BOOKKEEPING_SEGMENTS = (TAG_INDEX_SEGMENT, TAG_SET_SEGMENT)


def _tag_name(tag: str) -> str:
    """``tag`` as a key segment: itself when safe, else a digest of it."""
    if not isinstance(tag, str) or not tag:
        raise ConfigError(f"tag={tag!r}: tags are non-empty strings")
    if not _SAFE_TAG_RE.fullmatch(tag):
        return "h-" + xxhash.xxh3_128_hexdigest(tag.encode("utf-8", "surrogatepass"))
    return tag


def tag_set_key(prefix: str, tag: str) -> str:
    """The key of ``tag``'s member set on a backend that keeps tag sets itself (Redis)."""
    return f"{prefix}{TAG_SET_SEGMENT}{_tag_name(tag)}"


class TagIndex:
    """The tag index of one cache.

    Args:
        backend: the cache's byte backend.
        prefix: the cache's key prefix (``memo:{namespace}:``).
        encode: ``(value, ttl_ms) -> bytes``, the cache's encoder.
        decode: ``(full_key, data) -> Entry | None``, the cache's decoder (a value that
            does not decode is None).
        failed: told of each backend error (operation name, error); never raises here.
    """

    def __init__(
        self,
        backend: Backend,
        prefix: str,
        *,
        encode: Callable[[Any, int], bytes],
        decode: Callable[[str, bytes], Awaitable[Entry | None]],
        failed: Callable[[str, BackendError], None],
    ) -> None:
        self._backend = backend
        self._prefix = prefix
        self._encode = encode
        self._decode = decode
        self._failed = failed
        # One lock per event loop: an asyncio.Lock belongs to the loop that first waits
        # on it, and a cache is used from several loops (threads, asyncio.run per job).
        self._locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )

    def index_key(self, tag: str) -> str:
        """The full key of ``tag``'s index entry."""
        return f"{self._prefix}{TAG_INDEX_SEGMENT}{_tag_name(tag)}"

    def _locked(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        lock = self._locks.get(loop)
        if lock is None:
            lock = self._locks[loop] = asyncio.Lock()
        return lock

    async def members(self, tag: str) -> list[str]:
        """The relative keys recorded under ``tag`` (some may have expired since)."""
        return await self._members(self.index_key(tag))

    async def _members(self, index_key: str) -> list[str]:
        try:
            data = await self._backend.get(index_key)
        except BackendError as exc:
            self._failed("get", exc)
            return []
        if data is None:
            return []
        entry = await self._decode(index_key, data)
        return list(entry.value) if entry is not None else []

    async def add(self, tags: Sequence[str], full_key: str, ttl_ms: int) -> None:
        """Record that ``full_key`` was stored with each of ``tags`` for ``ttl_ms``."""
        relative = full_key[len(self._prefix) :]
        backend = self._backend
        async with self._locked():
            for tag in tags:
                index_key = self.index_key(tag)
                members = await self._members(index_key)
                if relative not in members:
                    members.append(relative)
                try:
                    if len(members) > _INDEX_LIMIT:
                        members = [
                            m for m in members if await backend.ttl(self._prefix + m) is not None
                        ]
                    remaining = await backend.ttl(index_key) or 0
                    index_ttl = max(ttl_ms, remaining)
                    await backend.set(index_key, self._encode(members, index_ttl), index_ttl)
                except BackendError as exc:
                    self._failed("set", exc)

    async def remove(self, tags: Sequence[str], forget: Callable[[str], None]) -> int:
        """Delete every entry stored with one of ``tags`` and the tags' index entries;
        ``forget(full_key)`` is called for each entry first. How many entries were there."""
        removed = 0
        async with self._locked():
            for tag in tags:
                index_key = self.index_key(tag)
                fulls = [self._prefix + m for m in await self._members(index_key)]
                for full in fulls:
                    forget(full)
                try:
                    removed += await self._backend.delete_many(fulls)
                    await self._backend.delete(index_key)
                except BackendError as exc:
                    self._failed("invalidate_tags", exc)
        return removed


def check_tag_names(tags: Iterable[str]) -> list[str]:
    """``tags`` as a list of non-empty strs (one str is one tag).

    Raises:
        ConfigError: naming the bad tag.
    """
    found = [tags] if isinstance(tags, str) else list(tags)
    for tag in found:
        if not isinstance(tag, str) or not tag:
            raise ConfigError(f"tags={found!r}: each tag is a non-empty str, e.g. 'user:42'")
    return found


class TagTemplates:
    """A decorated function's tag templates, rendered per call. Templates see every
    argument, self included (``"tenant:{self.tenant_id}"``)."""

    def __init__(self, func: Callable[..., Any], templates: tuple[str, ...]) -> None:
        self.templates = templates
        self._bind = make_binder(func)
        self._name = getattr(func, "__qualname__", repr(func))

    def render(self, cache: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[str]:
        """The tags of one call; none (logged once) when a template does not render,
        since a tag never fails the call it labels."""
        try:
            bound = dict(self._bind(args, kwargs))
            tags = [t.format_map(bound) for t in self.templates]
            if not all(tags):
                raise ValueError(f"a template of {self.templates!r} rendered as an empty tag")
            return tags
        except Exception as exc:
            cache.log_once(
                f"tags:{self._name}", "memo: tags of %s were not recorded: %r", self._name, exc
            )
            return []
