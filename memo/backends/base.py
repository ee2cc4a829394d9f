"""The one interface every storage backend implements: bytes in, bytes out.

A backend never sees Python values: the cache encodes once and hands it bytes. Keys are
full keys (the cache's prefix included) made of safe ASCII only. TTLs are whole
milliseconds, always positive. Optional capabilities are separate protocols (see
``LocalReads``) rather than more abstract methods, so a new backend implements only the
core below and passes the shared contract suite. Caches ask for a capability with
``isinstance(backend, Capability)``, never for a concrete class.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from memo._clock import Clock
    from memo.backends._eviction import Entry
    from memo.backends._tracking import TrackingListener
    from memo.backends.invalidation import InvalidationListener
    from memo.stats import LatencyWindow

#: A lease on an entry lives under the entry's key plus this suffix (see ``Leases``).
LEASE_SUFFIX = "#lease"

__all__ = [
    "LEASE_SUFFIX",
    "AnnouncedWrites",
    "Backend",
    "HashStore",
    "InvalidationSource",
    "LocalEntries",
    "LocalReads",
    "Leases",
    "LocalTier",
    "ReadsWithTTL",
    "RemoteServer",
    "SharedHashes",
    "TagListing",
    "TagSets",
]


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

    def outage_scope(self, key: str) -> str:
        """The part of this backend that answers for ``key`` (see ``_outage.py``):
        ``""``, all of it, unless it fails in parts (a cluster's nodes)."""
        return ""

    def serves(self, scope: str) -> bool:
        """Whether ``scope`` is still a part of this backend."""
        return True

    #: Parts of it can be out while others answer (a cluster): read keys one by one.
    fails_in_parts = False

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
    """A backend some of whose reads complete without I/O (an in-process memory tier).

    The decorator's hit path calls ``get_local`` synchronously to skip an await per hit.
    ``local_only`` is True when ``get_local`` sees everything the backend holds (a miss
    there is a miss), False when a remote tier must still be asked.
    """

    local_only: bool

    def get_local(self, key: str) -> bytes | None:
        """The bytes under ``key`` if a local tier holds them, synchronously."""
        ...


@runtime_checkable
class LocalEntries(Protocol):
    """A memory tier whose entries a hit path may hold on to (``MemoryBackend``).

    ``entry_local(key)`` is the entry under ``key`` or None. A held entry still answers
    for its key while ``entry.queue != GONE`` (``memo/backends/_eviction.py``: any
    removal, replacement, eviction or flush marks it) and ``clock() < entry`` (an entry
    is a float, its deadline); a hit bumps ``entry.freq`` up to ``MAX_FREQUENCY``.
    """

    @property
    def clock(self) -> Clock: ...

    def entry_local(self, key: str) -> Entry | None: ...


@runtime_checkable
class LocalTier(Protocol):
    """A backend with an in-process memory tier (itself one, or one in front of Redis)."""

    def discard_local(self, key: str) -> None:
        """Drop ``key`` from the memory tier now, synchronously (not from a remote tier)."""
        ...

    def memory_usage(self) -> dict[str, Any]:
        """``entries``, ``bytes``, ``total_mb``, ``utilization`` (0-1) and ``max_entries``."""
        ...

    def keep_local_copy(self, key: str, value: bytes, ttl_ms: int) -> None:
        """Keep ``value`` in memory only, and only while the memory tier serves alone (a
        remote in an outage): a value that must not reach the remote."""
        ...


@runtime_checkable
class ReadsWithTTL(Protocol):
    """A backend that returns a value and its remaining lifetime in one round trip."""

    async def get_with_ttl(self, key: str) -> tuple[bytes | None, int | None]:
        """The stored bytes (or None) and the remaining milliseconds (or None)."""
        ...


@runtime_checkable
class AnnouncedWrites(Protocol):
    """A backend that hears other processes' writes (tracking, or the channel)."""

    def announce_to(
        self, hook: Callable[[list[str] | None, str | None], None], flights: Any
    ) -> None:
        """Call ``hook(keys, pattern)`` (a list of keys, or a glob) for each change heard
        while ``flights.in_flight`` is nonzero."""


@runtime_checkable
class InvalidationSource(Protocol):
    """A remote backend whose writes are announced on a channel a memory tier can hear
    (Redis pub/sub); a tier in front of it listens there for other processes' writes."""

    def invalidation_listener(
        self,
        *,
        on_keys: Callable[[list[str]], None],
        on_pattern: Callable[[str], None],
        on_flush: Callable[[], None],
        on_trust: Callable[[bool], None],
        heartbeat: float = 1.0,
        on_key: Callable[[str], None] | None = None,
    ) -> InvalidationListener | TrackingListener | None:
        """A listener calling these back (``on_key`` for one key alone, where the
        listener can), or None when this backend keeps no tier coherent."""
        ...


@runtime_checkable
class RemoteServer(Protocol):
    """A backend that talks to a server: what operators and monitors ask of it."""

    #: The server's URL with any secret masked, for messages.
    masked_url: str
    #: Recent command latencies.
    latency: LatencyWindow

    async def check(self) -> None:
        """Raise the ``BackendError`` that says why when the server cannot be used."""
        ...

    async def server_info(self) -> dict[str, Any]:
        """The server's own figures (Redis: ``INFO``)."""
        ...


class HashStore(Protocol):
    """Hashes on a server every process shares: counters, and a record per process."""

    async def add_counts(self, key: str, counts: Mapping[str, int]) -> None: ...

    async def read_counts(self, key: str) -> dict[str, int]: ...

    async def put_fields(self, key: str, fields: Mapping[str, bytes]) -> None: ...

    async def read_fields(self, key: str) -> dict[str, bytes]: ...

    async def drop_fields(self, key: str, fields: Sequence[str]) -> None: ...

    async def server_time(self) -> float: ...


@runtime_checkable
class SharedHashes(Protocol):
    """A backend whose server every process shares, keeping figures in hashes there."""

    hashes: HashStore


@runtime_checkable
class Leases(Protocol):
    """A backend shared by processes that hands out leases on cold keys (memcache's design).

    A process that misses and is about to compute takes the key's lease: a random token
    stored under ``key + LEASE_SUFFIX`` with an expiry, renewed while it computes, and
    entered in the sets of the tags the computation stores under. A delete of the key,
    a pattern delete reaching it and an invalidation of one of those tags void the
    lease; ``store_leased`` stores only while the lease is still the caller's and the
    entry is still the version the computation replaces, so a result computed from data
    invalidated or overwritten meanwhile is never stored, in any process.

    ``shares_leases`` says whether leases work right now (a tier in front of a backend
    without them, or a server refusing scripts, says False).
    """

    shares_leases: bool

    async def acquire_lease(
        self,
        key: str,
        token: str,
        lease_ms: int,
        tag_sets: Sequence[str],
        expect: tuple[int, bytes] | None,
    ) -> int:
        """Take the lease of ``key``: 1 when taken, 0 when someone else holds it, 2 when
        the entry is no longer the version the caller read (``expect``, as for
        ``store_leased``): a value was stored meanwhile, to be read, not computed.
        ``expect=None`` takes it whoever holds it (an explicit refresh, which wins)."""
        ...

    async def renew_lease(
        self, key: str, token: str, lease_ms: int, tag_sets: Sequence[str]
    ) -> bool:
        """Extend the lease while it is still ``token``'s; False when it was voided."""
        ...

    async def release_lease(self, key: str, token: str) -> None:
        """Give the lease back (only ``token``'s own)."""
        ...

    async def store_leased(
        self,
        key: str,
        value: bytes,
        ttl_ms: int,
        token: str,
        expect: tuple[int, bytes],
        tag_sets: Sequence[str],
    ) -> bool:
        """Store ``value`` while the lease is ``token``'s and the entry is still the
        version the computation replaces (``expect``: the bytes at an offset of the
        stored value, or ``(0, b"")`` for an absent entry); record membership in each
        tag set. True when stored. ``expect`` at offset -1 stores whatever is there (an
        explicit refresh, under a lease taken with ``expect=None``)."""
        ...


@runtime_checkable
class TagListing(Protocol):
    """A server that can say which entries a tag's set names (Redis)."""

    async def tag_members(self, tag_set: str) -> list[str]:
        """The entries the set names (full keys; some may have expired since)."""
        ...


@runtime_checkable
class TagSets(Protocol):
    """A backend that keeps tag membership itself (recorded by ``store_leased``)."""

    async def invalidate_tag(self, tag_set: str) -> tuple[int, list[str]]:
        """Delete every entry of the tag and void the leases of computations under way
        for it, in one step; how many entries were there, and the tag's entries (some
        may have expired already)."""
        ...
