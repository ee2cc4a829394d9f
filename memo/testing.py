"""Helpers for testing code that uses memo: a clock you move by hand."""

from __future__ import annotations

__all__ = ["FakeClock"]


class FakeClock:
    """A monotonic clock that only moves when told to.

    Pass it as ``clock=`` to a cache, backend or factory method, then ``advance()`` it
    instead of sleeping::

        clock = FakeClock()
        cache = InMemoryCache(clock=clock)
        await cache.set("k", 1, ttl=10)
        clock.advance(10)
        assert await cache.get("k") is None
    """

    __slots__ = ("_now",)

    def __init__(self, start: float = 1_000.0) -> None:
        self._now = float(start)

    def __call__(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds`` (never backward: monotonic clocks don't)."""
        if seconds < 0:
            raise ValueError(f"FakeClock.advance(seconds={seconds!r}): seconds must be >= 0")
        self._now += seconds

    def __repr__(self) -> str:
        return f"FakeClock(now={self._now!r})"
