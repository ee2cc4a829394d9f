"""Cache eviction policies replayed by ``hit_ratio.py``: measurement tools, not library code.

Each policy is a class built with a capacity (in entries) whose ``run(trace)`` replays a
sequence of integer keys, admitting every missed key as if it had just been computed,
and returns the number of hits. The loops bind attributes to locals and inline the
small steps: a replay of a million requests in pure Python is seconds, not minutes.

Written from the published descriptions: LRU; in-cache LFU with O(1) frequency buckets
(Shah, Mitra and Matani 2010); W-TinyLFU (Einziger, Friedman and Manes, "TinyLFU: A
Highly Efficient Cache Admission Policy", 2017) and the hill climber that sizes its
window (Einziger et al., "Adaptive Software Cache Management", Middleware 2018, as
Caffeine describes it in its design notes); Bélády's MIN (1966).
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Sequence

__all__ = ["LFU", "LRU", "POLICIES", "Belady", "FrequencySketch", "WTinyLFU"]

_M64 = (1 << 64) - 1
_HALVE = bytes(i >> 1 for i in range(256))


class LRU:
    """Exact LRU: a hit moves the key to the most recent end; a miss evicts the oldest."""

    name = "LRU"

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity

    def run(self, trace: Sequence[int]) -> int:
        data: OrderedDict[int, None] = OrderedDict()
        move, pop, cap = data.move_to_end, data.popitem, self.capacity
        hits = 0
        for k in trace:
            if k in data:
                move(k)
                hits += 1
            else:
                data[k] = None
                if len(data) > cap:
                    pop(last=False)
        return hits


class LFU:
    """In-cache LFU: evict the least frequently used key, the oldest of them on a tie.

    Counts are kept for resident keys only (an evicted key starts again at 1), which is
    what LFU caches in libraries do; a tie goes to the key that reached that count first,
    so a newcomer is not the next victim ahead of older keys seen as rarely.
    """

    name = "LFU"

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity

    def run(self, trace: Sequence[int]) -> int:
        freq: dict[int, int] = {}
        buckets: dict[int, OrderedDict[int, None]] = {}  # count -> keys, first to reach it first
        cap, lowest, hits = self.capacity, 1, 0
        for k in trace:
            f = freq.get(k)
            if f is not None:
                hits += 1
                bucket = buckets[f]
                del bucket[k]
                if not bucket:
                    del buckets[f]
                    if lowest == f:
                        lowest = f + 1
                freq[k] = f = f + 1
                up = buckets.get(f)
                if up is None:
                    buckets[f] = up = OrderedDict()
                up[k] = None
                continue
            if len(freq) >= cap:
                bucket = buckets[lowest]
                victim, _ = bucket.popitem(last=False)
                if not bucket:
                    del buckets[lowest]
                del freq[victim]
            freq[k] = 1
            ones = buckets.get(1)
            if ones is None:
                buckets[1] = ones = OrderedDict()
            ones[k] = None
            lowest = 1
        return hits


class FrequencySketch:
    """Count-min sketch of 4 rows of 4-bit counters, halved every ``10 x capacity`` additions.

    Each row holds the next power of two at or above ``4 x capacity`` counters (one byte
    each here, saturating at 15 as a nibble would), indexed by double hashing of a 64-bit
    mix of the key. Halving every counter once the sample is full ages old popularity
    out, which is what lets TinyLFU follow a shifting distribution.
    """

    def __init__(self, capacity: int) -> None:
        self.width = 1 << max(4, (4 * capacity - 1).bit_length())
        self.mask = self.width - 1
        self.table = bytearray(4 * self.width)
        self.sample_size = 10 * capacity
        self.additions = 0

    def _slots(self, key: int) -> tuple[int, int, int, int]:
        h = ((key + 0x632BE59BD9B4E019) * 0x9E3779B97F4A7C15) & _M64
        h ^= h >> 29
        h = (h * 0xBF58476D1CE4E5B9) & _M64
        h ^= h >> 32
        mask, width = self.mask, self.width
        step = (h >> 24) | 1  # odd: the four rows never share a column pattern
        return (
            h & mask,
            width + ((h + step) & mask),
            2 * width + ((h + 2 * step) & mask),
            3 * width + ((h + 3 * step) & mask),
        )

    def increment(self, key: int) -> None:
        table = self.table
        added = False
        for slot in self._slots(key):
            if table[slot] < 15:
                table[slot] += 1
                added = True
        if added:
            self.additions += 1
            if self.additions >= self.sample_size:
                self.table = bytearray(table.translate(_HALVE))
                self.additions //= 2

    def estimate(self, key: int) -> int:
        table = self.table
        a, b, c, d = self._slots(key)
        return min(table[a], table[b], table[c], table[d])


class WTinyLFU:
    """W-TinyLFU: a window LRU in front of a segmented LRU guarded by a TinyLFU filter.

    A new key enters the window (1 % of the capacity). The window's LRU key is the
    candidate for the main area (a segmented LRU, 20 % probation and 80 % protected);
    while the main area is full it replaces the probation's LRU key only if the sketch
    estimates it more frequent than that victim, else it is dropped. A probation hit
    moves the key to the protected segment, whose overflow falls back to probation.

    ``adaptive=True`` adds the hill climber: every sample period (10 x capacity
    requests) it compares the period's hit ratio with the last one, keeps walking the
    window size in the same direction if the ratio did not fall and turns round if it
    did. A step starts at 6.25 % of the capacity, is restored to that after a change of
    5 points or more in the hit ratio, and otherwise shrinks by 2 % each period. The first
    step grows the window. Resizing moves keys between the window and the main area
    (from the LRU ends), as Caffeine does, so nothing is evicted by it.
    """

    WINDOW = 0.01
    PROTECTED = 0.8
    STEP = 0.0625
    RESTART = 0.05
    DECAY = 0.98

    def __init__(self, capacity: int, *, adaptive: bool = False) -> None:
        if capacity < 2:
            raise ValueError("W-TinyLFU needs room for a window and a main area")
        self.capacity = capacity
        self.adaptive = adaptive
        self.name = "W-TinyLFU, hill climber" if adaptive else "W-TinyLFU (1 % window)"
        self.window_max = max(1, round(self.WINDOW * capacity))
        self.sketch = FrequencySketch(capacity)
        self.window: OrderedDict[int, None] = OrderedDict()
        self.probation: OrderedDict[int, None] = OrderedDict()
        self.protected: OrderedDict[int, None] = OrderedDict()
        self.window_sizes: list[int] = []  # the window's size after each climb, for reports

    @property
    def main_max(self) -> int:
        return self.capacity - self.window_max

    def run(self, trace: Sequence[int]) -> int:
        window, probation, protected = self.window, self.probation, self.protected
        increment, estimate = self.sketch.increment, self.sketch.estimate
        period = 10 * self.capacity if self.adaptive else len(trace) + 1
        hits = sampled = 0
        previous, step, direction = 0.0, self.STEP * self.capacity, 1
        window_max, main_max = self.window_max, self.main_max
        protected_max = int(self.PROTECTED * main_max)
        target = float(window_max)  # fractional: decayed steps are smaller than a key
        for n, k in enumerate(trace, 1):
            increment(k)
            if k in window:
                window.move_to_end(k)
                hits += 1
            elif k in protected:
                protected.move_to_end(k)
                hits += 1
            elif k in probation:
                del probation[k]
                protected[k] = None
                if len(protected) > protected_max:
                    probation[protected.popitem(last=False)[0]] = None
                hits += 1
            else:
                window[k] = None
                if len(window) > window_max:
                    candidate = window.popitem(last=False)[0]
                    if len(probation) + len(protected) < main_max:
                        probation[candidate] = None
                    else:
                        victims = probation or protected
                        victim = next(iter(victims))
                        if estimate(candidate) > estimate(victim):
                            del victims[victim]
                            probation[candidate] = None
            if n % period:
                continue
            # Hill climbing: one sample period has ended.
            ratio = (hits - sampled) / period
            change = ratio - previous
            previous, sampled = ratio, hits
            if change < 0:
                direction = -direction
            step = self.STEP * self.capacity if abs(change) >= self.RESTART else step * self.DECAY
            target = min(max(target + direction * step, 1.0), self.capacity - 1.0)
            window_max = round(target)
            main_max = self.capacity - window_max
            protected_max = int(self.PROTECTED * main_max)
            while len(probation) + len(protected) > main_max:  # window grew
                window[(probation or protected).popitem(last=False)[0]] = None
            while len(window) > window_max:  # window shrank: main has the room
                probation[window.popitem(last=False)[0]] = None
            while len(protected) > protected_max:
                probation[protected.popitem(last=False)[0]] = None
            self.window_sizes.append(window_max)
        self.window_max = window_max
        return hits


class Belady:
    """Bélády's MIN, offline: on a miss with a full cache, drop whichever of the resident
    keys and the newcomer is next used farthest in the future (a key never used again
    counts as farthest). The next-use index is computed once by one backward pass."""

    name = "Bélády optimum"

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity

    @staticmethod
    def next_uses(trace: Sequence[int]) -> list[int]:
        never = len(trace)
        following = [never] * len(trace)
        seen: dict[int, int] = {}
        for i in range(len(trace) - 1, -1, -1):
            k = trace[i]
            following[i] = seen.get(k, never)
            seen[k] = i
        return following

    def run(self, trace: Sequence[int]) -> int:
        following = self.next_uses(trace)
        resident: dict[int, int] = {}  # key -> position of its next use
        farthest: list[tuple[int, int]] = []  # (-next use, key), stale entries skipped
        push, pop, cap, hits = heapq.heappush, heapq.heappop, self.capacity, 0
        for i, k in enumerate(trace):
            nxt = following[i]
            if k in resident:
                hits += 1
            elif len(resident) >= cap:
                while True:
                    neg, victim = farthest[0]
                    if resident.get(victim) == -neg:
                        break
                    pop(farthest)
                if -neg <= nxt:
                    continue  # the newcomer is needed last: keep the cache as it is
                pop(farthest)
                del resident[victim]
            resident[k] = nxt
            push(farthest, (-nxt, k))
        return hits


POLICIES = {
    "lru": LRU,
    "lfu": LFU,
    "wtinylfu": WTinyLFU,
    "wtinylfu-climb": lambda capacity: WTinyLFU(capacity, adaptive=True),
    "belady": Belady,
}
