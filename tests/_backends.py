"""The backends the contract suite runs over. A new backend adds one entry here."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from memo.backends import Backend, MemoryBackend
from memo.backends.tiered import TieredBackend
from memo.testing import FakeClock


@dataclass(frozen=True)
class BackendCase:
    """How to build one backend for a contract test.

    ``controls_time``: the backend expires entries by the injected clock, so expiry tests
    advance a FakeClock. Backends that expire by their own clock (a Redis server) get
    short real TTLs instead.
    """

    name: str
    make: Callable[[FakeClock], Awaitable[Backend]]
    controls_time: bool = True


async def _memory(clock: FakeClock) -> Backend:
    return MemoryBackend(clock=clock, max_entries=10_000, max_bytes=64 * 1024 * 1024)


async def _tiered_over_memory(clock: FakeClock) -> Backend:
    # The tiering rules on their own; the same backend over Redis runs in the Redis tests.
    return TieredBackend(MemoryBackend(clock=clock, max_entries=100), await _memory(clock))


BACKENDS: dict[str, BackendCase] = {
    "memory": BackendCase("memory", _memory),
    "tiered-memory": BackendCase("tiered-memory", _tiered_over_memory),
}
