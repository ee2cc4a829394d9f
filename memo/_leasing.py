"""A cache's leases and tag sets, on a backend that shares them between processes.

A decorated call that misses takes the key's lease before computing (see
``memo.backends.base.Leases``): the lease makes other processes that hold ``lock=True``
wait for this one's value instead of computing, and it is what lets the store refuse a
result that an invalidation, a write or a tag invalidation overtook, in any process.
The lease lives ``LEASE_MS`` and is renewed while its holder computes, so a holder that
crashed lets a waiter take over within a few seconds.

On a backend without shared leases (the memory tier alone) nothing here is used: the
flight table already gives one computation per key in the process.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

from memo._codec import Entry
from memo._envelope import STAMP_OFFSET, stamp
from memo._tags import tag_set_key
from memo.backends.base import Backend, Leases, TagSets
from memo.exceptions import BackendError

__all__ = ["LEASE_MS", "Lease", "Leasing"]

#: How long a lease lives unless renewed; its holder renews it every third of that.
LEASE_MS = 3000


@dataclass(frozen=True)
class Lease:
    """A lease asked for: ``held`` when it is this caller's."""

    key: str
    token: str
    held: bool
    #: Not held because a value was stored since the caller read the key: read it.
    superseded: bool
    #: The sets of the computation's tags (an invalidation of one voids the lease).
    tag_sets: tuple[str, ...]
    #: What the stored entry must still be for the store to go through.
    expect: tuple[int, bytes]


class Leasing:
    """The leases and tag sets of one cache.

    Args:
        backend: the cache's backend; used only while it shares leases.
        prefix: the cache's key prefix (tag keys live under it).
        failed: told of each backend error (operation name, error); never raises.
    """

    def __init__(
        self, backend: Backend, prefix: str, failed: Callable[[str, BackendError], None]
    ) -> None:
        self._backend = backend if isinstance(backend, Leases) else None
        self._prefix = prefix
        self._failed = failed

    @property
    def active(self) -> bool:
        """Whether leases and tag sets are in use now."""
        backend = self._backend
        return backend is not None and backend.shares_leases

    async def take(
        self, full_key: str, tags: Sequence[str], replacing: Entry | None, *, force: bool = False
    ) -> Lease | None:
        """Ask for the lease of ``full_key`` before computing a value that replaces
        ``replacing`` (None: the key is cold); ``force`` takes it whoever holds it and
        whatever is stored (an explicit refresh). None when leases are not in use or the
        backend failed (the caller then stores nothing in Redis)."""
        backend = self._backend
        if backend is None or not backend.shares_leases:
            return None
        tag_sets = tuple(tag_set_key(self._prefix, tag) for tag in tags)
        token = os.urandom(12).hex()
        expect = (0, b"")
        if force:
            expect = (-1, b"")
        elif replacing is not None:
            expect = (STAMP_OFFSET, stamp(replacing.created_ms, replacing.fresh_until_ms))
        try:
            taken = await backend.acquire_lease(
                full_key, token, LEASE_MS, tag_sets, None if force else expect
            )
        except BackendError as exc:
            self._failed("lease", exc)
            return None
        except BaseException:
            # Cancelled with the request on its way: the lease may be ours, with nobody
            # left to compute. Give it back (the token makes that safe), or waiters in
            # other processes would wait for it to expire.
            await self._give_back(full_key, token)
            raise
        return Lease(full_key, token, taken == 1, taken == 2, tag_sets, expect)

    async def _give_back(self, full_key: str, token: str) -> None:
        """Release the lease ``token`` may hold on ``full_key`` (a no-op if it does not)."""
        backend = self._backend
        if backend is None:
            return
        try:
            await backend.release_lease(full_key, token)
        except BackendError as exc:
            self._failed("lease", exc)

    @asynccontextmanager
    async def kept(self, lease: Lease) -> AsyncIterator[None]:
        """Renew ``lease`` in the background while the block runs (a computation)."""
        backend = self._backend
        if backend is None or not lease.held:
            yield
            return

        async def renew() -> None:
            while True:
                await asyncio.sleep(LEASE_MS / 3000)
                try:
                    renewed = await backend.renew_lease(
                        lease.key, lease.token, LEASE_MS, lease.tag_sets
                    )
                    if not renewed:
                        return  # voided: the store will be refused, nothing to keep
                except BackendError as exc:
                    self._failed("lease", exc)

        renewal = asyncio.get_running_loop().create_task(renew())
        try:
            yield
        finally:
            renewal.cancel()

    async def release(self, lease: Lease) -> None:
        """Give a held lease back (the computation failed): a waiter may take it now."""
        if lease.held:
            await self._give_back(lease.key, lease.token)

    async def store(self, lease: Lease, data: bytes, ttl_ms: int, *, strict: bool = False) -> bool:
        """Store under a held lease; False when refused (overtaken) or failed (raised
        instead with ``strict``, for caches that fail on connection errors)."""
        backend = self._backend
        if backend is None or not lease.held:
            return False
        try:
            return await backend.store_leased(
                lease.key, data, ttl_ms, lease.token, lease.expect, lease.tag_sets
            )
        except BackendError as exc:
            self._failed("set", exc)
            if strict:
                raise
            return False

    async def invalidate_tag(self, tag: str) -> tuple[int, list[str]]:
        """Delete the entries of ``tag`` in one server-side step; how many there were,
        and the tag's members."""
        backend = self._backend
        if not isinstance(backend, TagSets):
            return 0, []
        try:
            return await backend.invalidate_tag(tag_set_key(self._prefix, tag))
        except BackendError as exc:
            self._failed("invalidate_tags", exc)
            return 0, []
