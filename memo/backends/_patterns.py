"""Pattern deletes and key listings of the Redis backend: SCAN, never KEYS.

A mixin of ``RedisBackend``: it needs the backend's runner, its UNLINK (which voids each
key's lease with it) and its announcer; a cluster's backend scans every primary instead
(``_scan``) and keeps leases where its ``_cold_leases`` says.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine, Sequence
from contextlib import aclosing
from typing import Any, TypeVar

from memo.backends._announce import WriteAnnouncer
from memo.backends.base import LEASE_SUFFIX
from memo.exceptions import BackendError, BackendTimeout, BackendUnavailable

__all__ = ["SCAN_COUNT", "PatternCommands"]

_log = logging.getLogger("memo")

T = TypeVar("T")

#: Keys asked for per SCAN step.
SCAN_COUNT = 1000


class PatternCommands:
    """``delete_pattern``, ``scan_keys`` and ``clear`` over SCAN batches."""

    announcer: WriteAnnouncer

    def _run(
        self, what: str, command: Callable[[Any], Awaitable[T]], *, read: bool = False
    ) -> Coroutine[Any, Any, T]:
        raise NotImplementedError

    async def _unlink(self, keys: Sequence[str]) -> int:
        raise NotImplementedError

    async def _scan(self, pattern: str) -> AsyncGenerator[list[str], None]:
        """The keys matching ``pattern``, a SCAN batch at a time (never KEYS, which
        blocks the server); each batch has its own deadline."""
        cursor = 0
        while True:
            cursor, keys = await self._run(
                "SCAN",
                lambda c, cur=cursor: c.scan(cur, match=pattern, count=SCAN_COUNT),  # type: ignore[misc]
                read=True,
            )
            if keys:
                yield [k.decode() if isinstance(k, bytes) else k for k in keys]
            if cursor == 0:
                return

    async def delete_pattern(self, pattern: str) -> int:
        """SCAN + UNLINK, batch by batch, each batch announced with its keys (so that a
        failure half-way leaves no deleted key unannounced); then the pattern itself,
        for copies of keys Redis no longer held. That last announcement is best effort:
        every deletion is already announced, so its failure is logged, not raised."""
        announcer = self.announcer
        removed = 0
        async for keys in self._scan(pattern):
            entries = [key for key in keys if not key.endswith(LEASE_SUFFIX)]
            removed += await self._unlink(entries)  # their leases with them, uncounted
            await self._unlink([key for key in keys if key.endswith(LEASE_SUFFIX)])
        cold = self._cold_leases(pattern)
        if cold is not None:  # leases of keys not stored yet
            async for leases in self._scan(cold):
                await self._unlink(leases)
        if announcer.announcing():
            message = announcer.pattern_message(pattern)
            try:
                await self._run("PUBLISH", lambda c: c.publish(announcer.channel, message))
            except (BackendUnavailable, BackendTimeout) as exc:
                _log.warning("memo: could not announce pattern %r (%s)", pattern, exc)
            except BackendError as exc:  # the server answered with an error: refused
                announcer.refused(exc)
        return removed

    def _cold_leases(self, pattern: str) -> str | None:
        """The pattern of the leases ``pattern`` does not reach itself ("a:*" reaches
        "a:1#lease"); None when it reaches them all."""
        return None if pattern.endswith("*") else pattern + LEASE_SUFFIX

    async def scan_keys(self, pattern: str, limit: int) -> list[str]:
        """SCAN until ``limit`` keys are found or the keyspace is covered."""
        found: list[str] = []
        async with aclosing(self._scan(pattern)) as batches:
            async for keys in batches:
                found.extend(keys[: limit - len(found)])
                if len(found) >= limit:
                    break
        return found

    async def clear(self) -> None:
        """Remove every memo key (``memo:*``); other keys in the database are left alone."""
        await self.delete_pattern("memo:*")
