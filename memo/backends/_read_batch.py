"""Coalesced reads: concurrent reads of one event loop go out together in one round trip.

A burst of cache misses, or a fan-out, then costs one round trip per loop tick instead
of one each (one MGET, or one pipeline), readers of the same key share one read, and a
lone reader waits for nothing: it is sent on its own.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

from memo._fork import keep_from_parent

__all__ = ["ReadBatcher", "get_with_ttl"]

T = TypeVar("T")


class _ReadBatch(Generic[T]):
    """Reads of one event loop waiting to go out together."""

    __slots__ = ("in_flight", "scheduled", "tasks", "waiting")

    def __init__(self) -> None:
        self.in_flight = 0
        self.scheduled = False
        self.waiting: dict[str, list[asyncio.Future[T]]] = {}
        self.tasks: set[asyncio.Task[None]] = set()


class ReadBatcher(Generic[T]):
    """Read alone when nothing is in flight; while a read is, join the next batch.

    ``get_one`` and ``get_many`` send the commands (with their deadline and error
    translation); this class only decides which to send and hands out the results.
    """

    def __init__(
        self,
        get_one: Callable[[str], Awaitable[T]],
        get_many: Callable[[Sequence[str]], Awaitable[list[T]]],
    ) -> None:
        self._get_one = get_one
        self._get_many = get_many
        self._batches: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _ReadBatch[T]] = (
            weakref.WeakKeyDictionary()
        )

    def forget_after_fork(self) -> None:
        """In a forked child: the parent's batches and tasks are not ours (see memo._fork)."""
        keep_from_parent(self._batches.values())
        self._batches = weakref.WeakKeyDictionary()

    async def get(self, key: str) -> T:
        loop = asyncio.get_running_loop()
        batch = self._batches.get(loop)
        if batch is None:
            batch = self._batches[loop] = _ReadBatch[T]()
        if batch.in_flight == 0 and not batch.waiting:
            batch.in_flight += 1
            try:
                return await self._get_one(key)
            finally:
                batch.in_flight -= 1
        future: asyncio.Future[T] = loop.create_future()
        batch.waiting.setdefault(key, []).append(future)
        if not batch.scheduled:
            batch.scheduled = True
            loop.call_soon(self._send_batch, loop, batch)
        return await future

    def _send_batch(self, loop: asyncio.AbstractEventLoop, batch: _ReadBatch[T]) -> None:
        waiting, batch.waiting = batch.waiting, {}
        batch.scheduled = False
        batch.in_flight += 1
        task = loop.create_task(self._mget_for(waiting, batch))
        batch.tasks.add(task)
        task.add_done_callback(batch.tasks.discard)

    async def _mget_for(
        self, waiting: dict[str, list[asyncio.Future[T]]], batch: _ReadBatch[T]
    ) -> None:
        keys = list(waiting)
        try:
            values = await self._get_many(keys)
        except BaseException as exc:
            for futures in waiting.values():
                for future in futures:
                    if not future.done():
                        future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
        else:
            for key, value in zip(keys, values, strict=True):
                for future in waiting[key]:
                    if not future.done():  # a cancelled reader has gone
                        future.set_result(value)
        finally:
            batch.in_flight -= 1


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
