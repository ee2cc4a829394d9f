"""The life of a listener's task, shared by both listeners (``invalidation.py``,
``_tracking.py``): each runs as one task of one event loop, and that loop may stop, close
or be another thread's; and ``within``, the deadline their steps (and memo's own
connections' handshakes) run under."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

from memo._loops import running_loop

__all__ = ["end_task", "running_in_live_loop", "within"]

T = TypeVar("T")


def running_in_live_loop(task: asyncio.Task[Any] | None) -> bool:
    """Whether ``task`` runs in a loop that is running. A task whose loop has stopped
    (not closed: a loop driven call by call) hears nothing; it is cancelled as soon as
    that loop runs again, and False is returned so that a new one is started."""
    if task is None or task.done():
        return False
    loop = task.get_loop()
    if loop.is_running() and not loop.is_closed():
        return True
    if not loop.is_closed():
        loop.call_soon_threadsafe(task.cancel)
    return False


async def end_task(task: asyncio.Task[Any] | None, grace: float) -> None:
    """Cancel ``task``: waited for (at most ``grace`` s, even if the cancellation is
    swallowed) when it runs in this loop, only asked of its own loop otherwise."""
    if task is None or task.done():
        return
    loop = task.get_loop()
    if loop.is_closed():
        return
    if loop is running_loop():
        task.cancel()
        await asyncio.wait({task}, timeout=grace)
    else:
        loop.call_soon_threadsafe(task.cancel)


#: How long a step given up on may take to end once cancelled (see ``within``).
_WIND_DOWN = 1.0


async def within(awaitable: Awaitable[T], seconds: float, what: str) -> T:
    """Await under a deadline without ``asyncio.wait_for``, which on Python 3.10 and
    3.11 can swallow a cancellation of the caller (then ``asyncio.run`` could wait
    forever for this task at shutdown); ``asyncio.wait`` never does.

    A step given up on (deadline, or the caller cancelled) is cancelled and waited for,
    up to ``_WIND_DOWN`` s, before this returns: a connection it was opening must be
    closed or back in its pool before the caller disposes of the pool. (Not waiting, a
    redis-py connection cancelled in its handshake went back to a pool already closed,
    its socket open: a ResourceWarning once its loop had ended.)
    """
    inner = asyncio.ensure_future(awaitable)
    try:
        done, _ = await asyncio.wait({inner}, timeout=seconds)
    except asyncio.CancelledError:
        await _wind_down(inner)
        raise
    if not done:
        await _wind_down(inner)
        raise TimeoutError(f"{what} took over {seconds:g} s")
    return inner.result()


async def _wind_down(inner: asyncio.Future[Any]) -> None:
    # Cancelled again if it goes on: redis-py can swallow a cancellation that lands as
    # a step of its handshake completes (the observed leak: the step then reconnected),
    # and the next step (a handshake read, which has no timeout) could wait forever.
    for _ in range(3):
        if inner.done():
            break
        inner.cancel()
        await asyncio.wait({inner}, timeout=_WIND_DOWN)
    if inner.done() and not inner.cancelled():
        inner.exception()  # retrieved: it was given up on
