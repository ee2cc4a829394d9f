"""Deadlines and a circuit breaker: how memo stops waiting on a Redis that does not answer.

Both are pure: the breaker takes an injected clock, and ``run_with_deadline`` only wraps
a coroutine. ``RedisBackend`` applies them to every command.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

from memo._clock import Clock
from memo.exceptions import BackendTimeout, ConfigError

__all__ = ["CircuitBreaker", "DeadlineWatchdog", "run_with_deadline"]

T = TypeVar("T")

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


class CircuitBreaker:
    """Stops sending commands to a server that keeps failing, and probes for its return.

    closed: every command goes through; ``failure_threshold`` consecutive failures open it.
    open: nothing goes through until ``reset_timeout`` seconds have passed, then half-open.
    half_open: exactly one probe goes through at a time; its success closes the breaker,
    its failure opens it again for another ``reset_timeout``.
    """

    def __init__(
        self,
        *,
        failure_threshold: int = 5,
        reset_timeout: float = 1.0,
        clock: Clock = time.monotonic,
    ) -> None:
        if not isinstance(failure_threshold, int) or failure_threshold < 1:
            raise ConfigError(f"failure_threshold={failure_threshold!r}: an int of at least 1")
        if not isinstance(reset_timeout, (int, float)) or reset_timeout <= 0:
            raise ConfigError(f"reset_timeout={reset_timeout!r}: seconds, more than 0")
        self.failure_threshold = failure_threshold
        self.reset_timeout = float(reset_timeout)
        self._clock = clock
        self._state = CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probing = False
        self.times_opened = 0
        self.rejected = 0

    @property
    def state(self) -> str:
        if self._state == OPEN and self._clock() - self._opened_at >= self.reset_timeout:
            return HALF_OPEN
        return self._state

    def allow(self) -> bool:
        """Whether a command may be sent now (a True in half-open reserves the probe)."""
        state = self.state
        if state == CLOSED:
            return True
        if state == HALF_OPEN and not self._probing:
            self._state = HALF_OPEN
            self._probing = True
            return True
        self.rejected += 1
        return False

    def record_success(self) -> None:
        self._state = CLOSED
        self._failures = 0
        self._probing = False

    def record_failure(self) -> None:
        self._probing = False
        if self._state == HALF_OPEN:
            self._open()
            return
        self._failures += 1
        if self._state == CLOSED and self._failures >= self.failure_threshold:
            self._open()

    def _open(self) -> None:
        self._state = OPEN
        self._opened_at = self._clock()
        self._failures = 0
        self.times_opened += 1

    def __repr__(self) -> str:
        return f"CircuitBreaker(state={self.state!r}, opened={self.times_opened})"


async def run_with_deadline(awaitable: Awaitable[T], seconds: float, what: str) -> T:
    """Await ``awaitable``, raising BackendTimeout once ``seconds`` have passed."""
    try:
        if sys.version_info >= (3, 11):
            async with asyncio.timeout(seconds):
                return await awaitable
        return await asyncio.wait_for(awaitable, seconds)  # pragma: no cover - 3.10
    except (asyncio.TimeoutError, TimeoutError) as exc:
        raise BackendTimeout(
            f"{what} did not finish within {seconds:g} s: the server is slow or "
            f"unreachable; raise operation_timeout if it is merely slow"
        ) from exc


class DeadlineWatchdog:
    """Per-command deadlines for one event loop, for the price of a dict entry each.

    ``asyncio.timeout`` schedules (and cancels) a timer per use, which on a cache hit
    served by Redis is a measurable share of the cost. All commands of a backend share
    one deadline length, so deadlines arrive in the order commands start: one timer at
    the earliest deadline suffices. When it fires it cancels the tasks whose deadline
    has passed and re-arms for the next; ``expired()`` then tells the cancelled task that
    the cancellation was a timeout (and takes it back, as ``asyncio.timeout`` does).
    """

    __slots__ = ("_expired", "_handle", "_loop", "_watched")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        # task -> (deadline, its cancelling() count when watched); in deadline order.
        self._watched: dict[asyncio.Task[Any], tuple[float, int]] = {}
        # tasks cancelled for their deadline -> cancelling() count, until they ask.
        self._expired: dict[asyncio.Task[Any], int] = {}
        self._handle: asyncio.TimerHandle | None = None

    def watch(self, task: asyncio.Task[Any], seconds: float) -> None:
        deadline = self._loop.time() + seconds
        self._watched.pop(task, None)  # moving it to the end keeps the deadline order
        # cancelling()/uncancel() exist from 3.11, the only versions that use this class.
        self._watched[task] = (deadline, task.cancelling())  # type: ignore[attr-defined]
        if self._handle is None:
            self._handle = self._loop.call_at(deadline, self._fire)

    def unwatch(self, task: asyncio.Task[Any]) -> None:
        self._watched.pop(task, None)

    def expired(self, task: asyncio.Task[Any]) -> bool:
        """True when this task was cancelled for its deadline and by nothing else."""
        cancelling = self._expired.pop(task, None)
        if cancelling is None:
            return False
        remaining: int = task.uncancel()  # type: ignore[attr-defined]
        return remaining <= cancelling

    def _fire(self) -> None:
        self._handle = None
        now = self._loop.time()
        while self._watched:
            task, (deadline, cancelling) = next(iter(self._watched.items()))
            if deadline > now:
                self._handle = self._loop.call_at(deadline, self._fire)
                return
            del self._watched[task]
            if not task.done():
                self._expired[task] = cancelling
                task.cancel()
