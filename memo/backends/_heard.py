"""What a memory tier in front of Redis does with the changes it hears: from the server
(tracking pushes) or from other processes (the invalidation channel).

These handlers run for every change heard, in every listening process, mostly for keys
no computation here is waiting on: each is kept to the few steps that case needs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from memo.backends._fill_guard import FillGuard
from memo.backends.memory import MemoryBackend

__all__ = ["AnnounceHook", "HeardChanges", "InFlight"]

#: Told of each change heard (a list of keys, or a glob) while ``InFlight`` says so.
AnnounceHook = Callable[[list[str] | None, str | None], None]


class InFlight(Protocol):
    """Computations under way that a change heard may concern (a flight table)."""

    in_flight: int


class HeardChanges:
    """Drops what changed from ``memory``, marks it in ``guard`` for replies under way,
    and tells ``hook`` while ``flights`` has computations in flight (both are set
    together, by ``TieredBackend.announce_to``)."""

    __slots__ = ("flights", "guard", "hook", "memory")

    def __init__(self, memory: MemoryBackend, guard: FillGuard) -> None:
        self.memory = memory
        self.guard = guard
        self.hook: AnnounceHook | None = None
        self.flights: InFlight | None = None

    def keys(self, keys: list[str]) -> None:
        """``keys`` changed elsewhere."""
        self.guard.heard(keys)
        for key in keys:
            self.memory.discard_local(key)
        self._tell(keys, None)

    def key(self, key: str) -> None:
        """``keys([key])`` without lists: a tracking tier's commonest message."""
        guard = self.guard
        if guard.reading or guard.writing:  # heard_one's own test, without the call
            guard.heard_one(key)
        self.memory.discard_local(key)
        flights = self.flights  # _tell's test, inlined: nearly always nothing flies
        if flights is not None and flights.in_flight:
            self._tell([key], None)

    def pattern(self, pattern: str) -> None:
        """Another process announced a pattern delete."""
        self.guard.everything()
        self.memory.discard_pattern(pattern)
        self._tell(None, pattern)

    def _tell(self, keys: list[str] | None, pattern: str | None) -> None:
        hook, flights = self.hook, self.flights
        if hook is not None and flights is not None and flights.in_flight:
            hook(keys, pattern)

    def flush(self) -> None:
        """The listener (re)connected, or the database was flushed: changes missed."""
        self.guard.everything()
        self.memory.clear_local()
