"""A memory tier in front of a remote backend, which also keeps caching through outages.

Reads try memory, then the remote; a remote hit fills memory for no longer than the
remote entry has left (and ``max_ttl_ms`` of the memory tier), so a memory entry never
outlives the entry it copies. Writes and deletes reach both tiers.

When the remote cannot be reached, the memory tier serves alone: reads fall back to it
and writes land in it (a write's error is still raised, so the cache counts and logs
it). The first remote success after an outage flushes the memory tier (of a cluster:
of the node that was out) before it is trusted again (``_outage.py``). With
``memory_reads=False`` the memory tier is an outage tier only.

With ``listen=True`` over a ``RedisBackend``, the memory tier hears of what changes in
Redis: from the server itself, which tracks the keys this tier read (``_tracking.py``;
then memory is filled only by those tracked reads), or through the invalidation channel
where the server refuses tracking (``invalidation.py``). It is neither read nor filled
while the listener cannot vouch for it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from memo._loops import running_loop
from memo.backends._fill_guard import Asked, FillGuard
from memo.backends._heard import AnnounceHook, HeardChanges, InFlight
from memo.backends._outage import OutageScopes, read_in_parts
from memo.backends._tracking import NotTracking
from memo.backends.base import Backend, InvalidationSource, Leases, ReadsWithTTL, TagSets
from memo.backends.memory import MemoryBackend
from memo.exceptions import BackendError, BackendTimeout, BackendUnavailable

if TYPE_CHECKING:
    from memo.backends._tracking import TrackingListener
    from memo.backends.invalidation import InvalidationListener

__all__ = ["TieredBackend"]

T = TypeVar("T")

_OUTAGE = (BackendUnavailable, BackendTimeout)


class TieredBackend(Backend):
    """``memory`` in front of ``remote``; a Backend itself, so it passes the same contract."""

    name = "tiered"
    #: A miss in the memory tier must still ask the remote.
    local_only = False

    def __init__(
        self,
        memory: MemoryBackend,
        remote: Backend,
        *,
        memory_reads: bool = True,
        listen: bool = False,
        heartbeat: float = 1.0,
    ) -> None:
        self.memory = memory
        self.remote = remote
        # What the remote can do, asked once: a protocol check costs microseconds.
        self._remote_leases = remote if isinstance(remote, Leases) else None
        self._remote_with_ttl = remote if isinstance(remote, ReadsWithTTL) else None
        self.memory_reads = memory_reads
        self.remote_down = False  # some part of the remote is out (see _outage)
        self._outage = OutageScopes(remote)
        self.listener: InvalidationListener | TrackingListener | None = None
        self._guard = FillGuard()  # a reply that raced a change of its key must not fill memory
        self.heard = HeardChanges(memory, self._guard)
        # A remote with an invalidation channel (RedisBackend) offers a listener.
        if listen and memory_reads and isinstance(remote, InvalidationSource):
            self.listener = remote.invalidation_listener(
                on_keys=self.heard.keys,
                on_pattern=self.heard.pattern,
                on_flush=self.heard.flush,
                on_trust=self._trust,
                heartbeat=heartbeat,
                on_key=self.heard.key,
            )
        # False while the listener may have missed a change: memory is neither read nor
        # filled (it is flushed before it is trusted again).
        self._channel_trusted = self.listener is None
        self._listening_in: asyncio.AbstractEventLoop | None = None  # the listener's loop
        self._refresh()

    def announce_to(self, hook: AnnounceHook, flights: InFlight) -> None:
        """Tell ``hook`` of every change heard while ``flights`` has computations under
        way, so that the cache can keep them from storing what was just replaced."""
        self.heard.hook, self.heard.flights = hook, flights

    # -- outage and channel bookkeeping

    def _refresh(self) -> None:
        # One attribute for the synchronous hit path (get_local) to read.
        self._memory_first = self.memory_reads and self._channel_trusted and not self.remote_down
        # Out as a whole: memory serves alone; a part out: memory answers for that part.
        self._serve_memory = self._memory_first or "" in self._outage.down

    def _failed(self, exc: BackendError) -> None:
        if isinstance(exc, _OUTAGE):
            self.mark_remote_down(exc)

    def mark_remote_down(self, exc: BackendError | None = None) -> None:
        """The remote (``exc.scope`` of it) did not answer: serve from memory until it does."""
        self._outage.failed(exc)
        if not self.remote_down:
            self.remote_down = True
            self._refresh()

    def _answered(self, key: str | None = None) -> None:
        if self.remote_down:
            # Back from an outage: what memory holds may be older than what other
            # processes wrote to the remote meanwhile (_outage drops it).
            self._outage.back(key, self.memory)
            self.remote_down = bool(self._outage.down)
            self._refresh()

    def _fills_memory(self) -> bool:
        return self.memory_reads and self._channel_trusted

    def _trust(self, trusted: bool) -> None:
        self._guard.everything()
        self._channel_trusted = trusted
        if trusted:  # told from the listener's task: its loop is the one that hears
            self._listening_in = running_loop()
        self._refresh()

    def _listen(self) -> None:
        if self.listener is not None:
            self.listener.ensure_running()

    async def start_listening(self, timeout: float) -> bool:
        """Subscribe; True once trusted within ``timeout`` s (or without a listener)."""
        if self.listener is None:
            return True
        return await self.listener.wait_trusted(timeout)

    # -- the memory tier, for the cache in front

    def discard_local(self, key: str) -> None:
        self.memory.discard_local(key)

    def memory_usage(self) -> dict[str, Any]:
        return self.memory.memory_usage()

    # -- reads

    def get_local(self, key: str) -> bytes | None:
        if self._serve_memory:
            listening = self._listening_in
            # A hit from another loop: the listener's own loop must still run (one
            # stopped, not closed, hears nothing: a loop run call by call).
            if (
                listening is not None
                and listening is not running_loop()
                and not listening.is_running()
                and self._listener_stopped()
            ):
                return None
            return self.memory.get_local(key)
        return None

    def _listener_stopped(self) -> bool:
        """The listener's loop stopped: distrust memory (and listen again from the
        running loop); whether memory is no longer to be served."""
        self._listening_in = None
        self._trust(False)
        if running_loop() is not None and self.listener is not None:
            self.listener.ensure_running()
        return not self._serve_memory

    async def get(self, key: str) -> bytes | None:
        self._listen()
        if self._memory_first:
            data = self.memory.get_local(key)
            if data is not None:
                return data
        asked = self._guard.asked()
        try:
            return await self._read_through(key, asked)
        finally:
            self._guard.answered(asked)

    async def _read_through(self, key: str, asked: Asked) -> bytes | None:
        # In an outage the remote is still asked first (its circuit breaker makes that a
        # fast failure while open): that is how its return is noticed.
        listener = self.listener
        try:
            if listener is not None and listener.tracking:
                # Read where the server tracks it, so this copy hears of its changes.
                try:
                    data, ttl_ms = await listener.read_with_ttl(key)
                except NotTracking:  # lost meanwhile: read, but keep nothing
                    data, ttl_ms = (await self.remote.get(key)), None
            else:
                data, ttl_ms = await self._remote_get_with_ttl(key)
        except BackendError as exc:
            self._failed(exc)
            kept = self.memory.get_local(key) if isinstance(exc, _OUTAGE) else None
            if kept is not None:
                return kept
            raise
        self._answered(key)
        if (
            data is not None
            and ttl_ms is not None
            and self._fills_memory()
            and self._guard.may_fill(key, asked)
        ):
            self.memory.set_local(key, data, ttl_ms)
        return data

    async def _remote_get_with_ttl(self, key: str) -> tuple[bytes | None, int | None]:
        if not self.memory_reads:
            return await self.remote.get(key), None  # nothing to fill: no TTL needed
        remote = self._remote_with_ttl
        if remote is not None:
            return await remote.get_with_ttl(key)
        data = await self.remote.get(key)
        return data, (None if data is None else await self.remote.ttl(key))

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        self._listen()
        found: list[bytes | None] = [None] * len(keys)
        wanted: list[int] = []
        for i, key in enumerate(keys):
            data = self.memory.get_local(key) if self._serve_memory else None
            if data is None:
                wanted.append(i)
            else:
                found[i] = data
        if not wanted:
            return found
        asked = [keys[i] for i in wanted]
        if self.remote.fails_in_parts:  # a cluster: each key read where it lives
            kept = self.memory.get_local
            remote = await read_in_parts(asked, self.remote.get, kept, self._failed, self._answered)
        else:
            try:
                remote = await self.remote.get_many(asked)
            except BackendError as exc:
                self._failed(exc)
                raise
            self._answered()
        # No TTLs come back with a multi-get, so these do not fill the memory tier.
        for i, data in zip(wanted, remote, strict=True):
            found[i] = data
        return found

    async def ttl(self, key: str) -> int | None:
        try:
            remaining = await self.remote.ttl(key)
        except BackendError as exc:
            self._failed(exc)
            raise
        self._answered()
        return remaining

    # -- writes: the remote first, then memory; in an outage, memory alone

    def _write_failed(self, exc: BackendError, items: Mapping[str, bytes], ttl_ms: int) -> None:
        self._failed(exc)
        for key, value in items.items():
            if isinstance(exc, _OUTAGE):
                self.memory.set_local(key, value, ttl_ms)  # serves while the remote is away
            else:
                self.memory.discard_local(key)  # the remote's state is unknown: don't guess

    def _end_write(self, keys: Iterable[str], begun: tuple[int, int]) -> set[str]:
        """Close a write; the keys it may copy into memory. Where reads are tracked,
        none: the server tracks what a connection read, not what it wrote, and would
        never void such a copy."""
        tracked = self.listener is not None and self.listener.reads_tracked
        return self._guard.end_write(keys, begun, self._fills_memory() and not tracked)

    async def set(self, key: str, value: bytes, ttl_ms: int) -> None:
        await self._store(
            {key: value}, ttl_ms, lambda: self._sent(self.remote.set(key, value, ttl_ms))
        )

    async def set_many(self, items: Mapping[str, bytes], ttl_ms: int) -> None:
        await self._store(items, ttl_ms, lambda: self._sent(self.remote.set_many(items, ttl_ms)))

    @staticmethod
    async def _sent(write: Awaitable[None]) -> bool:
        await write
        return True

    async def _store(
        self, items: Mapping[str, bytes], ttl_ms: int, send: Callable[[], Awaitable[bool]]
    ) -> bool:
        """Write ``items`` to the remote with ``send`` (False: the remote refused them,
        a leased store overtaken), then to memory if nothing raced the write."""
        if ttl_ms <= 0:
            raise ValueError(f"ttl_ms must be positive, got {ttl_ms}")
        self._listen()
        begun = self._guard.begin_write(items)
        try:
            try:
                stored = await send()
            finally:
                fillable = self._end_write(items, begun)
        except BackendError as exc:
            self._write_failed(exc, items, ttl_ms)
            raise
        except BaseException:
            for key in items:
                self.memory.discard_local(key)  # cancelled: Redis may or may not have it
            raise
        self._answered(next(iter(items)) if len(items) == 1 else None)
        for key, value in items.items():
            if stored and key in fillable:
                self.memory.set_local(key, value, ttl_ms)
            else:
                self.memory.discard_local(key)  # an older copy must not outlive this write
        return stored

    def keep_local_copy(self, key: str, value: bytes, ttl_ms: int) -> None:
        if self._outage.covers(key):  # serving alone: the copy is all callers can have
            self.memory.set_local(key, value, ttl_ms)

    # -- leases and tag sets: the remote's, with this tier's bookkeeping

    @property
    def shares_leases(self) -> bool:
        leases = self._remote_leases
        return leases is not None and leases.shares_leases

    def _leases(self) -> Leases:
        leases = self._remote_leases
        if leases is None:
            raise BackendError(f"{self.remote!r} keeps no leases")
        return leases

    async def _remote_call(self, call: Awaitable[T], key: str | None = None) -> T:
        try:
            result = await call
        except BackendError as exc:
            self._failed(exc)
            raise
        self._answered(key)
        return result

    async def acquire_lease(
        self,
        key: str,
        token: str,
        lease_ms: int,
        tag_sets: Sequence[str],
        expect: tuple[int, bytes] | None,
    ) -> int:
        return await self._remote_call(
            self._leases().acquire_lease(key, token, lease_ms, tag_sets, expect), key
        )

    async def renew_lease(
        self, key: str, token: str, lease_ms: int, tag_sets: Sequence[str]
    ) -> bool:
        leases = self._leases()
        return await self._remote_call(leases.renew_lease(key, token, lease_ms, tag_sets), key)

    async def release_lease(self, key: str, token: str) -> None:
        await self._remote_call(self._leases().release_lease(key, token), key)

    async def store_leased(
        self,
        key: str,
        value: bytes,
        ttl_ms: int,
        token: str,
        expect: tuple[int, bytes],
        tag_sets: Sequence[str],
    ) -> bool:
        leases = self._leases()
        return await self._store(
            {key: value},
            ttl_ms,
            lambda: leases.store_leased(key, value, ttl_ms, token, expect, tag_sets),
        )

    async def invalidate_tag(self, tag_set: str) -> tuple[int, list[str]]:
        """The remote's tag invalidation; this tier drops the members too, and no read
        racing it fills memory with one of them."""
        leases = self._leases()
        if not isinstance(leases, TagSets):
            raise BackendError(f"{leases!r} keeps no tag sets")
        self._listen()
        self._guard.everything()
        try:
            removed, members = await self._remote_call(leases.invalidate_tag(tag_set))
        except BackendError:
            # Which copies carry the tag is known only to the remote: without it, none
            # may be served any more (the remote's own copies wait for its return).
            self.memory.clear_local()
            raise
        finally:
            self._guard.everything()
        self._guard.mark(members)
        for key in members:
            self.memory.discard_local(key)
        return removed, members

    async def delete(self, key: str) -> bool:
        return bool(await self._delete([key], many=False))

    async def delete_many(self, keys: Sequence[str]) -> int:
        return await self._delete(keys, many=True)

    async def _delete(self, keys: Sequence[str], *, many: bool) -> int:
        self._listen()
        begun = self._guard.begin_write(keys)
        for key in keys:
            self.memory.discard_local(key)
        try:
            if many:
                removed = await self.remote.delete_many(keys)
            else:
                removed = int(await self.remote.delete(keys[0]))
        except BackendError as exc:
            self._failed(exc)
            raise
        finally:
            self._end_write(keys, begun)
            for key in keys:
                self.memory.discard_local(key)  # a read that raced the delete may have filled it
        self._answered()
        return removed

    async def delete_pattern(self, pattern: str) -> int:
        return await self._remove_matching(
            lambda: self.memory.discard_pattern(pattern), self.remote.delete_pattern(pattern)
        )

    async def _remove_matching(self, drop_local: Callable[[], object], remote: Awaitable[T]) -> T:
        """Remove many keys from both tiers. No read under way, nor one racing the remote
        removal, may fill memory with what it removes: the generation moves before and
        after, and memory is emptied of them again once the remote is done."""
        self._listen()
        self._guard.everything()
        drop_local()
        try:
            result = await remote
        except BackendError as exc:
            self._failed(exc)
            raise
        finally:
            self._guard.everything()
            drop_local()
        self._answered()
        return result

    async def scan_keys(self, pattern: str, limit: int) -> list[str]:
        """The remote's keys (it holds every entry); during an outage, the memory tier's."""
        try:
            found = await self.remote.scan_keys(pattern, limit)
        except BackendError as exc:
            self._failed(exc)
            return await self.memory.scan_keys(pattern, limit)
        self._answered()
        return found

    async def clear(self) -> None:
        await self._remove_matching(self.memory.clear_local, self.remote.clear())

    async def aclose(self) -> None:
        if self.listener is not None:
            await self.listener.aclose()
        await self.memory.aclose()
        await self.remote.aclose()

    def __repr__(self) -> str:
        return f"TieredBackend(memory={self.memory!r}, remote={self.remote!r})"
