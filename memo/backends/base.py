"""The one interface every storage backend implements: bytes in, bytes out.

A backend never sees Python values: the cache encodes once and hands it bytes. Keys are
full keys (the cache's prefix included) made of safe ASCII only. TTLs are whole
milliseconds, always positive. Optional capabilities are separate protocols (see
``LocalReads``) rather than more abstract methods, so a new backend implements only the
core below and passes the shared contract suite.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

__all__ = ["Backend", "LocalReads"]


class Backend(abc.ABC):
    """Byte storage with per-entry TTLs."""

    #: Short name used in stats and logs ("memory", "redis", "tiered").
    name: str = "backend"

    @abc.abstractmethod
    async def get(self, key: str) -> bytes | None:
        """Return the stored bytes, or None when the key is missing or expired."""

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """Return one slot per key, in order; None for each miss."""
        return [await self.get(key) for key in keys]

    @abc.abstractmethod
    async def set(self, key: str, value: bytes, ttl_ms: int) -> None:
        """Store ``value`` under ``key`` for ``ttl_ms`` milliseconds, replacing any entry."""

    async def set_many(self, items: Mapping[str, bytes], ttl_ms: int) -> None:
        """Store every item with the same TTL."""
        for key, value in items.items():
            await self.set(key, value, ttl_ms)

    @abc.abstractmethod
    async def delete(self, key: str) -> bool:
        """Remove ``key``; True when an entry was there."""

    async def delete_many(self, keys: Sequence[str]) -> int:
        """Remove every key; return how many entries were there."""
        removed = 0
        for key in keys:
            removed += await self.delete(key)
        return removed

    @abc.abstractmethod
    async def delete_pattern(self, pattern: str) -> int:
        """Remove every key matching a Redis-style glob pattern; return how many."""

    @abc.abstractmethod
    async def scan_keys(self, pattern: str, limit: int) -> list[str]:
        """Up to ``limit`` live keys matching a Redis-style glob, in no particular order."""

    @abc.abstractmethod
    async def clear(self) -> None:
        """Remove every entry this backend holds."""

    @abc.abstractmethod
    async def ttl(self, key: str) -> int | None:
        """Remaining lifetime of ``key`` in milliseconds, or None when it is missing."""

    async def aclose(self) -> None:  # noqa: B027 - most backends hold nothing to close
        """Release connections and background tasks. Idempotent."""


@runtime_checkable
class LocalReads(Protocol):
    """A backend whose reads complete without I/O (the in-process memory tier).

    The decorator's hit path calls ``get_local`` synchronously to skip an await per hit.
    """

    def get_local(self, key: str) -> bytes | None:
        """Same result as ``await get(key)``, synchronously."""
        ...
