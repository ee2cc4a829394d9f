"""Leases at their edges, on real servers: what is stored, and what never is.

Two ``GenericRedisCache`` instances on one server stand for two processes here (each has
its own flight table and memory tier); tests/test_many_processes.py runs real ones.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from memo import GenericRedisCache, InMemoryCache, cached
from memo.testing import FakeClock
from tests.redis_harness import RedisServer


def two_caches(server: RedisServer, **options: Any) -> tuple[GenericRedisCache, GenericRedisCache]:
    return GenericRedisCache(server.url, **options), GenericRedisCache(server.url, **options)


async def test_an_explicit_refresh_is_tagged_and_the_tag_removes_it(
    redis_server: RedisServer,
) -> None:
    cache = GenericRedisCache(redis_server.url)
    runs = 0

    @cached(ttl=60, cache=cache, tags=("user:{uid}",))
    async def load(uid: int) -> int:
        nonlocal runs
        runs += 1
        return runs

    assert 1 == await load(1)
    assert 2 == await load.refresh(1)
    assert 1 == await cache.invalidate_tags("user:1")
    assert 3 == await load(1)
    await cache.aclose()


def shared_on(cache: GenericRedisCache, body: Any, **options: Any) -> Any:
    """One function's key, on ``cache``: as the same code would in another process."""

    @cached(ttl=60, cache=cache, namespace="shared", **options)
    async def shared(x: int) -> str:
        return str(await body())

    return shared


async def test_a_waiter_that_gives_up_computes_but_stores_nothing(
    redis_server: RedisServer,
) -> None:
    holder_cache, waiter_cache = two_caches(redis_server)
    release = asyncio.Event()

    async def slowly() -> str:
        await release.wait()
        return "holder"

    async def at_once() -> str:
        return "waiter"

    holder = shared_on(holder_cache, slowly)
    waiter = shared_on(waiter_cache, at_once, lock=True, lock_wait=0.2)
    holding = asyncio.ensure_future(holder(1))
    key = holder_cache.prefix + holder.key_for(1)
    for _ in range(200):  # until the holder has taken the lease
        if redis_server.client().exists(key + "#lease"):
            break
        await asyncio.sleep(0.005)
    assert "waiter" == await waiter(1)  # waited 0.2 s, then computed itself
    assert 0 == redis_server.client().exists(key)  # ...without storing
    release.set()
    assert "holder" == await holding
    assert "holder" == await waiter.peek(1)
    await holder_cache.aclose()
    await waiter_cache.aclose()


async def test_a_computation_begun_in_an_outage_never_stores_after_redis_returns(
    redis_server: RedisServer,
) -> None:
    cache = GenericRedisCache(redis_server.url, operation_timeout=0.2, connect_timeout=0.2)
    await cache.connect()
    started, release = asyncio.Event(), asyncio.Event()

    @cached(ttl=60, cache=cache)
    async def load(x: int) -> str:
        started.set()
        await release.wait()
        return "computed during the outage"

    redis_server.kill()
    call = asyncio.ensure_future(load(1))
    await started.wait()  # its lease could not be taken
    redis_server.restart()
    release.set()
    assert "computed during the outage" == await call
    assert 0 == redis_server.client().exists(cache.prefix + load.key_for(1))
    await cache.aclose()


async def test_a_cancelled_holder_gives_its_lease_back(redis_server: RedisServer) -> None:
    cache = GenericRedisCache(redis_server.url)
    never = asyncio.Event()

    @cached(ttl=60, cache=cache)
    async def slow(x: int) -> int:
        await never.wait()
        return x

    lease = cache.prefix + slow.key_for(1) + "#lease"
    call = asyncio.ensure_future(slow(1))
    for _ in range(200):  # until the call holds the lease
        if redis_server.client().exists(lease):
            break
        await asyncio.sleep(0.005)
    assert 1 == redis_server.client().exists(lease)
    call.cancel()  # the caller goes away: the computation is cancelled
    with pytest.raises(asyncio.CancelledError):
        await call
    # The abandoned computation is cancelled, then gives the lease back. Renewed at most
    # a second ago, the lease would live 2 s more: gone before that, it was given back.
    loop = asyncio.get_running_loop()
    give_up = loop.time() + 1.8
    while redis_server.client().exists(lease) and loop.time() < give_up:
        await asyncio.sleep(0.005)
    assert 0 == redis_server.client().exists(lease)
    await cache.aclose()


async def test_a_failing_early_refresh_keeps_the_fresh_value(clock: FakeClock) -> None:
    cache = InMemoryCache(clock=clock)
    failing = False

    @cached(ttl=10, cache=cache, stale_ttl=30, early_refresh=True)
    async def load(x: int) -> str:
        if failing:
            raise RuntimeError("transient")
        clock.advance(5)  # a slow computation: early refresh starts well before expiry
        return "good"

    assert "good" == await load(1)  # fresh until 10 s after it was stored
    failing = True
    clock.advance(4)  # 1 s before expiry: an early refresh is very likely each call
    for _ in range(20):
        assert "good" == await load(1)
        await asyncio.sleep(0)  # let a background refresh run
    assert load.stats()["refreshes"] >= 1
    assert "good" == await load.peek(1)  # still there: only a stale value is dropped
    await cache.aclose()


async def test_a_template_rendering_an_empty_tag_never_fails_the_call(
    redis_server: RedisServer,
) -> None:
    cache = GenericRedisCache(redis_server.url)

    @cached(ttl=60, cache=cache, tags=("{name}",))
    async def greet(name: str) -> str:
        return f"hello {name}"

    assert "hello " == await greet("")
    assert "hello x" == await greet("x")
    assert 1 == await cache.invalidate_tags("x")
    await cache.aclose()


async def test_invalidating_a_tag_during_an_outage_drops_this_process_copies() -> None:
    cache = GenericRedisCache("redis://127.0.0.1:1/0", operation_timeout=0.05, connect_timeout=0.05)
    runs = 0

    @cached(ttl=60, cache=cache, tags=("t",))
    async def load(x: int) -> int:
        nonlocal runs
        runs += 1
        return runs

    assert 1 == await load(1)
    assert 1 == await load(1)  # the outage tier serves it
    await cache.invalidate_tags("t")
    assert 2 == await load(1)
    await cache.aclose()


async def test_keys_reserved_for_bookkeeping_are_refused(redis_server: RedisServer) -> None:
    from memo import ConfigError

    cache = GenericRedisCache(redis_server.url)
    for key in ("report#lease", "__tagset__:x"):
        with pytest.raises(ConfigError, match="bookkeeping"):
            await cache.set(key, 1)
    await cache.aclose()


async def test_a_burst_of_two_thousand_cold_misses_is_stored_without_errors(
    redis_server: RedisServer,
) -> None:
    """Each miss takes a lease and stores through a script: concurrent ones must share
    round trips, or the pool and the deadline give out under a burst. (The deadline is
    2 s here: under the whole suite's load on a shared two-core machine, 1 or 2 of the
    2 000 lease calls once took over 0.5 s of loop time with tracking on; one at a time
    they did not, in 8 runs.)"""
    cache = GenericRedisCache(redis_server.url, operation_timeout=2.0)
    await cache.connect()

    @cached(ttl=60, cache=cache)
    async def load(i: int) -> int:
        return i

    try:
        assert list(range(2000)) == await asyncio.gather(*(load(i) for i in range(2000)))
        stats = await cache.get_cache_stats()
        assert (0, 2000) == (stats["errors"], stats["sets"])
        assert 2000 == len(await cache.keys("*", limit=5000))
    finally:
        await cache.aclose()


async def test_listings_and_counts_leave_out_leases(redis_server: RedisServer) -> None:
    cache = GenericRedisCache(redis_server.url)
    await cache.set_many({"a": 1, "b": 2, "c": 3})
    raw = redis_server.client()
    for i in range(50):  # leases of computations under way
        raw.set(f"{cache.prefix}cold:{i}#lease", b"token", px=60_000)
    assert ["a", "b", "c"] == await cache.keys("*", limit=3)
    assert 3 == await cache.invalidate_all()
    assert 0 == redis_server.dbsize()  # the leases are voided all the same
    await cache.aclose()


async def test_a_server_refusing_scripts_gets_plain_stores_and_tags_still_work(
    make_redis_server: Any,
) -> None:
    server: RedisServer = make_redis_server(acl_user=("app", "app-secret"))
    server.client().execute_command("ACL", "SETUSER", "app", "-evalsha", "-eval", "-script")
    cache = GenericRedisCache(server.url)
    runs = 0

    @cached(ttl=60, cache=cache, tags=("team:{team}",))
    async def load(team: int) -> int:
        nonlocal runs
        runs += 1
        return team

    try:
        assert 1 == await load(1)  # the lease is refused: stored without one
        assert 1 == await load(1)
        assert 1 == runs
        assert 1 == await cache.invalidate_tags("team:1")
        assert 1 == await load(1)
        assert 2 == runs
    finally:
        await cache.aclose()


async def test_an_explicit_refresh_overtaken_by_an_invalidation_is_not_stored(
    redis_server: RedisServer,
) -> None:
    refresher_cache, other_cache = two_caches(redis_server)
    computing, release = asyncio.Event(), asyncio.Event()
    versions = iter(["v1", "v2-computed-before-the-invalidation"])

    async def next_version() -> str:
        value = next(versions)
        if value != "v1":
            computing.set()
            await release.wait()
        return value

    refresher = shared_on(refresher_cache, next_version)
    other = shared_on(other_cache, next_version)
    assert "v1" == await refresher(1)
    refreshing = asyncio.ensure_future(refresher.refresh(1))
    await computing.wait()
    await other.invalidate(1)  # the source changed: the refresh's result is old
    release.set()
    assert "v2-computed-before-the-invalidation" == await refreshing  # returned...
    assert 0 == redis_server.client().exists(other_cache.prefix + other.key_for(1))  # not stored
    await refresher_cache.aclose()
    await other_cache.aclose()


async def test_one_refused_call_in_a_pipelined_burst_fails_alone(
    redis_server: RedisServer,
) -> None:
    cache = GenericRedisCache(redis_server.url)
    await cache.connect()

    @cached(ttl=60, cache=cache, tags=("t:{i}",))
    async def load(i: int) -> int:
        return i

    # Tag t:0's set is not a sorted set: the lease script of load(0) fails with WRONGTYPE.
    redis_server.client().set(cache.prefix + "__tagset__:t:0", b"not a sorted set")
    assert list(range(50)) == await asyncio.gather(*(load(i) for i in range(50)))
    assert 49 == len(await cache.keys("*", limit=100))  # every other call stored
    assert 0 == sum(
        1 for k in redis_server.client().scan_iter("*#lease")
    )  # and no lease left behind
    await cache.aclose()


async def test_a_caller_cancelled_while_its_lease_request_is_answered_gives_the_lease_back(
    redis_server: RedisServer,
) -> None:
    """Redis granted the lease, but the caller was cancelled before the reply came back:
    nobody will compute, so the lease must not stay until it expires."""
    from memo._leasing import Leasing
    from memo.backends.redis import RedisBackend

    redis = RedisBackend.from_url(redis_server.url)
    granted = asyncio.Event()
    acquire = redis.acquire_lease

    async def reply_never_comes_back(*args: Any) -> int:
        await acquire(*args)  # applied in Redis
        granted.set()
        await asyncio.Event().wait()  # ... and the reply is still on its way
        return 1

    redis.acquire_lease = reply_never_comes_back  # type: ignore[method-assign]
    leasing = Leasing(redis, "memo:t:", lambda operation, exc: None)
    taking = asyncio.ensure_future(leasing.take("memo:t:k", (), None))
    await granted.wait()
    assert redis_server.client().exists("memo:t:k#lease")
    taking.cancel()
    with pytest.raises(asyncio.CancelledError):
        await taking
    assert not redis_server.client().exists("memo:t:k#lease")  # given back at once
    await redis.aclose()
