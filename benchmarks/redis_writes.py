"""What a Redis write costs through memo, with and without the invalidation channel.

    python benchmarks/redis_writes.py --redis redis://127.0.0.1:6391/0 [--rounds N] [--batch N]

Each contender stores the same small dict under 500 distinct keys per round, awaited one
after the other; rounds are interleaved (round r runs every contender once, in an order
rotated by r). The table gives the per-write median over rounds and the best round, in
microseconds, and each row over a raw redis-py ``SET`` of the same number of bytes.
Point it at a redis-server of its own. The exit code is 0 whatever the numbers.
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

import redis.asyncio as aioredis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's memo first

from memo import GenericRedisCache
from memo._redis_options import RedisURL

VALUE = {"id": 7, "name": "alice", "roles": ["a", "b"]}


async def time_batch(write: Callable[[int], Awaitable[object]], keys: range) -> float:
    gc.disable()
    started = time.perf_counter_ns()
    for i in keys:
        await write(i)
    elapsed = time.perf_counter_ns() - started
    gc.enable()
    return elapsed / len(keys) / 1000


async def interleaved(
    contenders: dict[str, Callable[[int], Awaitable[object]]], rounds: int, batch: int
) -> dict[str, list[float]]:
    names = list(contenders)
    for name in names:  # warm connections and code paths
        await time_batch(contenders[name], range(50))
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            samples[name].append(await time_batch(contenders[name], range(batch)))
    return samples


def report(title: str, samples: dict[str, list[float]], floor: float) -> dict[str, float]:
    print(f"\n{title}")
    print(f"  {'contender':36} {'median µs':>10} {'best µs':>9} {'x raw SET':>10}")
    medians = {}
    for name, values in samples.items():
        medians[name] = median = statistics.median(values)
        print(f"  {name:36} {median:10.2f} {min(values):9.2f} {median / floor:9.2f}x")
    return medians


async def main(args: argparse.Namespace) -> None:
    raw = aioredis.Redis(
        connection_pool=aioredis.BlockingConnectionPool.from_url(args.redis, max_connections=50)
    )
    announced = GenericRedisCache(args.redis, namespace="bench_on", enable_memory_cache=False)
    silent = GenericRedisCache(
        args.redis, namespace="bench_off", enable_memory_cache=False, invalidation_channel=False
    )
    for cache in (announced, silent):
        await cache.connect()
    payload = b"x" * 60

    async def raw_set(i: int) -> object:
        return await raw.set(f"bench:raw:{i}", payload, px=600_000)

    def writes_to(cache: GenericRedisCache) -> Callable[[int], Awaitable[object]]:
        return lambda i: cache.set(f"k{i}", VALUE, ttl=600)

    raw_row = {"raw redis-py SET": raw_set}
    announced_row = {"memo set, announced": writes_to(announced)}

    where = RedisURL.parse(args.redis, "--redis").masked
    print(f"Redis writes at {where}: {args.rounds} rounds x {args.batch} writes")
    alone = await interleaved(
        {**raw_row, "memo set, channel off": writes_to(silent), **announced_row},
        args.rounds,
        args.batch,
    )
    floor = statistics.median(alone["raw redis-py SET"])
    m = report("Table 1: no process listening on the channel", alone, floor)
    on, off = m["memo set, announced"], m["memo set, channel off"]
    print(f"  announcing costs {on - off:+.2f} µs a write ({on / off:.2f}x memo's own write)")

    # A cache with a memory tier subscribes; its listener runs in this same event loop,
    # so these rows also pay for hearing every announcement, as each process of a fleet
    # does for every write anyone makes.
    tiered = GenericRedisCache(args.redis, namespace="bench_tier")
    await tiered.connect()
    heard = await interleaved(
        {**raw_row, **announced_row, "memo set, memory tier, listening": writes_to(tiered)},
        args.rounds,
        args.batch,
    )
    report("Table 2: a listener in this process hears every write", heard, floor)
    await raw.aclose()
    for cache in (announced, silent, tiered):
        await cache.aclose()


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--redis", required=True, metavar="URL", help="a redis-server of its own")
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--batch", type=int, default=500)
    return ap.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse()))
