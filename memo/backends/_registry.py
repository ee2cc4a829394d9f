"""Every Redis backend of the process, for what concerns them all at once.

``release_loop_connections`` closes the running loop's connections of each (a job that
runs in its own event loop, before that loop ends); after a ``fork()`` each makes new
connections instead of sharing its parent's sockets (checked once per fork rather than
with a ``getpid()`` call on every command).
"""

from __future__ import annotations

import weakref
from typing import Protocol

from memo._fork import in_forked_child
from memo.backends._tracking import stop_trackers_of_running_loop
from memo.backends.invalidation import stop_listeners_of_running_loop

__all__ = ["register", "release_loop_connections"]


class _Registered(Protocol):
    async def release_loop(self) -> None: ...

    def forget_after_fork(self) -> None: ...


_LIVE: weakref.WeakSet[_Registered] = weakref.WeakSet()


def register(backend: _Registered) -> None:
    """Count ``backend`` among the process's Redis backends (held weakly)."""
    _LIVE.add(backend)


async def release_loop_connections() -> None:
    """Close the running loop's connections of every Redis backend and listener."""
    await stop_listeners_of_running_loop()
    await stop_trackers_of_running_loop()
    for backend in list(_LIVE):
        await backend.release_loop()


def _after_fork_in_child() -> None:
    for backend in list(_LIVE):
        backend.forget_after_fork()


in_forked_child(_after_fork_in_child)
