"""What a tagged store costs as the tag grows, and what invalidating a tag costs.

    python benchmarks/tags.py --redis redis://127.0.0.1:6391/0 [--rounds N] [--batch N]

Table 1: a decorated call that misses and stores its result under one tag (lease taken,
store script with the tag's sorted set), the tag holding 1 member against 50 000
members; rounds interleaved (order rotated per round), wall and thread CPU time per
call, medians and best rounds. Table 2: one ``invalidate_tags`` of a 10 000-member tag
with 100 and with 100 000 other keys in the database, and the commands it sent (from
``INFO commandstats``). Point it at a redis-server of its own: it flushes the database.
The exit code is 0 whatever the numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import time
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's memo first

from memo import GenericRedisCache, cached

BIG = 50_000


def commands(client: redis.Redis) -> int:
    info = client.info("commandstats")
    return sum(int(v["calls"]) for name, v in info.items() if name != "cmdstat_info")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis", required=True)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--batch", type=int, default=200)
    args = parser.parse_args()
    raw = redis.Redis.from_url(args.redis)
    raw.flushdb()
    # No fleet record written every few seconds: it would be counted with the commands.
    cache = GenericRedisCache(
        args.redis, enable_memory_cache=False, invalidation_channel=False, stats_interval=0
    )
    await cache.connect()

    @cached(ttl=600, cache=cache, tags=("{tag}",))
    async def store(i: int, tag: str) -> dict[str, int]:
        return {"i": i}

    # The big tag's members, written directly: 50 000 decorated stores would take a while.
    big_set = f"{cache.prefix}__tagset__:big"
    far = int(time.time() * 1000) + 3_600_000
    pipe = raw.pipeline(transaction=False)
    for i in range(BIG):
        pipe.zadd(big_set, {f"{cache.prefix}filler:{i}": far})
    pipe.execute()
    await store(-1, "small")  # one member
    print(f"Redis at {cache.redis.masked_url}; tag 'big' holds {raw.zcard(big_set):,} members")

    counter = iter(range(10**9))
    samples: dict[str, tuple[list[float], list[float]]] = {"small": ([], []), "big": ([], [])}

    async def batch(tag: str) -> tuple[float, float]:
        keys = [next(counter) for _ in range(args.batch)]
        gc.disable()
        wall, cpu = time.perf_counter(), time.thread_time()
        for i in keys:
            await store(i, tag)
        wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
        gc.enable()
        return wall / len(keys) * 1e6, cpu / len(keys) * 1e6

    for tag in ("small", "big"):
        await batch(tag)  # warm
    names = ["small", "big"]
    for r in range(args.rounds):
        for tag in names[r % 2 :] + names[: r % 2]:
            wall, cpu = await batch(tag)
            samples[tag][0].append(wall)
            samples[tag][1].append(cpu)
    print("\nTable 1: a miss stored under one tag (lease + store script), µs per call")
    print(f"  {'tag members':14} {'wall median':>12} {'best':>8} {'cpu median':>11} {'best':>8}")
    medians = {}
    for tag, label in (("small", "1"), ("big", f"{BIG:,}")):
        walls, cpus = samples[tag]
        medians[tag] = (statistics.median(walls), statistics.median(cpus))
        print(
            f"  {label:14} {medians[tag][0]:12.1f} {min(walls):8.1f} "
            f"{medians[tag][1]:11.1f} {min(cpus):8.1f}"
        )
    print(
        f"  {BIG:,} members / 1 member: wall {medians['big'][0] / medians['small'][0]:.2f}x, "
        f"cpu {medians['big'][1] / medians['small'][1]:.2f}x"
    )

    print("\nTable 2: invalidate_tags of a 10,000-member tag")
    for others in (100, 100_000):
        raw.flushdb()
        pipe = raw.pipeline(transaction=False)
        for i in range(others):
            pipe.set(f"{cache.prefix}other:{i}", b"x")
        pipe.execute()
        member_set = f"{cache.prefix}__tagset__:team"
        pipe = raw.pipeline(transaction=False)
        for i in range(10_000):
            key = f"{cache.prefix}member:{i}"
            pipe.set(key, b"x")
            pipe.zadd(member_set, {key: far})
        pipe.execute()
        await cache.invalidate_tags("warm-up")  # the script is loaded once, before counting
        before = commands(raw)
        started = time.perf_counter()
        removed = await cache.invalidate_tags("team")
        elapsed = (time.perf_counter() - started) * 1000
        sent = commands(raw) - before
        print(
            f"  {others:>7,} other keys: removed {removed:,} in {elapsed:7.1f} ms, {sent} commands"
        )
    raw.flushdb()
    await cache.aclose()


if __name__ == "__main__":
    asyncio.run(main())
