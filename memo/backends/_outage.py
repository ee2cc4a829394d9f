"""Which parts of a remote backend are out, and what a memory tier drops when one is back.

One server is out or not: a scope of ``""``, the whole remote. A cluster loses nodes one
at a time, and a lost node is an outage of the keys it serves only: its errors carry
the node as their scope (``BackendError.scope``) and ``Backend.outage_scope(key)`` says
which node a key's answer came from. While any part is out the memory tier is asked
after the remote and serves its copies of what the remote cannot answer; when a part
answers again, only that part's copies are dropped (other processes may have written
them meanwhile), and the copies of the nodes still out keep serving.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Sequence

from memo.backends.base import Backend
from memo.backends.memory import MemoryBackend
from memo.exceptions import BackendError, BackendTimeout, BackendUnavailable

__all__ = ["EVERYTHING", "OutageScopes", "read_in_parts"]

#: ``answered``'s word for "drop every copy".
EVERYTHING = "*"


class OutageScopes:
    """The scopes of ``remote`` that are out (``""``: the whole remote, or a command
    that spans it)."""

    def __init__(self, remote: Backend) -> None:
        self.down: set[str] = set()
        self._remote = remote
        self._lock = threading.Lock()  # loops in several threads share one tier

    def failed(self, exc: BackendError | None) -> None:
        with self._lock:
            self.down.add("" if exc is None else exc.scope)

    def covers(self, key: str) -> bool:
        """Whether ``key``'s part of the remote is out (so memory answers for it)."""
        down = self.down
        return bool(down) and ("" in down or self._remote.outage_scope(key) in down)

    def back(self, key: str | None, memory: MemoryBackend) -> None:
        """A command of ``key`` (or of none in particular) was answered: drop from
        ``memory`` the copies of what was out and is back."""
        drop = self.answered(key)
        if drop == EVERYTHING:
            memory.clear_local()
        elif drop is not None:
            scope_of = self._remote.outage_scope
            memory.discard_where(lambda k: scope_of(k) == drop)

    def answered(self, key: str | None) -> str | None:
        """A command (of ``key``, or of none in particular) was answered: what the
        memory tier must drop now. None: nothing; ``EVERYTHING``; else a scope, whose
        keys are to be dropped."""
        scope = "" if key is None else self._remote.outage_scope(key)
        with self._lock:
            return self._answered(scope)

    def _answered(self, scope: str) -> str | None:
        down = self.down
        if "" in down:  # out as a whole: any answer means it is back
            down.clear()
            return EVERYTHING
        if scope in down:
            down.discard(scope)
            return scope
        gone = {part for part in down if not self._remote.serves(part)}
        if gone:  # a node no longer in the remote (failed over): its keys moved
            down.difference_update(gone)
            return EVERYTHING
        return None


async def read_in_parts(
    keys: Sequence[str],
    read: Callable[[str], Awaitable[bytes | None]],
    kept: Callable[[str], bytes | None],
    failed: Callable[[BackendError], None],
    answered: Callable[[str], None],
) -> list[bytes | None]:
    """Read ``keys`` one by one (concurrently) from a remote that fails in parts: a key
    whose part is out is answered by ``kept`` (the memory tier's copy), the others by
    the remote. The first outage is raised only when nothing at all was answered."""
    outages: list[BackendError] = []

    async def one(key: str) -> bytes | None:
        try:
            data = await read(key)
        except (BackendUnavailable, BackendTimeout) as exc:
            failed(exc)
            outages.append(exc)
            return kept(key)
        answered(key)
        return data

    found = await asyncio.gather(*(one(key) for key in keys))
    if outages and all(data is None for data in found):
        raise outages[0]
    return list(found)
