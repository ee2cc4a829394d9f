"""What observing costs a memory hit: Prometheus and fleet publishing on, against off.

    python benchmarks/observability.py [--redis URL] [--rounds N] [--batch N]

Two caches on one Redis (``--redis``, default ``redis://127.0.0.1:6379/15``), each
with a decorated ``f(int)`` returning a small dict whose calls hit the memory tier:

- off: ``stats_interval=0`` (no fleet record), no collector;
- on: the fleet record written every 0.2 s (25 times the default rate), a Prometheus
  collector registered, and a thread scraping it (``generate_latest``) every 50 ms.

Rounds are interleaved (the order alternates); each times ``--batch`` hits of each
cache and reports thread CPU time and wall time per hit, medians and best rounds, and
on / off. The goal is on / off <= 1.05. The exit code is 0 whatever the numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's memo first

from prometheus_client import CollectorRegistry, generate_latest

from memo import GenericRedisCache, cached
from memo.integrations.prometheus import register


def decorated(cache: GenericRedisCache, name: str) -> Any:
    @cached(ttl=3600, cache=cache, namespace=name)
    async def profile(user_id: int) -> dict[str, Any]:
        return {"id": user_id, "name": "Ada", "roles": ["admin", "dev"]}

    return profile


async def timed(call: Any, keys: list[int]) -> tuple[float, float]:
    gc.disable()
    try:
        wall, cpu = time.perf_counter(), time.thread_time()
        for key in keys:
            await call(key)
        n = len(keys)
        return (time.thread_time() - cpu) / n * 1e6, (time.perf_counter() - wall) / n * 1e6
    finally:
        gc.enable()


async def main(args: argparse.Namespace) -> None:
    off = GenericRedisCache(args.redis, namespace="bench-off", stats_interval=0)
    on = GenericRedisCache(args.redis, namespace="bench-on", stats_interval=0.2)
    registry = CollectorRegistry()
    register(registry, caches=[on])
    stop = threading.Event()
    scrapes = 0

    def scrape() -> None:
        nonlocal scrapes
        while not stop.wait(0.05):
            generate_latest(registry)
            scrapes += 1

    scraper = threading.Thread(target=scrape, daemon=True)
    scraper.start()
    calls = {"off": decorated(off, "off"), "on": decorated(on, "on")}
    keys = [i % 100 for i in range(args.batch)]
    for call in calls.values():
        for key in range(100):
            await call(key)  # misses: fill Redis and the memory tier
        await timed(call, keys)  # warm
    results: dict[str, list[tuple[float, float]]] = {"off": [], "on": []}
    for r in range(args.rounds):
        for name in ("off", "on") if r % 2 == 0 else ("on", "off"):
            results[name].append(await timed(calls[name], keys))
            await asyncio.sleep(0)  # let the publisher run between batches
    stop.set()
    scraper.join()
    published = await on.publish_stats()
    await off.aclose()
    await on.aclose()
    print(f"memory hits, {args.rounds} interleaved rounds x {args.batch:,}, µs per hit")
    med: dict[str, tuple[float, float]] = {}
    for name, rows in results.items():
        cpu = statistics.median(c for c, _ in rows)
        wall = statistics.median(w for _, w in rows)
        med[name] = (cpu, wall)
        best = min(c for c, _ in rows)
        print(f"  observing {name:<4} {cpu:6.3f} cpu  {wall:6.3f} wall  (best {best:.3f} cpu)")
    print(
        f"  on / off: {med['on'][0] / med['off'][0]:.3f}x cpu, "
        f"{med['on'][1] / med['off'][1]:.3f}x wall (goal <= 1.05); "
        f"{scrapes} scrapes, fleet record written: {published}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/15")
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--batch", type=int, default=20_000)
    asyncio.run(main(parser.parse_args()))
