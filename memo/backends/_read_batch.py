"""Coalesced reads: concurrent reads of one event loop go out together in one round trip.

A burst of cache misses, or a fan-out, then costs one round trip per loop tick instead
of one each (one MGET, or one pipeline), readers of the same key share one read, and a
lone reader waits for nothing: it is sent on its own.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

from memo.backends._batching import Call, CallBatcher

__all__ = ["ReadBatcher", "get_with_ttl"]

T = TypeVar("T")


class ReadBatcher(Generic[T]):
    """Read alone when nothing is in flight; while a read is, join the next batch.

    ``get_one`` and ``get_many`` send the commands (with their deadline and error
    translation); this class only decides which to send and hands out the results:
    a batch asks for each distinct key once, and its readers share the answer.
    """

    def __init__(
        self,
        get_one: Callable[[str], Awaitable[T]],
        get_many: Callable[[Sequence[str]], Awaitable[list[T]]],
        *,
        alone_first: bool = True,
    ) -> None:
        self._get_one = get_one
        self._get_many = get_many
        self._batcher = CallBatcher(self._send, alone_first=alone_first)

    def forget_after_fork(self) -> None:
        self._batcher.forget_after_fork()

    async def get(self, key: str) -> T:
        value: T = await self._batcher.call((key,), ())
        return value

    async def _send(self, calls: list[Call]) -> list[T]:
        if len(calls) == 1:
            return [await self._get_one(calls[0][0][0])]
        keys = list(dict.fromkeys(keys[0] for keys, _ in calls))  # distinct, in order
        found = dict(zip(keys, await self._get_many(keys), strict=True))
        return [found[keys[0]] for keys, _ in calls]


async def get_with_ttl(client: Any, keys: Sequence[str]) -> list[tuple[bytes | None, int | None]]:
    """Each key's value and remaining milliseconds (None for none), one pipeline."""
    async with client.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.get(key)
            pipe.pttl(key)
        replies = await pipe.execute()
    return [
        (data, pttl if pttl is not None and pttl > 0 else None)
        for data, pttl in zip(replies[::2], replies[1::2], strict=True)
    ]
