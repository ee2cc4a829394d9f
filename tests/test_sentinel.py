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


async def test_after_a_graceful_failover_writes_go_to_the_new_primary_not_the_old(
    sentinel_set: SentinelSet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SENTINEL FAILOVER: the old primary keeps taking writes for seconds, and loses them
    when it turns replica. Each connection taken asks where the primary is (the recheck
    interval made 0 here), so no write after the switch goes to the old one."""
    import memo.backends._sentinel as sentinel_module

    monkeypatch.setattr(sentinel_module, "RECHECK_SECONDS", 0.0)
    cache = GenericRedisCache(sentinel_set.url, enable_memory_cache=False)
    try:
        await cache.set("before", 1, ttl=600)
        old_port = sentinel_set.current_primary()[1]
        sentinel_set.sentinel_servers[0].client().execute_command(
            "SENTINEL", "FAILOVER", "mymaster"
        )
        new_host, new_port = await asyncio.to_thread(sentinel_set.wait_for_failover, old_port)
        for i in range(20):
            await cache.set(f"after:{i}", i, ttl=600)
        promoted = redis.Redis(host=new_host, port=new_port)
        written = [bool(promoted.exists(f"{cache.prefix}after:{i}")) for i in range(20)]
        assert written == [True] * 20
    finally:
        await cache.aclose()


async def test_with_every_sentinel_gone_the_cache_keeps_its_last_known_primary(
    sentinel_set: SentinelSet,
) -> None:
    cache = GenericRedisCache(sentinel_set.url, enable_memory_cache=False)
    try:
        await cache.set("k", "v", ttl=600)
        for sentinel in sentinel_set.sentinel_servers:
            sentinel.kill()
        errors = cache.stats.errors
        # Forty at once: the pool makes new connections, which ask the sentinels first.
        found = await asyncio.gather(*(cache.get("k") for _ in range(40)))
        assert found == ["v"] * 40
        assert cache.stats.errors == errors
    finally:
        await cache.aclose()


async def test_url_options_reach_the_primary_and_a_bad_first_address_is_skipped(
    sentinel_set: SentinelSet,
) -> None:
    host, port = sentinel_set.current_primary()
    # The primary's own address listed first, by mistake: it answers SENTINEL with an
    # error, which must not end the search through the real sentinels.
    hosts = ",".join(f"{h}:{p}" for h, p in [(host, port), *sentinel_set.sentinels])
    cache = GenericRedisCache(f"redis+sentinel://{hosts}/mymaster/0?client_name=memo-sentinel")
    try:
        assert await cache.connect()
        await cache.set("k", 1, ttl=600)
        clients = sentinel_set.server_at(int(port)).client().client_list()
        assert "memo-sentinel" in {c["name"] for c in clients}
    finally:
        await cache.aclose()
