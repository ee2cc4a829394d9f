"""memo behind Sentinel: a failover is followed without a restart, no decorated call
fails or returns a wrong value, and memory tiers are flushed before they are trusted on
the new primary."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import redis

from memo import GenericRedisCache, cached
from tests.sentinel_harness import SentinelSet

pytestmark = pytest.mark.slow


async def _listening_again(cache: GenericRedisCache, before: int, timeout: float = 60) -> None:
    """Until the invalidation channel is back (on the new primary) and trusted."""
    deadline = time.monotonic() + timeout
    while True:
        state = (await cache.get_cache_stats())["redis"]["invalidation"]
        if state["reconnects"] > before and state["listening"]:
            return
        assert time.monotonic() < deadline, f"the channel never came back: {state}"
        await asyncio.sleep(0.05)


async def test_a_failover_during_2000_decorated_calls_loses_no_call_and_no_value(
    sentinel_set: SentinelSet,
) -> None:
    cache = GenericRedisCache(sentinel_set.url, operation_timeout=0.5, connect_timeout=0.5)
    try:
        assert await cache.connect()

        @cached(ttl=600, cache=cache)
        async def double(x: int) -> int:
            return 2 * x

        await cache.set("held", "before the failover", ttl=600)
        assert sentinel_set.primary.client().wait(1, 5000) == 1  # on the replica too
        assert await cache.get("held") == "before the failover"
        held = cache.prefix + "held"
        assert cache.backend.memory.get_local(held) is not None  # type: ignore[attr-defined]
        channel = (await cache.get_cache_stats())["redis"]["invalidation"]["reconnects"]

        errors: list[str] = []
        wrong = 0
        failover: asyncio.Task[Any] | None = None
        killed_at = 0.0
        for i in range(2000):
            if i == 200:
                old_port = sentinel_set.kill_primary()
                killed_at = time.monotonic()
                failover = asyncio.create_task(
                    asyncio.to_thread(sentinel_set.wait_for_failover, old_port)
                )
            try:
                if await double(i % 500) != 2 * (i % 500):
                    wrong += 1
            except Exception as exc:  # a decorated call must never raise for Redis
                errors.append(repr(exc))
            if failover is not None and not failover.done():
                await asyncio.sleep(0.002)  # keep calling through the whole failover
        assert failover is not None
        new_host, new_port = await failover
        assert (errors, wrong) == ([], 0)

        # The cache writes to the promoted primary: seen in its keyspace.
        promoted = redis.Redis(host=new_host, port=new_port)
        deadline = time.monotonic() + 60
        while True:
            await cache.set("after", "written after the failover", ttl=600)
            if promoted.exists(cache.prefix + "after"):
                break
            assert time.monotonic() < deadline, "the cache never wrote to the new primary"
            await asyncio.sleep(0.05)
        took = time.monotonic() - killed_at
        print(f"first write seen on the new primary {took:.2f} s after the kill")

        # The channel came back on the new primary, and the memory tier was flushed
        # before it was trusted again: what it held may have changed unheard.
        await _listening_again(cache, channel)
        assert cache.backend.memory.get_local(held) is None  # type: ignore[attr-defined]
        assert await cache.get("held") == "before the failover"  # from the new primary
    finally:
        await cache.aclose()
