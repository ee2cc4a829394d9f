"""Redis hashes for figures every process shares: counters (``HINCRBY``) and one small
record per process (``HSET``), the ``SharedHashes`` capability of ``RedisBackend``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

__all__ = ["HashCommands"]

#: Runs one command under the backend's deadline, breaker and error translation.
Run = Callable[..., Awaitable[Any]]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class HashCommands:
    """Counters and records in Redis hashes, each call one round trip."""

    def __init__(self, run: Run) -> None:
        self._run = run

    async def add_counts(self, key: str, counts: Mapping[str, int]) -> None:
        """Add each count to its field (atomically per field)."""

        async def send(client: Any) -> None:
            pipe = client.pipeline(transaction=False)
            for field, amount in counts.items():
                pipe.hincrby(key, field, amount)
            await pipe.execute()

        if counts:
            await self._run("HINCRBY", send)

    async def read_counts(self, key: str) -> dict[str, int]:
        """Every counter of the hash (empty when there is none)."""
        found = await self._run("HGETALL", lambda c: c.hgetall(key), read=True)
        counts: dict[str, int] = {}
        for k, v in dict(found).items():
            try:
                counts[_text(k)] = int(v)
            except ValueError:
                continue  # not a counter (someone else's field): left out
        return counts

    async def put_fields(self, key: str, fields: Mapping[str, bytes]) -> None:
        """Set fields of the hash, replacing what they held."""
        if fields:
            await self._run("HSET", lambda c: c.hset(key, mapping=dict(fields)))

    async def read_fields(self, key: str) -> dict[str, bytes]:
        """Every field of the hash."""
        found = await self._run("HGETALL", lambda c: c.hgetall(key), read=True)
        return {_text(k): bytes(v) for k, v in dict(found).items()}

    async def server_time(self) -> float:
        """The server's clock, in seconds since the epoch: one clock for every host's
        records, whatever their own clocks say."""
        seconds, micros = await self._run("TIME", lambda c: c.time(), read=True)
        return int(seconds) + int(micros) / 1_000_000

    async def drop_fields(self, key: str, fields: Sequence[str]) -> None:
        if fields:
            await self._run("HDEL", lambda c: c.hdel(key, *fields))
