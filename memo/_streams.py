"""Decorated async generators: a streamed reply recorded once, replayed as a stream.

The first caller of a cold key starts the upstream generator in a task (through the
cache's single-flight table, so leases, tags and the no-stale-set rule hold as for any
computation). The task records each chunk as it arrives and wakes every caller following
the stream; each follower gets every chunk from the first, as soon as it exists, as its
own copy. Only a stream that ends normally is stored (as the list of its chunks). When
upstream raises, every follower gets the chunks so far and then the error; when the last
follower leaves early (cancelled, or stopped iterating), the upstream generator is
closed, which stops the provider generating tokens nobody reads, and nothing is stored.

A hit replays the stored chunks in order, each an independent copy, optionally paced.
"""

from __future__ import annotations

import asyncio
import copy
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextvars import ContextVar
from typing import Any

from memo._flight import Flight
from memo._plan import CallPlan
from memo._switch import is_bypassed

__all__ = ["make_stream_call", "recording"]

#: The broadcast a computation records into; set around starting its flight (the task
#: copies the context), unset for an explicit ``refresh()``, which only collects.
_RECORDING: ContextVar[_Broadcast | None] = ContextVar("memo_recording", default=None)

_IMMUTABLE = frozenset({str, bytes, int, float, bool, type(None)})


def _copy(chunk: Any) -> Any:
    return chunk if type(chunk) in _IMMUTABLE else copy.deepcopy(chunk)


class _Broadcast:
    """The chunks of one upstream stream so far, and the callers following them."""

    __slots__ = ("abandoned", "chunks", "ended", "error", "flight", "followers", "task", "wake")

    def __init__(self) -> None:
        self.chunks: list[Any] = []
        self.ended = False
        self.error: BaseException | None = None
        self.followers = 0
        # Replaced on every change; a follower waits on the one it saw before looking.
        self.wake = asyncio.Event()
        self.task: asyncio.Task[Any] | None = None
        self.flight: Flight[Any] | None = None
        # Every follower left before the end: the computation is being cancelled, and
        # a new caller starts another instead of joining this one.
        self.abandoned = False

    def changed(self) -> None:
        event, self.wake = self.wake, asyncio.Event()
        event.set()

    async def follow(self) -> AsyncGenerator[Any, None]:
        """Every chunk from the first, each as this follower's own copy."""
        self.followers += 1
        i = 0
        try:
            while True:
                chunks = self.chunks
                while i < len(chunks):
                    yield _copy(chunks[i])
                    i += 1
                if self.ended:
                    return
                if self.error is not None:
                    raise self.error
                await self.wake.wait()
        finally:
            self.followers -= 1
            flight = self.flight
            alive = flight is not None and not flight.task.done()
            if self.followers == 0 and not self.ended and alive:
                self.abandoned = True
                flight.abandon()  # type: ignore[union-attr]  # nobody reads on: stop, store nothing

    def settle(self, flight: Flight[Any]) -> None:
        """The computation ended: wake followers with its outcome."""
        if not self.ended:
            if flight.error is not None:
                self.error = flight.error
            else:
                # Recorded elsewhere: another process's value, read under a lease.
                self.chunks = list(flight.result[0])  # type: ignore[index]  # set: no error
                self.ended = True
        self.changed()


def recording(upstream: Callable[..., AsyncIterator[Any]]) -> Callable[..., Any]:
    """The computation a stream's plan runs: drain ``upstream``, recording each chunk
    into the broadcast being followed (if any); return the list of chunks."""

    async def collect(*args: Any, **kwargs: Any) -> list[Any]:
        broadcast = _RECORDING.get()
        chunks: list[Any] = [] if broadcast is None else broadcast.chunks
        stream = upstream(*args, **kwargs)
        try:
            async for chunk in stream:
                chunks.append(chunk)
                if broadcast is not None:
                    broadcast.changed()
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()  # a cancelled stream runs its own finally blocks now
        if broadcast is not None:
            broadcast.ended = True  # followers finish now, not after the store
            broadcast.changed()
        return list(chunks)

    collect.__qualname__ = getattr(upstream, "__qualname__", "stream")
    return collect


def make_stream_call(
    plan: CallPlan,
    upstream: Callable[..., AsyncIterator[Any]],
    *,
    pace: float = 0.0,
    skip: Callable[[tuple[Any, ...], dict[str, Any]], bool] | None = None,
) -> Callable[..., AsyncGenerator[Any, None]]:
    """The call of a decorated async generator (``plan.func`` is ``recording(upstream)``).

    ``pace`` puts that many seconds between replayed chunks; ``skip(args, kwargs)``
    true runs a call uncached (the non-deterministic request policy).
    """
    # Broadcasts by full key, per event loop, while their computation runs.
    by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, _Broadcast]] = (
        weakref.WeakKeyDictionary()
    )

    async def uncached(args: tuple[Any, ...], kwargs: dict[str, Any]) -> AsyncIterator[Any]:
        plan.stats.bypassed += 1
        plan.resolve().count_bypassed()
        async for chunk in upstream(*args, **kwargs):
            yield chunk

    async def call(*args: Any, **kwargs: Any) -> AsyncGenerator[Any, None]:
        cache = plan.resolve()
        skipped = skip is not None and skip(args, kwargs)
        if skipped:
            plan.stats.nondeterministic += 1
        if skipped or plan.ai_off or is_bypassed():
            async for chunk in uncached(args, kwargs):
                yield chunk
            return
        full = cache.prefix + plan.keys(args, kwargs)
        entry = await cache.read_fresh_entry(full)
        if entry is not None and type(entry.value) is list:
            plan.count_hit(cache, entry.value)
            for i, chunk in enumerate(entry.value):
                if pace and i:
                    await asyncio.sleep(pace)
                yield chunk
            return
        loop = asyncio.get_running_loop()
        table = by_loop.get(loop)
        if table is None:
            table = by_loop[loop] = {}
        broadcast = table.get(full)
        running = cache.flights.running(full)
        joinable = (
            broadcast is not None
            and not broadcast.abandoned
            and running is not None
            and broadcast.task is running.task
        )
        if not joinable:
            plan.count_miss(cache)
            broadcast = _Broadcast()
            token = _RECORDING.set(broadcast)
            try:
                # Kept: aclose() waits for the store, which runs after the followers end.
                flight = cache.flights.start(
                    full, lambda f: plan.work(cache, f, full, args, kwargs), keep=True
                )
            finally:
                _RECORDING.reset(token)
            broadcast.flight, broadcast.task = flight, (task := flight.task)
            table[full] = broadcast

            def finished(
                task: asyncio.Task[Any], b: _Broadcast = broadcast, f: Flight[Any] = flight
            ) -> None:
                if table.get(full) is b:
                    del table[full]
                b.settle(f)  # settled by then: by fly(), or by the flight's own callback

            task.add_done_callback(finished)
        else:
            plan.count_join(cache)
        assert broadcast is not None
        async for chunk in broadcast.follow():
            yield chunk

    return call
