"""The in-process memory tier: bytes with exact TTLs, bounded by entries and bytes."""

from __future__ import annotations

import math
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from memo._clock import Clock
from memo._fork import in_forked_child
from memo._glob import compile_glob
from memo._options import MemoryOptions
from memo.backends._eviction import MAX_FREQUENCY, AdaptiveFifo, Entry
from memo.backends.base import Backend

T = TypeVar("T")

__all__ = ["MemoryBackend"]

#: Bytes counted per entry besides its key and value (the dict slot, the entry and its
#: place in a queue): an estimate, so that many tiny values still respect ``max_bytes``.
ENTRY_OVERHEAD = 64

_LIVE_TIERS: weakref.WeakSet[MemoryBackend] = weakref.WeakSet()


def _new_locks_in_child() -> None:
    # A lock held by another thread at fork() would stay held forever in the child.
    for tier in list(_LIVE_TIERS):
        tier._lock = threading.Lock()


in_forked_child(_new_locks_in_child)


class MemoryBackend(Backend):
    """Bytes in this process's memory, bounded by entries and bytes.

    When full, it drops what ``AdaptiveFifo`` chooses (``_eviction.py``: one-off keys
    first, then whatever has gone longest without a hit). Every operation is O(1)
    (amortized) except ``delete_pattern`` (a scan). An entry is a miss from the instant
    ``clock()`` reaches its deadline: expired entries are removed when touched, and
    otherwise age out through eviction. ``max_ttl_ms`` caps every entry's lifetime (a
    tier in front of Redis uses it so that it never serves a value for long without
    Redis's word on it).

    Safe to share between threads (event loops in several threads): changes to the
    entries and the byte count happen under a lock, while a hit takes none (a lock
    would cost a tenth of a hit), and tolerates an entry vanishing under it.
    """

    name = "memory"

    #: Reads of this backend never need I/O: a local miss is a miss.
    local_only = True

    def __init__(
        self, options: MemoryOptions | None = None, *, clock: Clock = time.monotonic
    ) -> None:
        self.options = options = options if options is not None else MemoryOptions()
        self.max_entries = options.memory_cache_size
        self.max_bytes = options.memory_max_bytes
        self.max_ttl_ms = options.max_ttl_ms
        self._clock = clock
        # key -> its entry (value, deadline in clock seconds, hits); the policy orders them.
        self._data: dict[str, Entry] = {}
        self._policy = AdaptiveFifo(self.max_entries)
        self._bytes = 0
        self._lock = threading.Lock()
        _LIVE_TIERS.add(self)

    # ------------------------------------------------------------------ reads

    def get_local(self, key: str) -> bytes | None:
        entry = self._data.get(key)
        if entry is None:
            return None
        if self._clock() >= entry:  # an entry is its deadline (see Entry)
            self._expire(entry)
            return None
        if entry.freq < MAX_FREQUENCY:  # racing threads may lose a count: it is a hint
            entry.freq += 1
        return entry.value

    def entry_local(self, key: str) -> Entry | None:
        """The live entry under ``key`` (expired or not), for a hit path that keeps it:
        it holds while ``entry.queue != GONE`` and ``clock() < entry`` (its deadline)."""
        return self._data.get(key)

    @property
    def clock(self) -> Clock:
        return self._clock

    async def get(self, key: str) -> bytes | None:
        return self.get_local(key)

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        return [self.get_local(k) for k in keys]

    async def ttl(self, key: str) -> int | None:
        entry = self._data.get(key)
        if entry is None:
            return None
        remaining = entry.deadline - self._clock()
        if remaining <= 0:
            self._expire(entry)
            return None
        return max(1, math.ceil(remaining * 1000 - 1e-6))

    # ------------------------------------------------------------------ writes

    def set_local(self, key: str, value: bytes, ttl_ms: int) -> None:
        if ttl_ms <= 0:
            raise ValueError(f"ttl_ms must be positive, got {ttl_ms}")
        if self.max_ttl_ms is not None and ttl_ms > self.max_ttl_ms:
            ttl_ms = self.max_ttl_ms
        size = len(key) + len(value) + ENTRY_OVERHEAD
        deadline = self._clock() + ttl_ms / 1000.0
        lock = self._lock
        # acquire/release spelled out: half what a with block costs, on every miss
        lock.acquire()
        try:
            self._remove(key)  # never leave an older value readable, even if this won't fit
            if size > self.max_bytes:
                return
            data, policy = self._data, self._policy
            while len(data) >= self.max_entries or self._bytes + size > self.max_bytes:
                victim = policy.evict()
                if victim is None:
                    break
                del data[victim.key]
                self._bytes -= len(victim.key) + len(victim.value) + ENTRY_OVERHEAD
            entry = data[key] = Entry(key, value, deadline)
            policy.add(entry)
            self._bytes += size
        finally:
            lock.release()

    async def set(self, key: str, value: bytes, ttl_ms: int) -> None:
        self.set_local(key, value, ttl_ms)

    def keep_local_copy(self, key: str, value: bytes, ttl_ms: int) -> None:
        self.set_local(key, value, ttl_ms)  # memory is all there is

    async def set_many(self, items: Mapping[str, bytes], ttl_ms: int) -> None:
        for key, value in items.items():
            self.set_local(key, value, ttl_ms)

    def _remove(self, key: str) -> bool:
        """Remove ``key``; the caller holds the lock."""
        entry = self._data.pop(key, None)
        if entry is None:
            return False
        self._bytes -= len(key) + len(entry.value) + ENTRY_OVERHEAD
        self._policy.removed(entry)
        return True

    def _expire(self, entry: Entry) -> None:
        """Remove ``entry``, found past its deadline, unless it was replaced meanwhile."""
        with self._lock:
            if self._data.get(entry.key) is entry:
                self._remove(entry.key)

    def discard_local(self, key: str) -> None:
        """Remove ``key`` if present (sync, for tiers composing this one; called for
        every invalidation a tier hears, so _remove is inlined)."""
        data = self._data
        if key not in data:  # nothing to remove: no lock to take
            return
        lock = self._lock
        lock.acquire()  # as in set_local
        try:
            entry = data.pop(key, None)
            if entry is not None:
                self._bytes -= len(key) + len(entry.value) + ENTRY_OVERHEAD
                self._policy.removed(entry)
        finally:
            lock.release()

    def clear_local(self) -> None:
        """Remove every entry (sync)."""
        with self._lock:
            self._data.clear()
            self._policy.clear()
            self._bytes = 0

    async def delete(self, key: str) -> bool:
        now = self._clock()
        with self._lock:
            entry = self._data.get(key)
            self._remove(key)
        return entry is not None and now < entry.deadline

    async def delete_many(self, keys: Sequence[str]) -> int:
        removed = 0
        for key in keys:
            removed += await self.delete(key)
        return removed

    async def delete_pattern(self, pattern: str) -> int:
        return self.discard_pattern(pattern)

    @staticmethod
    def _snapshot(view: Iterable[T]) -> list[T]:
        """A copy of the entries' keys or items, taken under the lock by the caller.

        A copy is one C-level pass, but the garbage collector can run Python code (and
        so switch threads) during it, and a hit on an expired entry elsewhere may then
        remove it: the dict reports "changed size during iteration". Copy again.
        """
        while True:
            try:
                return list(view)
            except RuntimeError:
                continue

    def discard_where(self, drop: Callable[[str], bool]) -> None:
        """Remove the keys ``drop`` picks (sync)."""
        with self._lock:
            for key in [k for k in self._snapshot(self._data) if drop(k)]:
                self._remove(key)

    def discard_pattern(self, pattern: str) -> int:
        """Remove the keys matching a glob (sync); how many of them were still fresh."""
        match = compile_glob(pattern).fullmatch
        now = self._clock()
        removed = 0
        with self._lock:
            for key in [k for k in self._snapshot(self._data) if match(k)]:
                entry = self._data.get(key)
                removed += entry is not None and entry.deadline > now
                self._remove(key)
        return removed

    async def scan_keys(self, pattern: str, limit: int) -> list[str]:
        match = compile_glob(pattern).fullmatch
        now = self._clock()
        found: list[str] = []
        with self._lock:
            entries = self._snapshot(self._data.items())
        for key, entry in entries:
            if len(found) >= limit:
                break
            if entry.deadline > now and match(key):
                found.append(key)
        return found

    async def clear(self) -> None:
        self.clear_local()

    # ------------------------------------------------------------------ introspection

    def __len__(self) -> int:
        """Entries held, counting expired ones not yet removed."""
        return len(self._data)

    @property
    def bytes_used(self) -> int:
        return self._bytes

    def memory_usage(self) -> dict[str, Any]:
        return {
            "entries": len(self._data),
            "bytes": self._bytes,
            "total_mb": self._bytes / (1024 * 1024),
            "utilization": self.utilization(),
            "max_entries": self.max_entries,
        }

    def utilization(self) -> float:
        """How full the tier is, 0-1: the larger of the entry and byte fractions."""
        return max(len(self._data) / self.max_entries, self._bytes / self.max_bytes)

    def __repr__(self) -> str:
        return (
            f"MemoryBackend(entries={len(self._data)}/{self.max_entries}, "
            f"bytes={self._bytes}/{self.max_bytes})"
        )
