"""Counters kept in Redis hashes: shared figures every process adds to (``HINCRBY``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

__all__ = ["CounterCommands"]

#: Runs one command under the backend's deadline, breaker and error translation.
Run = Callable[..., Awaitable[Any]]


class CounterCommands:
    """``add`` and ``read`` of a hash of integer counters, for a ``RedisBackend``."""

    def __init__(self, run: Run) -> None:
        self._run = run

    async def add(self, key: str, counts: Mapping[str, int]) -> None:
        """Add each count to its field, atomically per field, in one round trip."""

        async def send(client: Any) -> None:
            pipe = client.pipeline(transaction=False)
            for field, amount in counts.items():
                pipe.hincrby(key, field, amount)
            await pipe.execute()

        if counts:
            await self._run("HINCRBY", send)

    async def read(self, key: str) -> dict[str, int]:
        """Every counter of the hash (empty when there is none)."""
        found = await self._run("HGETALL", lambda c: c.hgetall(key), read=True)
        return {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in dict(found).items()}
