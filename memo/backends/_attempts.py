"""One Redis command under the operation deadline, with the one retry reads may get.

The deadline covers the whole attempt (pool wait, retry, I/O). On Python 3.11 and later
a watchdog per event loop keeps the deadlines of every command in flight with one timer
(cheaper than a timer per command); on 3.10 each command gets ``asyncio.wait_for``.
"""

from __future__ import annotations

import asyncio
import sys
import weakref
from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis.exceptions import ConnectionError as RedisConnectionError

from memo._fork import keep_from_parent
from memo._tracing import TRACING
from memo.resilience import DeadlineWatchdog, run_with_deadline

__all__ = ["Attempts"]

T = TypeVar("T")
C = TypeVar("C")


async def _attempt(command: Callable[[C], Awaitable[T]], client: C, read: bool) -> T:
    try:
        return await command(client)
    except (RedisConnectionError, OSError):
        if not read:
            raise
    return await command(client)  # reads get one retry, inside the same deadline


class Attempts:
    """Runs commands under a deadline; a deadline that passes raises ``TimeoutError``."""

    def __init__(self) -> None:
        self._watchdogs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, DeadlineWatchdog] = (
            weakref.WeakKeyDictionary()
        )

    def forget_after_fork(self) -> None:
        """In a forked child: the parent's watchdogs are not ours (see memo._fork)."""
        keep_from_parent(self._watchdogs.values())
        self._watchdogs = weakref.WeakKeyDictionary()

    async def run(
        self,
        command: Callable[[C], Awaitable[T]],
        client: C,
        *,
        read: bool,
        seconds: float,
        what: str,
    ) -> T:
        tracer = TRACING.tracer
        if tracer is not None:  # off by default: see memo._tracing
            attributes = {
                "db.system.name": "redis",
                "db.operation.name": what.removeprefix("Redis "),
            }
            with tracer.start_as_current_span(what, attributes=attributes):
                return await self._run(command, client, read=read, seconds=seconds, what=what)
        return await self._run(command, client, read=read, seconds=seconds, what=what)

    async def _run(
        self,
        command: Callable[[C], Awaitable[T]],
        client: C,
        *,
        read: bool,
        seconds: float,
        what: str,
    ) -> T:
        if sys.version_info < (3, 11):  # pragma: no cover - Python 3.10
            return await run_with_deadline(_attempt(command, client, read), seconds, what)
        task = asyncio.current_task()
        assert task is not None
        loop = task.get_loop()
        watchdog = self._watchdogs.get(loop)
        if watchdog is None:
            watchdog = self._watchdogs[loop] = DeadlineWatchdog(loop)
        watchdog.watch(task, seconds)
        try:
            try:
                return await _attempt(command, client, read)
            finally:
                watchdog.unwatch(task)
        except asyncio.CancelledError:
            if watchdog.expired(task):
                raise TimeoutError from None
            raise
