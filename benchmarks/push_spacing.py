"""What a tracking memory tier pays per invalidation as pushes come closer together.

    python benchmarks/push_spacing.py --redis redis://127.0.0.1:6391/0 [--pushes N]
                                      [--rounds N] [--gaps MS ...]

One process holds N keys in a tracking memory tier, once with ``invalidation_batch=0``
(each push read as it comes) and once with the default (dense streams read in batches).
A writer process sets those keys one after another, paced to one every GAP
milliseconds (busy-waiting, so the pace holds below a millisecond), and each set makes
the server push one invalidation to the tier. The table gives the listening process's
CPU time (all its threads) per push heard, medians over rounds that alternate the two
settings, and how often reading was paused. Point it at a redis-server of its own. The
exit code is 0 whatever the numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's memo first

from memo import GenericRedisCache

WRITER = """
import sys, time
import redis
url, prefix, n, gap = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
client = redis.Redis.from_url(url)
blob = client.get(prefix + "k0")
due = time.monotonic()
for i in range(n):
    due += gap / 1000
    while time.monotonic() < due:
        pass
    client.set(prefix + "k%d" % i, blob)
"""


async def one_round(url: str, batch: float, gap_ms: float, pushes: int) -> tuple[float, int]:
    """CPU µs per push heard, and pauses, for one tier and one paced writer."""
    cache = GenericRedisCache(
        url, namespace="bench_spacing", invalidation_batch=batch, memory_cache_size=pushes
    )
    assert await cache.connect(), "no Redis at " + url
    try:
        keys = [f"k{i}" for i in range(pushes)]
        await cache.set_many({key: {"i": i} for i, key in enumerate(keys)})
        for key in keys:
            await cache.get(key)  # a tracked read: the server will tell this tier
        listener = cache.backend.listener  # type: ignore[attr-defined]
        connection = listener._connection
        heard, pauses = listener.heard, connection.pauses
        cpu = time.process_time()
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, url, cache.prefix, str(pushes), str(gap_ms)]
        )
        while writer.poll() is None:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.05)  # the last pushes arrive
        used = time.process_time() - cpu
        heard = listener.heard - heard
        return used / max(heard, 1) * 1e6, connection.pauses - pauses
    finally:
        await cache.aclose()


async def main(args: argparse.Namespace) -> None:
    print(f"CPU µs per push heard by a tracking tier, {args.pushes} pushes, {args.rounds} rounds")
    print(f"  {'gap ms':>7} {'each at once':>13} {'batched':>9} {'ratio':>7} {'pauses':>7}")
    for gap in args.gaps:
        alone: list[float] = []
        batched: list[float] = []
        pauses: list[int] = []
        for r in range(args.rounds):
            order = [(0.0, alone), (0.001, batched)]
            for batch, out in order if r % 2 else order[::-1]:
                cost, paused = await one_round(args.redis, batch, gap, args.pushes)
                out.append(cost)
                if batch:
                    pauses.append(paused)
        a, b = statistics.median(alone), statistics.median(batched)
        print(f"  {gap:7.2f} {a:13.1f} {b:9.1f} {b / a:6.2f}x {statistics.median(pauses):7.0f}")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--redis", required=True, metavar="URL", help="a redis-server of its own")
    ap.add_argument("--pushes", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--gaps", type=float, nargs="+", default=[0.1, 0.3, 0.7, 1.5])
    return ap.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse()))
