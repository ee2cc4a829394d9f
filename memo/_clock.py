"""Time sources. The core never reads the clock itself: it is handed one of these."""

from __future__ import annotations

import time
from collections.abc import Callable

#: A callable returning monotonic seconds (``time.monotonic`` or ``memo.testing.FakeClock``).
Clock = Callable[[], float]


class WallClock:
    """Epoch milliseconds derived from a monotonic clock.

    Envelopes carry wall-clock stamps so that other processes can read them, but tests
    inject one monotonic clock for everything. Anchoring the epoch once and advancing it
    with the injected clock gives both: real stamps in production (immune to NTP steps
    after start), and stamps that move with ``FakeClock.advance`` in tests.
    """

    __slots__ = ("_anchor_mono", "_anchor_ms", "clock")

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self.clock = clock
        self._anchor_mono = clock()
        self._anchor_ms = time.time() * 1000.0

    def now_ms(self) -> int:
        return int(self._anchor_ms + (self.clock() - self._anchor_mono) * 1000.0)
