"""What a miss costs: a trivial decorated function called with keys never seen before,
until each cache holds 10**6 entries.

    python benchmarks/misses.py [--entries N] [--batch N]

memo (an ``InMemoryCache`` sized for every entry), async-lru and cachebox each decorate
their own copy of ``async def f(i): return i``. Each round calls every contender on the
next ``--batch`` keys none of them has seen (in an order rotated by the round), so each
call is a miss that computes and stores; rounds go on until ``--entries`` keys are in.
Per call: wall time and the thread's CPU time, medians over rounds and best rounds, and
each contender over async-lru. The exit code is 0 whatever the numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's memo first

import cachebox
from async_lru import alru_cache

from memo import InMemoryCache, cached


def contenders(entries: int) -> dict[str, Callable[[int], Awaitable[int]]]:
    cache = InMemoryCache(memory_cache_size=entries, memory_max_bytes=1 << 40, default_ttl=3600)

    @cached(ttl=3600, cache=cache)
    async def memo_f(i: int) -> int:
        return i

    @alru_cache(maxsize=entries)
    async def lru_f(i: int) -> int:
        return i

    @cachebox.cached(cachebox.LRUCache(entries))
    async def box_f(i: int) -> int:
        return i

    return {"memo": memo_f, "async-lru": lru_f, "cachebox": box_f}


async def main(args: argparse.Namespace) -> None:
    funcs = contenders(args.entries)
    names = list(funcs)
    wall: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    rounds = args.entries // args.batch
    for r in range(rounds):
        keys = range(r * args.batch, (r + 1) * args.batch)
        for name in names[r % len(names) :] + names[: r % len(names)]:
            f = funcs[name]
            gc.disable()
            w0, c0 = time.perf_counter_ns(), time.thread_time_ns()
            for i in keys:
                await f(i)
            # Work a contender left scheduled (a task's step) runs here, inside its own
            # timing, and not in the next contender's.
            await asyncio.sleep(0)
            c1, w1 = time.thread_time_ns(), time.perf_counter_ns()
            gc.enable()
            wall[name].append((w1 - w0) / args.batch / 1000)
            cpu[name].append((c1 - c0) / args.batch / 1000)
    print(f"Misses filling {args.entries:,} entries: {rounds} rounds x {args.batch:,} new keys")
    print(
        f"  {'contender':12} {'wall med':>9} {'best':>7} {'CPU med':>8} {'best':>7} {'x lru wall':>11} {'x lru CPU':>10}"
    )
    lw, lc = statistics.median(wall["async-lru"]), statistics.median(cpu["async-lru"])
    for name in names:
        mw, mc = statistics.median(wall[name]), statistics.median(cpu[name])
        print(
            f"  {name:12} {mw:9.3f} {min(wall[name]):7.3f} {mc:8.3f} {min(cpu[name]):7.3f}"
            f" {mw / lw:10.2f}x {mc / lc:9.2f}x"
        )


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--entries", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=20_000)
    return ap.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse()))
