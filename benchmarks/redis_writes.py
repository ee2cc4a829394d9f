"""What a Redis write costs through memo, and what hearing other processes' writes costs.

    python benchmarks/redis_writes.py --redis redis://127.0.0.1:6391/0 [--rounds N] [--batch N]
                                      [--listeners 8] [--fleet-rounds 10] [--invalidation-batch S]

Each contender stores the same small dict under 500 distinct keys per round, awaited one
after the other; rounds are interleaved (round r runs every contender once, in an order
rotated by r). The table gives the per-write median over rounds and the best round, in
microseconds, and each row over a raw redis-py ``SET`` of the same number of bytes.
Point it at a redis-server of its own. The exit code is 0 whatever the numbers.

With ``--listeners N`` (default 8), N separate processes each keep a memo memory tier
(tracking, then the channel), and beside it a bare ``asyncio.Protocol`` reader with
tracking on that only counts what it hears (benchmarks/_listener_proc.py). Tables 3 to 5
give the event-loop thread's CPU time in those processes per write they were told of, or
per write made anywhere, and the write's cost while they listen.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import multiprocessing
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's memo first

from benchmarks._listener_proc import serve
from memo import GenericRedisCache
from memo._redis_options import RedisURL

VALUE = {"id": 7, "name": "alice", "roles": ["a", "b"]}


async def time_batch(write: Callable[[int], Awaitable[object]], keys: range) -> tuple[float, float]:
    """µs per write: wall time, and this thread's CPU time."""
    gc.disable()
    started, cpu = time.perf_counter_ns(), time.thread_time_ns()
    for i in keys:
        await write(i)
    elapsed, used = time.perf_counter_ns() - started, time.thread_time_ns() - cpu
    gc.enable()
    return elapsed / len(keys) / 1000, used / len(keys) / 1000


Samples = dict[str, list[tuple[float, float]]]


async def interleaved(
    contenders: dict[str, Callable[[int], Awaitable[object]]], rounds: int, batch: int
) -> Samples:
    names = list(contenders)
    for name in names:  # warm connections and code paths
        await time_batch(contenders[name], range(50))
    samples: Samples = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            samples[name].append(await time_batch(contenders[name], range(batch)))
    return samples


def report(title: str, samples: Samples, floor: tuple[float, float]) -> dict[str, float]:
    """Medians (wall), each row also over ``floor`` (the raw SET's wall and CPU medians)."""
    print(f"\n{title}")
    print(
        f"  {'contender':36} {'wall med':>9} {'wall best':>9} {'CPU med':>8} "
        f"{'x raw wall':>10} {'x raw CPU':>9}"
    )
    medians = {}
    for name, values in samples.items():
        wall = statistics.median(w for w, _ in values)
        cpu = statistics.median(c for _, c in values)
        medians[name] = wall
        print(
            f"  {name:36} {wall:9.2f} {min(w for w, _ in values):9.2f} {cpu:8.2f} "
            f"{wall / floor[0]:9.2f}x {cpu / floor[1]:8.2f}x"
        )
    return medians


def floor_of(samples: Samples, name: str = "raw redis-py SET") -> tuple[float, float]:
    return (
        statistics.median(w for w, _ in samples[name]),
        statistics.median(c for _, c in samples[name]),
    )


async def main(args: argparse.Namespace) -> None:
    raw = aioredis.Redis(
        connection_pool=aioredis.BlockingConnectionPool.from_url(args.redis, max_connections=50)
    )
    announced = GenericRedisCache(
        args.redis, namespace="bench_on", enable_memory_cache=False, coherence="channel"
    )
    silent = GenericRedisCache(
        args.redis, namespace="bench_off", enable_memory_cache=False, invalidation_channel=False
    )
    tracking = GenericRedisCache(args.redis, namespace="bench_tr", enable_memory_cache=False)
    for cache in (announced, silent, tracking):
        await cache.connect()
    payload = b"x" * 60

    async def raw_set(i: int) -> object:
        return await raw.set(f"bench:raw:{i}", payload, px=600_000)

    def writes_to(cache: GenericRedisCache) -> Callable[[int], Awaitable[object]]:
        return lambda i: cache.set(f"k{i}", VALUE, ttl=600)

    raw_row = {"raw redis-py SET": raw_set}
    announced_row = {"memo set, coherence='channel'": writes_to(announced)}

    where = RedisURL.parse(args.redis, "--redis").masked
    print(f"Redis writes at {where}: {args.rounds} rounds x {args.batch} writes")
    alone = await interleaved(
        {
            **raw_row,
            "memo set, coherence off": writes_to(silent),
            "memo set, tracking (the default)": writes_to(tracking),
            **announced_row,
        },
        args.rounds,
        args.batch,
    )
    floor = floor_of(alone)
    m = report("Table 1: no process listening", alone, floor)
    on, off = m["memo set, coherence='channel'"], m["memo set, coherence off"]
    tracked = m["memo set, tracking (the default)"]
    print(f"  announcing costs {on - off:+.2f} µs a write ({on / off:.2f}x memo's own write)")
    print(f"  tracking costs {tracked - off:+.2f} µs a write ({tracked / off:.2f}x)")

    # A cache with a memory tier subscribes; its listener runs in this same event loop,
    # so these rows also pay for hearing every announcement, as each process of a fleet
    # does for every write anyone makes.
    tiered = GenericRedisCache(args.redis, namespace="bench_tier", coherence="channel")
    await tiered.connect()
    heard = await interleaved(
        {**raw_row, **announced_row, "memo set, memory tier, listening": writes_to(tiered)},
        args.rounds,
        args.batch,
    )
    report("Table 2: a channel listener in this process hears every write", heard, floor)
    await raw.aclose()
    for cache in (announced, silent, tracking, tiered):
        await cache.aclose()
    await plain_client_reach(args)
    if args.listeners:
        await fleet(args, "tracking")
        await fleet(args, "channel")


async def plain_client_reach(args: argparse.Namespace, samples: int = 200) -> None:
    """How soon a change by a client that knows nothing of memo (as redis-cli) drops the
    copy a memory tier holds: SET, DEL, and an expiry (timed from the moment the entry
    expires in Redis; negative: the copy, never longer-lived than its entry, went
    first)."""
    raw = aioredis.Redis.from_url(args.redis)
    cache = GenericRedisCache(args.redis, namespace="bench_reach")
    await cache.connect()
    memory = cache.backend.memory  # type: ignore[attr-defined]
    print(f"\nTable 3: a plain client's change reaching a tracking memory tier, {samples} each")
    print(f"  {'change':12} {'median ms':>10} {'p99 ms':>8} {'max ms':>8}")
    for change in ("SET", "DEL", "expiry"):
        waits = []
        for i in range(samples):
            key = f"k{i}"
            full = cache.prefix + key
            await cache.set(key, VALUE, ttl=600)
            if change == "expiry":  # an entry with 50 ms to live, as another client wrote it
                await raw.set(full, await raw.get(full), px=50)
                written = time.perf_counter()
            await cache.get(key)  # held now, and tracked
            assert memory.get_local(full) is not None
            started = time.perf_counter()
            if change == "SET":
                await raw.set(full, await raw.get(full), px=600_000)
            elif change == "DEL":
                await raw.delete(full)
            else:
                started = written + 0.050  # timed from the moment Redis expires it
            while memory.get_local(full) is not None:
                await asyncio.sleep(0)
                if time.perf_counter() - started > 5:
                    break
            waits.append((time.perf_counter() - started) * 1000)
        waits.sort()
        print(
            f"  {change:12} {statistics.median(waits):10.2f} "
            f"{waits[int(len(waits) * 0.99) - 1]:8.2f} {waits[-1]:8.2f}"
        )
    await cache.aclose()
    await raw.aclose()


class Fleet:
    """``n`` listening processes, driven over pipes."""

    def __init__(self, n: int, url: str, coherence: str, batch: float) -> None:
        context = multiprocessing.get_context("spawn")
        self.pipes = []
        self.procs = []
        for _ in range(n):
            mine, theirs = context.Pipe()
            proc = context.Process(target=serve, args=(theirs, url, coherence, batch), daemon=True)
            proc.start()
            self.pipes.append(mine)
            self.procs.append(proc)

    async def ask(self, command: str, arg: Any = None) -> list[Any]:
        for pipe in self.pipes:
            pipe.send((command, arg))
        return [await asyncio.to_thread(pipe.recv) for pipe in self.pipes]

    async def window(self, writes: Callable[[], Awaitable[object]]) -> list[tuple[float, int, int]]:
        """Each process's (CPU seconds, heard, bare pushes) while ``writes`` run."""
        await self.ask("start")
        await writes()
        await asyncio.sleep(0.2)  # what is on its way arrives
        return await self.ask("stop")

    async def close(self) -> None:
        for pipe in self.pipes:
            pipe.send(("quit", None))
        for proc in self.procs:
            await asyncio.to_thread(proc.join, 10)


async def fleet(args: argparse.Namespace, coherence: str) -> None:
    n, batch = args.listeners, args.batch
    group = Fleet(n, args.redis, coherence, args.invalidation_batch)
    raw = aioredis.Redis.from_url(args.redis)
    writer = GenericRedisCache(
        args.redis, namespace="bench_held", enable_memory_cache=False, coherence=coherence
    )
    await writer.connect()
    await group.ask("start")  # every process is up
    await group.ask("stop")
    held = [f"held:{i:05}" for i in range(batch)]
    bare = [f"bare:{i:05}" for i in range(batch)]  # written alike: messages alike
    free, tier, floor = [], [], []
    counts = {"free": 0, "tier": 0, "bare": 0}

    async def write_free() -> None:
        for i in range(batch):
            await writer.set(f"free:{i:05}", VALUE, ttl=600)

    async def write_held() -> None:
        for key in held:
            await writer.set(key, VALUE, ttl=600)

    async def write_bare() -> None:
        for key in bare:
            await writer.set(key, VALUE, ttl=600)

    await write_held()
    for r in range(args.fleet_rounds):
        steps = ["free", "tier", "bare"]
        for step in steps[r % 3 :] + steps[: r % 3]:
            if step == "free":
                for cpu, _, _ in await group.window(write_free):
                    free.append(cpu / batch * 1e6)
            elif step == "tier":
                await group.ask("hold", held)
                for cpu, heard, _ in await group.window(write_held):
                    tier.append(cpu / max(heard, 1) * 1e6)
                    counts["tier"] += heard
            else:
                await group.ask("hold_bare", [writer.prefix + key for key in bare])
                for cpu, _, pushes in await group.window(write_bare):
                    floor.append(cpu / max(pushes, 1) * 1e6)
                    counts["bare"] += pushes
    print(
        f"\nFleet of {n} listening processes, coherence={coherence!r}, "
        f"invalidation_batch={args.invalidation_batch:g}: "
        f"{args.fleet_rounds} rounds x {batch} writes, event-loop CPU per process"
    )
    print(f"  {'':52} {'median µs':>10} {'best µs':>9}")
    print(
        f"  {'per write of a key no listener holds':52} "
        f"{statistics.median(free):10.2f} {min(free):9.2f}"
    )
    if coherence == "tracking":
        tm, bm = statistics.median(tier), statistics.median(floor)
        # The same process in the same round, its two windows side by side: the load
        # that drifts over a run is shared by both halves of each ratio.
        paired = [t / b for t, b in zip(tier, floor, strict=True)]
        print(f"  {'per invalidation heard by the memory tier':52} {tm:10.2f} {min(tier):9.2f}")
        print(
            f"  {'per invalidation heard by a bare asyncio.Protocol':52} "
            f"{bm:10.2f} {min(floor):9.2f}"
        )
        print(
            f"  memory tier / bare reader: {tm / bm:.2f}x "
            f"(heard {counts['tier']}, bare {counts['bare']} of "
            f"{n * batch * args.fleet_rounds} each)"
        )
        print(
            f"  paired, one process in one round: median {statistics.median(paired):.2f}x, "
            f"quartiles {statistics.quantiles(paired, n=4)[0]:.2f}x"
            f"..{statistics.quantiles(paired, n=4)[2]:.2f}x over {len(paired)} pairs"
        )
        alone = await interleaved(
            {
                "raw redis-py SET": lambda i: raw.set(f"bench:raw:{i}", b"x" * 60, px=600_000),
                "memo set, fleet listening": lambda i: writer.set(f"w{i}", VALUE, ttl=600),
            },
            args.rounds,
            batch,
        )
        report(f"Table 6: write cost while {n} processes listen (tracking)", alone, floor_of(alone))
    await group.close()
    await writer.aclose()
    await raw.aclose()


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--redis", required=True, metavar="URL", help="a redis-server of its own")
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--listeners", type=int, default=8, help="listening processes (0: none)")
    ap.add_argument("--fleet-rounds", type=int, default=9)
    ap.add_argument(
        "--invalidation-batch",
        type=float,
        default=0.001,
        help="the listeners' invalidation_batch (0: each push read as it comes)",
    )
    return ap.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse()))
