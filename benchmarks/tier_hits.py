"""What a hit on memo's memory tier costs beside a hit on a plain exact LRU.

    python benchmarks/tier_hits.py [--rounds N] [--entries N ...]

The LRU is the smallest tier that keeps exact recency and exact TTLs: an ``OrderedDict``
of (value, deadline), a hit moving its key to the end (what memo's tier did before it
had an eviction policy). Both are filled with the same keys and read through
``get_local`` with the same sequence of keys, hot (1 000 keys) and spread over all.
Rounds are interleaved; each reports thread CPU time per hit, medians and best rounds,
and memo's ratio to the LRU. The exit code is 0 whatever the numbers.
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import sys
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's memo first

from memo._options import MemoryOptions
from memo.backends.memory import MemoryBackend


class PlainLRU:
    """Exact LRU with deadlines: the reference hit."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._data: OrderedDict[str, tuple[bytes, float]] = OrderedDict()
        self._clock = clock

    def set_local(self, key: str, value: bytes, ttl_ms: int) -> None:
        self._data[key] = (value, self._clock() + ttl_ms / 1000)

    def get_local(self, key: str) -> bytes | None:
        item = self._data.get(key)
        if item is None:
            return None
        if self._clock() >= item[1]:
            del self._data[key]
            return None
        try:  # noqa: SIM105 - as a thread-safe tier must
            self._data.move_to_end(key)
        except KeyError:
            pass
        return item[0]


def timed(get: Callable[[str], bytes | None], keys: list[str]) -> float:
    gc.disable()
    try:
        start = time.thread_time_ns()
        for key in keys:
            get(key)
        return (time.thread_time_ns() - start) / len(keys) / 1000
    finally:
        gc.enable()


def main(args: argparse.Namespace) -> None:
    value = b"x" * 60
    print(f"Memory-tier hits, thread CPU µs per hit, {args.rounds} interleaved rounds")
    print(f"  {'entries / keys hit':28} {'LRU med':>8} {'memo med':>9} {'best':>6} {'memo/LRU':>9}")
    for n in args.entries:
        names = [f"memo:bench:{i}" for i in range(n)]
        memo = MemoryBackend(MemoryOptions(memory_cache_size=n, memory_max_bytes=1 << 40))
        lru = PlainLRU()
        for name in names:
            memo.set_local(name, value, 3_600_000)
            lru.set_local(name, value, 3_600_000)
        rnd = random.Random(n)
        hot = names[:: max(1, n // 1000)][:1000]
        for label, pool in (("hot 1 000", hot), ("uniform", names)):
            keys = [rnd.choice(pool) for _ in range(args.batch)]
            lru_us: list[float] = []
            memo_us: list[float] = []
            for r in range(args.rounds):
                order = [(lru.get_local, lru_us), (memo.get_local, memo_us)]
                for get, out in order if r % 2 else order[::-1]:
                    out.append(timed(get, keys))
            lm, mm = statistics.median(lru_us), statistics.median(memo_us)
            print(
                f"  {f'{n:,} / {label}':28} {lm:8.3f} {mm:9.3f} {min(memo_us):6.3f} {mm / lm:8.2f}x"
            )


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rounds", type=int, default=21)
    ap.add_argument("--batch", type=int, default=200_000)
    ap.add_argument("--entries", type=int, nargs="+", default=[1_000, 1_000_000])
    return ap.parse_args(argv)


if __name__ == "__main__":
    main(parse())
