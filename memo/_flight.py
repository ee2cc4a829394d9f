"""Single-flight: one computation per key, per cache, per event loop.

The first caller of a cold key starts the computation as a task; later callers of the
same key join it. Each caller waits on a future of its own, which the computation
settles itself as it ends, so a cancelled waiter leaves without cancelling the work the
others still wait for, and a caller resumes one turn of the loop after the work ends
(through ``asyncio.shield`` and a done callback it took one turn and three callbacks
more). When the last waiter leaves, the work is cancelled, unless the flight was
started with ``keep=True`` (AI calls: the tokens are already paid for, so the result is
finished and stored).

A call made *from inside* a computation for the same key would wait for itself forever.
A context variable carries the keys being computed into the computing task (tasks copy
the context that created them), so such a call is recognised and computes directly.
"""

from __future__ import annotations

import asyncio
import math
import random
import threading
import weakref
from collections.abc import Callable, Coroutine
from contextvars import ContextVar
from re import Pattern
from typing import Any, Generic, TypeVar

from memo._eager import start_eagerly

__all__ = ["Flight", "FlightTable", "computing_here", "should_refresh_early"]

T = TypeVar("T")

_SETTLED_KEYS = 10_000  # keys whose finished flights are counted
# Computations nested deeper than this (a cached function calling cached functions)
# start on the next turn: each eager start runs on its caller's stack, and a recursive
# cached function must not reach the recursion limit, least of all inside this module.
_EAGER_DEPTH = 4

# A tuple: computations nest a level or two deep, and adding to it is one allocation.
_computing: ContextVar[tuple[str, ...]] = ContextVar("memo_computing", default=())


def _no_loop() -> None:
    return None


def computing_here(key: str) -> bool:
    """True inside the computation of ``key`` (a re-entrant call would deadlock)."""
    return key in _computing.get()


class Flight(Generic[T]):
    """One running computation and the callers waiting for it."""

    __slots__ = (
        "error", "failed", "invalidated", "keep", "key", "landed", "owner", "result", "settled",
        "table", "task", "waiters", "waiting", "work",
    )  # fmt: skip

    def __init__(
        self, keep: bool, key: str, table: dict[str, Flight[Any]], owner: FlightTable
    ) -> None:
        self.keep = keep
        self.key, self.table, self.owner = key, table, owner  # where it is listed
        self.landed = False
        self.waiters = 0
        self.waiting: list[asyncio.Future[T]] = []  # one per caller, settled as it ends
        self.settled = False
        self.result: T | None = None  # what the computation returned, once it has
        #: What the computation raised, once it has ended (None: it returned).
        self.error: BaseException | None = None
        #: Told what the computation raised (not a cancellation) before anyone else.
        self.failed: Callable[[Exception], None] | None = None
        # Set when the key is invalidated while the computation runs: its result is then
        # returned to the waiters but not stored, since it may predate the invalidation.
        self.invalidated = False
        self.task: asyncio.Task[T | None]
        self.work: Coroutine[Any, Any, T] | None = None  # the computation, until it starts

    async def fly(self) -> T | None:
        """The task's coroutine: run ``work`` and settle the waiters with its outcome."""
        # Waiters are settled here, by the computation's own task, rather than by done
        # callbacks: they resume on the next turn of the loop. An exception is handed
        # to them and not raised again (nobody would retrieve it from the task);
        # cancellation and the likes of KeyboardInterrupt are. Having started, this
        # settles the waiters however it ends (``ended`` is for a task cancelled before
        # its first step). Started eagerly, this may end before the task is assigned.
        work, self.work = self.work, None
        assert work is not None
        try:
            result = await work
        except Exception as exc:
            if self.failed is not None:
                self.failed(exc)
            self.land()
            self.settle(None, exc)
            return None
        except BaseException as exc:
            self.land()
            self.settle(None, exc)
            raise
        self.land()
        self.settle(result, None)
        return result

    def land(self) -> None:
        """The flight is over: out of the table and counted (once, however it ends)."""
        if not self.landed:
            self.landed = True
            self.owner._landed(self)

    def abandon(self) -> None:
        """Cancel the computation and take it out of the table at once, so that a caller
        arriving while it winds down (releasing a lease) starts a new one instead of
        joining one that will end cancelled."""
        self.land()
        self.task.cancel()

    def ended(self, task: asyncio.Task[T | None]) -> None:
        """The task's done callback: a task cancelled before its first step never ran
        ``fly``, and its waiters would wait for ever."""
        if not self.settled:
            if self.work is not None:
                self.work.close()  # never started: nothing to warn about
            self.land()
            self.settle(None, asyncio.CancelledError())

    def outcome(self) -> T:
        """What the computation returned, or raise what it raised (once ``settled``)."""
        if self.error is not None:
            raise self.error
        return self.result  # type: ignore[return-value]  # None only with an error

    def settle(self, result: T | None, error: BaseException | None) -> None:
        """Give every caller still waiting the computation's outcome."""
        self.settled, self.result, self.error = True, result, error
        for waiter in self.waiting:
            if waiter.done():  # its caller was cancelled
                continue
            if error is None:
                waiter.set_result(result)  # type: ignore[arg-type]  # None only with error
            elif isinstance(error, asyncio.CancelledError):
                waiter.cancel()
            else:
                waiter.set_exception(error)
        self.waiting.clear()


class FlightTable:
    """The computations in flight for one cache, kept apart per event loop."""

    def __init__(self) -> None:
        self._by_loop: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[str, Flight[Any]]
        ] = weakref.WeakKeyDictionary()
        # Flights with keep=True must outlive their waiters; the loop only holds tasks weakly.
        self._kept: set[asyncio.Task[Any]] = set()
        # How many flights of each key have finished (bounded: forgotten all at once, the
        # epoch moving so that no mark taken before compares equal after).
        self._settled: dict[str, int] = {}
        self._epoch = 0
        # Flights running on every loop (read without the lock: a flight started in
        # another thread a moment ago may be missed, as it would be a moment earlier);
        # counted under a lock, as loops in threads share the table.
        self.in_flight = 0
        self._counting = threading.Lock()
        # The table last used and its loop (weakly): nearly every call finds its loop
        # here, without WeakKeyDictionary.get, which is Python code. One tuple, so a
        # thread reads a loop and its own table, never a mix of two.
        self._last: tuple[Callable[[], asyncio.AbstractEventLoop | None], dict[str, Any]] = (
            _no_loop,
            {},
        )

    def _table(self, loop: asyncio.AbstractEventLoop) -> dict[str, Flight[Any]]:
        last_loop, table = self._last
        if last_loop() is not loop:
            table = self._by_loop.get(loop)  # type: ignore[assignment]
            if table is None:
                table = self._by_loop[loop] = {}
            self._last = (weakref.ref(loop), table)
        return table

    def settled(self, key: str) -> tuple[int, int]:
        """A mark that moves whenever a flight of ``key`` finishes: a caller who read a
        cold key while one was computing compares marks taken around its read, since
        the value stored may have landed after its read was answered."""
        return self._epoch, self._settled.get(key, 0)

    def running(self, key: str) -> Flight[Any] | None:
        """The flight computing ``key`` on the running loop, if any."""
        return self._table(asyncio.get_running_loop()).get(key)

    def start(
        self,
        key: str,
        work: Callable[[Flight[T]], Coroutine[Any, Any, T]],
        *,
        keep: bool = False,
    ) -> Flight[T]:
        """Start computing ``key`` on the next turn, or return the flight already
        computing it."""
        return self.join_or_start(key, work, keep=keep, eager=False)[0]

    def join_or_start(
        self,
        key: str,
        work: Callable[[Flight[T]], Coroutine[Any, Any, T]],
        *,
        keep: bool = False,
        eager: bool = True,
    ) -> tuple[Flight[T], bool]:
        """The flight computing ``key`` and True, or a flight just started and False.

        ``eager`` runs the computation's first step now (``memo._eager``): a flight
        whose work never waits has then ended, ``settled``, when this returns, and its
        caller needs no waiter and no turn of the loop."""
        loop = asyncio.get_running_loop()
        table = self._table(loop)
        running: Flight[T] | None = table.get(key)
        if running is not None:
            return running, True
        flight: Flight[T] = Flight(keep, key, table, self)
        # Listed (and counted in flight) before any of it runs: an eager first step may
        # land it, and an invalidation heard meanwhile must find it.
        table[key] = flight
        with self._counting:
            self.in_flight += 1
        computing = _computing.get()
        token = _computing.set((*computing, key))
        try:
            # The task copies the current context, including the key just added.
            flight.work = work(flight)
            if eager and len(computing) < _EAGER_DEPTH:
                flight.task = start_eagerly(loop, flight.fly())
            else:
                flight.task = loop.create_task(flight.fly())
        except BaseException:
            if flight.work is not None:
                flight.work.close()
            flight.land()
            raise
        finally:
            _computing.reset(token)
        if not flight.settled:
            flight.task.add_done_callback(flight.ended)
            if keep:
                self._kept.add(flight.task)
        return flight, False

    def _landed(self, flight: Flight[Any]) -> None:
        with self._counting:
            self.in_flight -= 1
        key, table = flight.key, flight.table
        if table.get(key) is flight:
            del table[key]
        if flight.keep:  # an eager flight may land before its task is assigned
            self._kept.discard(getattr(flight, "task", None))
        settled = self._settled
        if len(settled) >= _SETTLED_KEYS:
            settled.clear()
            self._epoch += 1
        settled[key] = settled.get(key, 0) + 1

    def waiter(self, flight: Flight[T]) -> asyncio.Future[T]:
        """A future of the caller's own for ``flight``'s outcome; ``leave`` once the
        caller is done with it, however that happens. (Awaited by the caller itself, not
        through a coroutine of ours: a frame fewer on every miss.)"""
        waiter: asyncio.Future[T] = flight.task.get_loop().create_future()
        flight.waiting.append(waiter)
        if flight.settled:  # ended a moment ago (a caller of this very turn)
            flight.settle(flight.result, flight.error)
        flight.waiters += 1
        return waiter

    def leave(self, flight: Flight[Any]) -> None:
        """The caller of a ``waiter`` left: the last one out cancels the computation,
        unless it is kept; leaving early never cancels it for the others."""
        flight.waiters -= 1
        if flight.waiters == 0 and not flight.keep and not flight.settled:
            flight.abandon()

    def invalidate(self, key: str) -> None:
        """Keep the result of any running computation of ``key`` out of the cache."""
        if not self.in_flight:  # heard for every invalidation: mostly nothing flies
            return
        for table in list(self._by_loop.values()):
            flight = table.get(key)
            if flight is not None:
                flight.invalidated = True

    def invalidate_matching(self, pattern: Pattern[str]) -> None:
        for table in list(self._by_loop.values()):
            for key, flight in list(table.items()):
                if pattern.fullmatch(key):
                    flight.invalidated = True

    def background(self) -> list[asyncio.Task[Any]]:
        """Tasks that must finish before the cache closes (kept flights)."""
        return [task for task in self._kept if not task.done()]


def should_refresh_early(
    now_ms: int, fresh_until_ms: int, compute_us: int, rand: Callable[[], float] = random.random
) -> bool:
    """Probabilistic early expiration (XFetch).

    Each reader refreshes with a probability that rises as expiry nears, scaled by how
    long the value took to compute, so that one reader refreshes a hot key shortly
    before it expires instead of every reader stampeding just after.
    """
    if compute_us <= 0:
        return False
    r = rand()
    if r <= 0.0:
        return True
    head_start_ms = -(compute_us / 1000.0) * math.log(r)
    return now_ms + head_start_ms >= fresh_until_ms
