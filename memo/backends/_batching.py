"""Concurrent calls of one event loop go to Redis together, in one round trip.

The one coalescing mechanism of the Redis backend: reads (_read_batch.py), writes
(_write_batch.py) and lease scripts (_leases.py) each give it a ``send`` that turns a
list of calls into one round trip. A burst (a cold start, a fan-out) would otherwise
cost a round trip per call and queue on the connection pool past the deadline. A lone
call goes out at once, waiting for nothing; calls made while one is in flight join the
next batch, sent when the loop next runs.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from memo._fork import keep_from_parent

__all__ = ["Call", "CallBatcher"]

#: One call: its keys and its arguments.
Call = tuple[Sequence[str], Sequence[Any]]


class _Batch:
    __slots__ = ("in_flight", "scheduled", "tasks", "waiting")

    def __init__(self) -> None:
        self.in_flight = 0
        self.scheduled = False
        self.waiting: list[tuple[Call, asyncio.Future[Any]]] = []
        self.tasks: set[asyncio.Task[None]] = set()


class CallBatcher:
    """Sends calls with ``send`` (which returns one reply per call, in
    order, or raises for the whole batch), alone or together; at most ``max_batch``
    calls per ``send`` (None: no bound), a larger batch going as several, one after the
    other (so that calls keep their order). ``alone_first=False`` makes even a lone call
    wait for the loop's next turn, so that a burst goes as one batch (a cluster's node
    then gets one round trip, not the first call's and then the rest's)."""

    def __init__(
        self,
        send: Callable[[list[Call]], Awaitable[list[Any]]],
        *,
        max_batch: int | None = None,
        alone_first: bool = True,
    ) -> None:
        self._send = send
        self._max_batch = max_batch
        self._alone_first = alone_first
        self._batches: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Batch] = (
            weakref.WeakKeyDictionary()
        )

    def forget_after_fork(self) -> None:
        """In a forked child: the parent's batches and tasks are not ours (see memo._fork)."""
        keep_from_parent(self._batches.values())
        self._batches = weakref.WeakKeyDictionary()

    async def call(self, keys: Sequence[str], args: Sequence[Any]) -> Any:
        loop = asyncio.get_running_loop()
        batch = self._batches.get(loop)
        if batch is None:
            batch = self._batches[loop] = _Batch()
        if batch.in_flight == 0 and not batch.waiting and self._alone_first:
            batch.in_flight += 1
            try:
                (reply,) = await self._send([(keys, args)])
                return reply
            finally:
                batch.in_flight -= 1
        future: asyncio.Future[Any] = loop.create_future()
        batch.waiting.append(((keys, args), future))
        if not batch.scheduled:
            batch.scheduled = True
            loop.call_soon(self._send_waiting, loop, batch)
        return await future

    def _send_waiting(self, loop: asyncio.AbstractEventLoop, batch: _Batch) -> None:
        waiting, batch.waiting = batch.waiting, []
        batch.scheduled = False
        batch.in_flight += 1
        task = loop.create_task(self._answer_all(waiting, batch))
        batch.tasks.add(task)
        task.add_done_callback(batch.tasks.discard)

    async def _answer_all(
        self, waiting: list[tuple[Call, asyncio.Future[Any]]], batch: _Batch
    ) -> None:
        size = self._max_batch or len(waiting)
        try:
            for start in range(0, len(waiting), size):
                await self._answer(waiting[start : start + size])
        finally:
            batch.in_flight -= 1

    async def _answer(self, waiting: list[tuple[Call, asyncio.Future[Any]]]) -> None:
        try:
            replies = await self._send([call for call, _ in waiting])
        except BaseException as exc:
            for _, future in waiting:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
        else:
            for (_, future), reply in zip(waiting, replies, strict=True):
                if not future.done():  # a cancelled caller has gone
                    future.set_result(reply)
