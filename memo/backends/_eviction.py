"""Which entry a full memory tier drops: two FIFO queues, a frequency counter per
entry, and the recently evicted keys remembered by hash.

The policy is S3-FIFO (Yang et al., SOSP 2023) with the share of its small queue
adapted the way ARC adapts its lists (Megiddo and Modha, FAST 2003):

- A new key enters the *small* queue. When it reaches the head, it moves to the *main*
  queue if it was hit meanwhile, else it is dropped and its hash is remembered. So a
  stream of one-off keys (a scan, a crawler) passes through the small queue without
  pushing out what is hit again and again.
- At the head of the main queue an entry hit since its last pass goes round again, its
  count lowered by one (counts stop at 6); one not hit is dropped, its hash remembered.
  Frequently hit entries stay, as in LFU, while stale popularity ages out one pass at a
  time, as in LRU.
- A miss on a key dropped from the small queue lately goes straight to the main queue
  (it has come back: it deserves a place), and tells the policy the small queue was too
  short; a miss on one dropped from the main queue tells it the main queue was. The
  small queue's share walks between 0.5 % and 25 % of the entries accordingly: small on
  skewed, stable traffic (frequency wins), large where keys are reread for a while
  after they first appear and then never (recency wins).

A hit costs one comparison and one store on the entry (no reordering, no lock); all
the work is done when an entry is added. ``benchmarks/hit_ratio.py`` compares it with
LRU, LFU, W-TinyLFU and the offline optimum on the traces that motivate each choice.
"""

from __future__ import annotations

from array import array
from collections import deque

__all__ = ["GONE", "MAIN", "MAX_FREQUENCY", "SMALL", "AdaptiveFifo", "Entry"]

#: A hit counter stops here: six passes of the main queue without a hit drop an entry.
#: (On benchmarks/hit_ratio.py, 6 against 3 gained 0.1 to 0.3 points on the Zipf
#: traces and lost 0.2 at 1 % on conversations, still 2.6 points ahead there.)
MAX_FREQUENCY = 6

SMALL, MAIN, GONE = 0, 1, 2


class Entry(float):
    """One stored value. ``freq`` counts hits (to ``MAX_FREQUENCY``); ``queue`` says
    where it is (``SMALL``, ``MAIN``, or ``GONE`` once removed from the tier).

    The float an entry is, is its deadline (in seconds of the tier's clock), so a hit
    compares ``clock() < entry``. That keeps the deadline inside the entry: one object
    of 80 bytes instead of an entry and a float of 32, and one place in memory fewer
    for a hit to reach, which is what a hit on a large tier pays for (a deadline never
    changes: a new value is a new entry). Entries are told apart by identity only: two
    with one deadline are equal as floats, so they belong in no set and are never
    compared with ``==``.
    """

    __slots__ = ("freq", "key", "queue", "value")

    key: str
    value: bytes
    freq: int
    queue: int

    def __new__(cls, key: str, value: bytes, deadline: float) -> Entry:
        self = float.__new__(cls, deadline)
        self.key = key
        self.value = value
        self.freq = 0
        self.queue = SMALL
        return self

    @property
    def deadline(self) -> float:
        return float(self)

    def __repr__(self) -> str:
        return f"Entry({self.key!r}, {len(self.value)} bytes, deadline={float(self)})"


_GOLDEN = 0x9E3779B97F4A7C15  # odd, with well-mixed bits: a second hash by multiplying
_MASK = (1 << 64) - 1


class Ghosts:
    """The hashes of the last ``size`` keys dropped, approximately.

    A ring of hashes in order of eviction, and a counting filter over them (three probes,
    by double hashing, into 16 one-byte counters a slot): about 24 bytes a remembered
    key, and a false "seen" for about 0.5 % of the keys never dropped.
    """

    __slots__ = ("_at", "_counts", "_ring", "_slots")

    def __init__(self, size: int) -> None:
        size = max(1, size)
        self._ring = array("q", bytes(8 * size))
        self._at = 0
        self._slots = 16 * size
        self._counts = bytearray(self._slots)

    def _probes(self, h: int) -> tuple[int, int, int]:
        slots, step = self._slots, (h * _GOLDEN) & _MASK | 1
        return h % slots, (h + step) % slots, (h + 2 * step) % slots

    def add(self, h: int) -> None:
        h = h or 1  # 0 marks an empty slot of the ring
        ring, counts = self._ring, self._counts
        old = ring[self._at]
        if old:
            for i in self._probes(old):
                if 0 < counts[i] < 255:  # a saturated counter stays: it cannot be undone
                    counts[i] -= 1
        ring[self._at] = h
        self._at = (self._at + 1) % len(ring)
        for i in self._probes(h):
            if counts[i] < 255:
                counts[i] += 1

    def __contains__(self, h: int) -> bool:
        counts = self._counts
        a, b, c = self._probes(h or 1)
        return bool(counts[a] and counts[b] and counts[c])


class AdaptiveFifo:
    """The queues of one memory tier (see the module doc). Not thread-safe: the tier
    calls it under its lock. Removed entries are only marked ``GONE`` and skipped when
    they reach a head; the queues are compacted when such leftovers outnumber the live
    entries, so they never hold more than twice what is live (or old values for long)."""

    #: The small queue's share of the entries: where it starts, and its bounds.
    # (benchmarks/hit_ratio.py: a ceiling of 50 % let the small queue grow too long on
    # skewed traces at 5 % capacity; 25 % cost them 0.25 points less and conversations
    # nothing, on a second seed too.)
    START, LOWEST, HIGHEST = 0.10, 0.005, 0.25
    #: How many keys dropped from the small queue are remembered, per entry of capacity.
    # (benchmarks/hit_ratio.py, worst gap to the best other policy over its eight cases:
    # 1.0 -0.04 points, 0.75 +0.02, 0.85 +0.06, 0.9 +0.06, 1.5 -2.09; a shorter memory
    # readmits fewer keys that were one-offs after all, which Zipf traces reward, while
    # conversations want keys reread after a while to come back.)
    SMALL_GHOSTS = 0.85

    def __init__(self, capacity: int) -> None:
        self.capacity = max(1, capacity)
        self.small: deque[Entry] = deque()
        self.main: deque[Entry] = deque()
        self.small_live = 0
        self.main_live = 0
        self._leftovers = 0
        self.small_target = self.START * self.capacity
        # Made at the first eviction (48 bytes per entry of capacity): a tier that never
        # fills never pays for them.
        self._small_ghosts: Ghosts | None = None
        self._main_ghosts: Ghosts | None = None

    def __len__(self) -> int:
        return self.small_live + self.main_live

    def add(self, entry: Entry) -> None:
        """A new entry (its key missed): to the small queue, or to the main queue if its
        key was dropped from the small queue lately."""
        small_ghosts, main_ghosts = self._small_ghosts, self._main_ghosts
        if small_ghosts is not None and main_ghosts is not None:  # something was dropped
            h = hash(entry.key)
            step = max(1.0, self.capacity / 1000)
            if h in small_ghosts:
                self.small_target = min(self.HIGHEST * self.capacity, self.small_target + step)
                entry.queue = MAIN
                self.main.append(entry)
                self.main_live += 1
                return
            if h in main_ghosts:
                self.small_target = max(self.LOWEST * self.capacity, self.small_target - step)
        entry.queue = SMALL
        self.small.append(entry)
        self.small_live += 1

    def removed(self, entry: Entry) -> None:
        """``entry`` left the tier (deleted, replaced, expired): forget it."""
        if entry.queue == SMALL:
            self.small_live -= 1
        elif entry.queue == MAIN:
            self.main_live -= 1
        else:
            return
        entry.queue = GONE
        self._leftovers += 1
        # Removed entries stay in their queue until eviction passes them or the queues
        # are rebuilt, here once they outnumber the live ones: each rebuild is paid for
        # by as many removals, and the queues never hold more than twice what is live.
        if self._leftovers > 64 and self._leftovers > self.small_live + self.main_live:
            self._compact()

    def evict(self) -> Entry | None:
        """Choose the entry to drop, take it out of the queues and return it (None when
        there is none)."""
        small, main = self.small, self.main
        while self.small_live or self.main_live:
            if self.small_live and (self.small_live >= self.small_target or not self.main_live):
                entry = small.popleft()
                if entry.queue != SMALL:
                    self._leftovers -= 1
                    continue
                self.small_live -= 1
                if entry.freq:  # hit while new: it has earned a place
                    entry.freq = 0
                    entry.queue = MAIN
                    main.append(entry)
                    self.main_live += 1
                    continue
                self._ghosts()[0].add(hash(entry.key))
            else:
                entry = main.popleft()
                if entry.queue != MAIN:
                    self._leftovers -= 1
                    continue
                if entry.freq:
                    entry.freq -= 1
                    main.append(entry)
                    continue
                self.main_live -= 1
                self._ghosts()[1].add(hash(entry.key))
            entry.queue = GONE
            return entry
        return None

    def _ghosts(self) -> tuple[Ghosts, Ghosts]:
        """The evicted keys of the small queue and of the main queue, made when needed:
        at the first eviction, for as many keys as the tier holds then. A tier bounded
        by bytes before entries holds fewer than its capacity says, and the queues'
        shares follow what it holds (a capacity of 10**8 entries must not allocate
        4.8 GB of remembered keys)."""
        if self._small_ghosts is None or self._main_ghosts is None:
            held = max(1, len(self))
            if held < self.capacity:
                self.small_target *= held / self.capacity
                self.capacity = held
            self._small_ghosts = Ghosts(int(self.capacity * self.SMALL_GHOSTS))
            self._main_ghosts = Ghosts(self.capacity)
        return self._small_ghosts, self._main_ghosts

    def clear(self) -> None:
        for queue in (self.small, self.main):
            for entry in queue:
                entry.queue = GONE
            queue.clear()
        self.small_live = self.main_live = self._leftovers = 0

    def _compact(self) -> None:
        self.small = deque(e for e in self.small if e.queue == SMALL)
        self.main = deque(e for e in self.main if e.queue == MAIN)
        self._leftovers = 0
