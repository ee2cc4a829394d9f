"""Hit ratios of eviction policies, and of memo's memory tier, on synthetic key traces.

    python benchmarks/hit_ratio.py [--quick] [--requests N] [--jobs N] [--seed N]

Replays seeded traces of integer keys (a universe of 100 000 keys, 1 000 000 requests each)
against caches holding 1 % and 5 % of the universe, and prints one table per trace:
the hit ratio of exact LRU, in-cache LFU, W-TinyLFU with a 1 % window, W-TinyLFU whose
window a hill climber sizes, memo's ``MemoryBackend`` (driven through ``get_local`` and
``set_local``, so its own eviction is measured, not a model of it) and Bélády's offline
optimum, which bounds every online policy from above. The last row is memo's ratio minus
the best of LRU, LFU and the two W-TinyLFUs: the goal is a difference >= 0 on every trace.

Traces (keys are drawn with ``random`` and ``bisect`` over cumulative Zipf weights,
``weight(rank) = 1 / rank ** s``, and a seeded permutation maps ranks to keys):

- ``zipf``: Zipf s = 0.9, independent requests: the textbook skewed workload.
- ``zipf+scan``: the same, with a burst of 20 000 keys never seen before and never seen
  again after every 100 000 requests (a batch job, a crawler, a cache-warming sweep):
  a policy that admits every newcomer flushes its hot keys for nothing.
- ``shift``: Zipf 0.9, then after half the trace a fresh permutation: yesterday's hot
  keys go cold at once and new ones take over, so stale frequency must age out.
- ``conversations``: 30 % of requests go to 10 000 evergreen keys (Zipf 0.9: system prompts,
  popular pages and products); the rest follow the other 90 000 keys as they appear,
  one after another through the trace, each re-read for a while after its arrival and
  ever less often: the request picks an age, in arrivals, with weight 1 / age up to 2 000.
  This is the workload of a cache in front of an AI service or a web app serving
  conversations and logged-in visits: a conversation's context, retrieved passages and
  tool results are asked for again on every turn for minutes and then never; a visitor's
  profile, cart and permissions likewise. The reuse is recent, not frequent: LFU and a
  policy that makes a newcomer prove its frequency before admission can lose to LRU here,
  which is why an adaptive window matters, and why this trace guards a new policy chosen
  on the Zipf traces against a regression where LRU does well.

The replays of each (trace, capacity, policy) run in a pool of worker processes (one per
core by default); every worker builds its traces from the seed, so the numbers do not
depend on the number of workers. Under a minute on 2 cores; ``--quick`` is 200 000 requests
per trace. The exit code is 0 whatever the numbers.
"""

from __future__ import annotations

import argparse
import bisect
import functools
import os
import random
import sys
import time
import traceback
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from itertools import accumulate
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's memo first

from _policies import POLICIES, WTinyLFU

from memo._options import MemoryOptions
from memo.backends.memory import MemoryBackend
from memo.testing import FakeClock

DISTINCT = 100_000
SKEW = 0.9
SCAN_EVERY, SCAN_LENGTH = 100_000, 20_000
EVERGREEN, EVERGREEN_SHARE, MAX_AGE = 10_000, 0.3, 2_000
CAPACITIES = (0.01, 0.05)
TRACES = ("zipf", "zipf+scan", "shift", "conversations")
ORDER = ("lru", "lfu", "wtinylfu", "wtinylfu-climb", "memo", "belady")
LABELS = {
    "lru": "LRU",
    "lfu": "LFU (in-cache, oldest on a tie)",
    "wtinylfu": "W-TinyLFU (1 % window)",
    "wtinylfu-climb": "W-TinyLFU, hill climber",
    "memo": "memo MemoryBackend",
    "belady": "Bélády optimum (offline)",
}
ONLINE = ("lru", "lfu", "wtinylfu", "wtinylfu-climb")  # the bar memo is held to
TTL_MS = 10**9  # long enough that nothing expires: the clock never moves anyway
VALUE = b"x" * 32


# --- traces -----------------------------------------------------------------------------


def zipf_sampler(n: int, rnd: random.Random) -> tuple[list[int], list[float]]:
    """A permutation of ``range(n)`` (rank -> key) and the cumulative Zipf weights."""
    keys = list(range(n))
    rnd.shuffle(keys)
    return keys, list(accumulate(1.0 / r**SKEW for r in range(1, n + 1)))


def draw(keys: list[int], cum: list[float], count: int, rnd: random.Random) -> list[int]:
    total, last, uniform = cum[-1], len(cum) - 1, rnd.random
    return [keys[bisect.bisect(cum, uniform() * total, 0, last)] for _ in range(count)]


def zipf_trace(requests: int, seed: int) -> list[int]:
    rnd = random.Random(seed)
    return draw(*zipf_sampler(DISTINCT, rnd), requests, rnd)


def scan_trace(requests: int, seed: int) -> list[int]:
    rnd = random.Random(seed)
    keys, cum = zipf_sampler(DISTINCT, rnd)
    trace: list[int] = []
    fresh = DISTINCT  # scan keys lie above the Zipf keys: each is requested once
    while len(trace) < requests:
        trace += draw(keys, cum, min(SCAN_EVERY, requests - len(trace)), rnd)
        burst = min(SCAN_LENGTH, requests - len(trace))
        trace += range(fresh, fresh + burst)
        fresh += burst
    return trace


def shift_trace(requests: int, seed: int) -> list[int]:
    rnd = random.Random(seed)
    first = draw(*zipf_sampler(DISTINCT, rnd), requests // 2, rnd)
    return first + draw(*zipf_sampler(DISTINCT, rnd), requests - len(first), rnd)


def conversations_trace(requests: int, seed: int) -> list[int]:
    rnd = random.Random(seed)
    keys, cum = zipf_sampler(EVERGREEN, rnd)
    total, last = cum[-1], len(cum) - 1
    ages = list(accumulate(1.0 / a for a in range(1, MAX_AGE + 1)))
    fresh_keys = DISTINCT - EVERGREEN
    fresh_requests = requests * (1 - EVERGREEN_SHARE)
    arrival = fresh_keys / fresh_requests  # chance that such a request is a new key
    uniform, search = rnd.random, bisect.bisect
    trace: list[int] = []
    arrived = 0  # fresh keys so far: key EVERGREEN + i is the i-th to arrive
    for _ in range(requests):
        if uniform() < EVERGREEN_SHARE:
            trace.append(keys[search(cum, uniform() * total, 0, last)])
        elif arrived == 0 or (arrived < fresh_keys and uniform() < arrival):
            trace.append(EVERGREEN + arrived)
            arrived += 1
        else:
            span = min(arrived, MAX_AGE)
            age = search(ages, uniform() * ages[span - 1], 0, span - 1)  # 0 = the newest
            trace.append(EVERGREEN + arrived - 1 - age)
    return trace


BUILDERS = {
    "zipf": zipf_trace,
    "zipf+scan": scan_trace,
    "shift": shift_trace,
    "conversations": conversations_trace,
}


@functools.lru_cache(maxsize=2)
def trace_of(name: str, requests: int, seed: int) -> list[int]:
    # One seed per trace, derived from the run's seed by a fixed rule (not hash(): strings
    # hash differently in every process).
    return BUILDERS[name](requests, seed * 1_000 + TRACES.index(name))


# --- replays ----------------------------------------------------------------------------


def replay_memo(trace: Sequence[int], capacity: int) -> int:
    """Hits of memo's memory tier: a miss stores the value, as a cached call would."""
    tier = MemoryBackend(MemoryOptions(memory_cache_size=capacity), clock=FakeClock())
    names = [f"k:{k}" for k in range(max(trace) + 1)]
    get, put, hits = tier.get_local, tier.set_local, 0
    for k in trace:
        key = names[k]
        if get(key) is None:
            put(key, VALUE, TTL_MS)
        else:
            hits += 1
    return hits


def replay(job: tuple[str, int, str, int, int]) -> tuple[str, int, str, float, float, str]:
    """One (trace, capacity, policy): its hit ratio, the seconds it took and a note."""
    trace_name, capacity, policy, requests, seed = job
    trace = trace_of(trace_name, requests, seed)
    started = time.perf_counter()
    note = ""
    if policy == "memo":
        hits = replay_memo(trace, capacity)
    else:
        cache = POLICIES[policy](capacity)
        hits = cache.run(trace)
        if isinstance(cache, WTinyLFU) and cache.adaptive and cache.window_sizes:
            sizes = cache.window_sizes
            note = f"window {min(sizes)}-{max(sizes)}, last {sizes[-1]} of {capacity}"
    elapsed = time.perf_counter() - started
    return trace_name, capacity, policy, hits / len(trace), elapsed, note


# --- report -----------------------------------------------------------------------------


def report(
    name: str,
    trace: Sequence[int],
    capacities: Sequence[int],
    ratios: dict[tuple[int, str], float],
    notes: dict[tuple[int, str], str],
) -> list[float]:
    distinct = len(set(trace))
    print(f"\nTrace {name}: {len(trace):,} requests, {distinct:,} distinct keys")
    heads = [f"{c / DISTINCT:.0%} ({c:,})" for c in capacities]
    print(f"  {'policy':<33}" + "".join(f"{h:>14}" for h in heads))
    for policy in ORDER:
        cells = "".join(f"{ratios[c, policy]:>14.2%}" for c in capacities)
        extra = "; ".join(notes[c, policy] for c in capacities if notes.get((c, policy)))
        print(f"  {LABELS[policy]:<33}{cells}  {extra}".rstrip())
    gaps, cells, bests = [], "", []
    for c in capacities:
        best = max(ONLINE, key=lambda p: ratios[c, p])
        gap = ratios[c, "memo"] - ratios[c, best]
        gaps.append(gap)
        cells += f"{gap * 100:>+11.2f} pp"
        bests.append(f"{c / DISTINCT:.0%}: {LABELS[best]}")
    print(f"  {'memo - best online policy':<33}{cells}  (best: {'; '.join(bests)})")
    return gaps


def main(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    capacities = [round(f * DISTINCT) for f in CAPACITIES]
    print("memo hit-ratio benchmark: eviction policies replayed on synthetic traces")
    sizes = ", ".join(f"{c:,}" for c in capacities)
    print(
        f"  Python {sys.version.split()[0]}; {args.requests:,} requests per trace, seed {args.seed};"
    )
    print(f"  capacities {sizes} entries; {args.jobs} worker processes. A hit ratio counts")
    print("  every request of the trace, cold misses included; capacities are fractions of")
    print(f"  the {DISTINCT:,} keys a trace draws from (the tail of a Zipf trace is rarely drawn).")
    jobs = [
        (t, c, p, args.requests, args.seed)
        for t in TRACES
        for c in sorted(capacities, reverse=True)
        for p in ("wtinylfu-climb", "wtinylfu", "lfu", "belady", "memo", "lru")
    ]
    ratios: dict[str, dict[tuple[int, str], float]] = {t: {} for t in TRACES}
    notes: dict[str, dict[tuple[int, str], str]] = {t: {} for t in TRACES}
    seconds: dict[str, float] = dict.fromkeys(ORDER, 0.0)
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        for t, c, p, ratio, elapsed, note in pool.map(replay, jobs):
            ratios[t][c, p] = ratio
            notes[t][c, p] = note
            seconds[p] += elapsed
    gaps = []
    for t in TRACES:
        gaps += report(t, trace_of(t, args.requests, args.seed), capacities, ratios[t], notes[t])
    met = sum(g >= 0 for g in gaps)
    print(f"\nGoal (informational): memo >= the best online policy in {met} of {len(gaps)} cases;")
    print(f"  worst gap {min(gaps) * 100:+.2f} percentage points.")
    cpu = ", ".join(f"{p} {s:.0f} s" for p, s in seconds.items())
    print(f"  replay seconds summed over workers: {cpu}")
    print(f"  wall time {time.perf_counter() - started:.0f} s")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--requests", type=int, default=None, help="per trace (1 000 000)")
    ap.add_argument("--quick", action="store_true", help="200 000 requests per trace")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="worker processes")
    ap.add_argument("--seed", type=int, default=1, help="seed of every trace (1)")
    args = ap.parse_args(argv)
    args.requests = args.requests or (200_000 if args.quick else 1_000_000)
    return args


if __name__ == "__main__":
    try:
        main(parse())
    except Exception:  # a broken policy prints its traceback; the exit code stays 0
        traceback.print_exc()
    sys.exit(0)
