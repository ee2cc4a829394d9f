"""What one cached entry costs in memory: 10**6 calls of ``f(i)`` returning a small dict.

    python benchmarks/memory_per_entry.py [--entries N] [--rounds N]

Each contender runs in a fresh interpreter that imports everything first, then reads
its resident set size, fills its cache through the decorator with ``f(0) ... f(N-1)``
(each returns ``{"id": i, "name": "user-<i>", "roles": ["a", "b"]}``), collects garbage
and reads it again: the difference over N is the figure, counting the key, the value
as each library keeps it, and the library's own bookkeeping. Resident memory is used
rather than tracemalloc because cachebox allocates in Rust, where tracemalloc cannot
see. The "plain dict" row keeps the same results in a dict keyed by ``i``: the floor of
keeping Python values at all. The "dict, memo keys" row keeps them under keys shaped
like memo's (``memo:default:__main__.f:v1:<i>:<32 hex digits>``), with no entry,
deadline or bookkeeping: the floor of a cache that would keep decoded values, addressable
by key, rather than encoded bytes. Rounds alternate the contenders; the table gives the
median. The exit code is 0 whatever the numbers.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROBE = r"""
import asyncio, gc, json, os, sys
sys.path.insert(0, {root!r})
N = {n}

def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

def value(i):
    return {{"id": i, "name": f"user-{{i}}", "roles": ["a", "b"]}}

{setup}

async def fill():
    for i in range(N):
        await f(i)

gc.collect()
before = rss()
asyncio.run(fill())
gc.collect()
print(json.dumps((rss() - before) / N))
"""

SETUPS = {
    "plain dict": """
store = {}
async def f(i):
    r = store.get(i)
    if r is None:
        r = store[i] = value(i)
    return r
""",
    "dict, memo keys": """
import xxhash
store = {}
async def f(i):
    key = f"memo:default:__main__.f:v1:{i}:{xxhash.xxh3_128_hexdigest(str(i).encode())}"
    r = store.get(key)
    if r is None:
        r = store[key] = value(i)
    return r
""",
    "memo": """
from memo import InMemoryCache, cached
cache = InMemoryCache(memory_cache_size=N, memory_max_bytes=1 << 40, default_ttl=3600)
@cached(ttl=3600, cache=cache)
async def f(i):
    return value(i)
""",
    "cachebox": """
import cachebox
@cachebox.cached(cachebox.LRUCache(N))
async def f(i):
    return value(i)
""",
    "async-lru": """
from async_lru import alru_cache
@alru_cache(maxsize=N)
async def f(i):
    return value(i)
""",
}


def measure(name: str, n: int) -> float:
    code = PROBE.format(root=str(ROOT), n=n, setup=SETUPS[name])
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(json.loads(out.stdout))


def main(args: argparse.Namespace) -> None:
    names = list(SETUPS)
    per: dict[str, list[float]] = {name: [] for name in names}
    for r in range(args.rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            per[name].append(measure(name, args.entries))
    print(f"Memory per entry, {args.entries:,} entries, resident set, median of {args.rounds}")
    floor = statistics.median(per["cachebox"])
    w = max(map(len, names))
    print(f"  {'contender':{w}} {'bytes/entry':>12} {'x cachebox':>11}")
    for name in names:
        m = statistics.median(per[name])
        print(f"  {name:{w}} {m:12.0f} {m / floor:10.2f}x")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--entries", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=3)
    return ap.parse_args(argv)


if __name__ == "__main__":
    main(parse())
