"""Streams across OS processes against a real redis-server: at most one upstream stream
per cold request in each process (a stream is not waited for across processes: see
docs/ai.md), every caller receiving every chunk in order, one stored copy replayed by
everyone after, and no stream kept that an invalidation overtook."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import redis

from tests.redis_harness import RedisServer

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
CHUNKS = 20

CHILD = textwrap.dedent(
    """
    import asyncio, json, sys
    import redis.asyncio as aioredis
    from memo import GenericRedisCache, ai_cached

    url, role, rounds, callers = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    CHUNKS = __CHUNKS__

    async def main():
        client = aioredis.Redis.from_url(url)
        cache = GenericRedisCache(url)

        @ai_cached("chat", request="request", cache=cache)
        async def stream(request):
            n = request["round"]
            await client.incr(f"test:upstream:{n}")
            for i in range(CHUNKS):
                if role == "slow":  # the writer releases each chunk (see the test)
                    await client.blpop([f"test:chunk:{n}"], timeout=30)
                else:
                    await asyncio.sleep(0.001)
                yield {"round": n, "i": i}

        report = {"bad": [], "errors": []}
        for n in range(rounds):
            await client.incr(f"test:ready:{n}")
            if (await client.blpop([f"test:go:{n}"], timeout=30)) is None:
                raise SystemExit(f"round {n}: no go")
            request = {"model": "m", "round": n, "messages": [{"role": "user", "content": "x"}]}

            async def one():
                try:
                    return [c async for c in stream(request)]
                except Exception as exc:  # a decorated call must not raise
                    report["errors"].append(repr(exc))
                    return None

            for got in await asyncio.gather(*(one() for _ in range(callers))):
                if got != [{"round": n, "i": i} for i in range(CHUNKS)]:
                    report["bad"].append(n)
            if role == "slow":
                report.setdefault("peeks", []).append(repr(await stream.peek(request)))
        await cache.aclose()
        await client.aclose()
        print(json.dumps(report))

    asyncio.run(main())
    """
).replace("__CHUNKS__", str(CHUNKS))


def start(url: str, role: str, rounds: int, callers: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, url, role, str(rounds), str(callers)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_ready(client: redis.Redis, n: int, processes: int) -> None:
    deadline = time.monotonic() + 60
    while int(client.get(f"test:ready:{n}") or 0) < processes:
        assert time.monotonic() < deadline, f"round {n}: children not ready"
        time.sleep(0.002)


def finish(proc: subprocess.Popen[str]) -> dict[str, list[object]]:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_each_process_streams_a_cold_request_once_and_every_caller_gets_every_chunk(
    redis_server: RedisServer,
) -> None:
    processes, rounds, callers = 3, 20, 10
    client = redis.Redis.from_url(redis_server.url)
    kids = [start(redis_server.url, "fast", rounds, callers) for _ in range(processes)]
    try:
        for n in range(rounds):
            wait_ready(client, n, processes)
            client.rpush(f"test:go:{n}", *([1] * processes))
        reports = [finish(kid) for kid in kids]
    finally:
        for kid in kids:
            kid.kill()
    assert [r["errors"] for r in reports] == [[], [], []]
    assert [r["bad"] for r in reports] == [[], [], []]
    upstream = [int(client.get(f"test:upstream:{n}") or 0) for n in range(rounds)]
    # 30 callers in 3 processes: one stream per process at most (none for a process
    # that found the stream stored already).
    assert all(1 <= u <= processes for u in upstream), upstream


def test_a_stream_overtaken_by_an_invalidation_in_another_process_is_not_kept(
    redis_server: RedisServer,
) -> None:
    """The streaming process's upstream waits for each chunk; midway, another process
    invalidates the key; the stream finishes for its callers and is not stored."""
    rounds = 30
    client = redis.Redis.from_url(redis_server.url)
    kid = start(redis_server.url, "slow", rounds, 3)
    invalidator = textwrap.dedent(
        """
        import asyncio, sys
        from memo import GenericRedisCache, ai_cached

        async def main(url, n):
            cache = GenericRedisCache(url)

            @ai_cached("chat", request="request", cache=cache)
            async def stream(request):
                yield None

            request = {"model": "m", "round": n, "messages": [{"role": "user", "content": "x"}]}
            await stream.invalidate(request)
            await cache.aclose()

        asyncio.run(main(sys.argv[1], int(sys.argv[2])))
        """
    )
    try:
        for n in range(rounds):
            wait_ready(client, n, 1)
            client.rpush(f"test:go:{n}", 1)
            client.rpush(f"test:chunk:{n}", *([1] * (CHUNKS // 2)))  # half the stream
            deadline = time.monotonic() + 30
            while client.llen(f"test:chunk:{n}"):  # ... has been produced
                assert time.monotonic() < deadline
                time.sleep(0.002)
            subprocess.run(
                [sys.executable, "-c", invalidator, redis_server.url, str(n)],
                cwd=ROOT,
                check=True,
                timeout=60,
            )
            client.rpush(f"test:chunk:{n}", *([1] * (CHUNKS - CHUNKS // 2)))
        report = finish(kid)
    finally:
        kid.kill()
    assert (report["errors"], report["bad"]) == ([], [])
    kept = [n for n, peek in enumerate(report["peeks"]) if peek != "memo.MISSING"]
    assert kept == [], f"{len(kept)} of {rounds} rounds kept an overtaken stream"
