"""memo on a three-primary Redis Cluster: keys spread over every primary, batches go one
round trip per primary, pattern and tag invalidation reach every node, resharding and a
paused node never reach a caller."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from redis.asyncio.connection import AbstractConnection

from memo import MISSING, GenericRedisCache, cached
from memo.backends.cluster import RedisClusterBackend, cluster_lease_key, slot_of
from memo.exceptions import BackendUnavailable
from tests.cluster_harness import Cluster

pytestmark = pytest.mark.slow


def test_a_lease_shares_its_entrys_slot() -> None:
    for key in ("memo:default:app.f:v1:42:abc", "memo:ns:a{x}b", "memo:ns:{}", "a}b"):
        lease = cluster_lease_key(key)
        assert lease.endswith("#lease")
        if "}" not in key or "{x}" in key:
            assert slot_of(lease) == slot_of(key), (key, lease)


@pytest.fixture
def sends() -> Iterator[Counter[int]]:
    """Round trips per server port: every write of a command or pipeline to a socket."""
    counted: Counter[int] = Counter()
    original = AbstractConnection.send_packed_command

    async def counting(self: Any, command: Any, check_health: bool = True) -> None:
        counted[int(self.port)] += 1
        await original(self, command, check_health)

    AbstractConnection.send_packed_command = counting  # type: ignore[method-assign]
    try:
        yield counted
    finally:
        AbstractConnection.send_packed_command = original  # type: ignore[method-assign]


async def test_ten_thousand_keys_spread_over_every_primary_and_hits_batch_per_primary(
    redis_cluster: Cluster, sends: Counter[int]
) -> None:
    # No fleet record: the key counts below are memo's entries alone.
    cache = GenericRedisCache(redis_cluster.url, enable_memory_cache=False, stats_interval=0)
    runs = Counter[int]()

    @cached(ttl=600, cache=cache)
    async def square(x: int) -> int:
        runs[x] += 1
        return x * x

    try:
        assert await cache.connect()
        for start in range(0, 10_000, 500):
            got = await asyncio.gather(*(square(x) for x in range(start, start + 500)))
            assert got == [x * x for x in range(start, start + 500)]
        per_node = {port: len(keys) for port, keys in redis_cluster.keys_per_node("memo:*").items()}
        entries = {p: n for p, n in per_node.items()}
        assert sum(entries.values()) == 10_000
        assert all(n > 2_500 for n in entries.values()), per_node  # about a third each

        before = {n.port: n.commandstats() for n in redis_cluster.nodes}
        sends.clear()
        got = await asyncio.gather(*(square(x) for x in range(1000)))
        assert got == [x * x for x in range(1000)]
        assert set(runs.values()) == {1}  # every one a hit
        ports = {n.port for n in redis_cluster.nodes}
        # One round trip per primary: the 1 000 concurrent hits batch by node.
        assert {p: sends[p] for p in ports} == dict.fromkeys(ports, 1), dict(sends)
        owned = Counter(
            redis_cluster.node_for(cache.prefix + square.key_for(x)).port for x in range(1000)
        )
        for node in redis_cluster.nodes:
            after = node.commandstats()
            sent = {c: n - before[node.port].get(c, 0) for c, n in after.items()}
            sent = {c: n for c, n in sent.items() if n and not c.startswith(("info", "cluster"))}
            # Nothing but a GET of each of its own keys, all in that one round trip.
            assert sent == {"get": owned[node.port]}, (node.port, sent)
        info = await cache.remote_server().server_info()
        assert info["cluster_primaries"] == 3
        assert info["db0"]["keys"] == sum(n.client().dbsize() for n in redis_cluster.nodes)
    finally:
        await cache.aclose()


async def test_pattern_and_tag_invalidation_remove_exactly_their_entries_on_every_node(
    shared_redis_cluster: Cluster,
) -> None:
    cluster = shared_redis_cluster
    cache = GenericRedisCache(cluster.url, namespace="exact")

    @cached(ttl=600, cache=cache, namespace="a")
    async def a(x: int) -> int:
        return x

    @cached(ttl=600, cache=cache, namespace="b", tags=("team:{x}", "all-b"))
    async def b(x: int) -> int:
        return x

    try:
        await asyncio.gather(*(a(x) for x in range(300)), *(b(x) for x in range(300)))

        def entries(prefix: str) -> dict[int, int]:
            found = cluster.keys_per_node(f"memo:exact:{prefix}:*")
            return {port: len(keys) for port, keys in found.items()}

        assert all(n > 0 for n in entries("a").values()) and sum(entries("a").values()) == 300
        assert await cache.invalidate_pattern("a:*") == 300
        assert sum(entries("a").values()) == 0
        assert sum(entries("b").values()) == 300

        await cache.invalidate_tags("team:7")
        assert sum(entries("b").values()) == 299
        assert await b.peek(7) is MISSING and await b.peek(8) == 8
        await cache.invalidate_tags("all-b")
        assert sum(entries("b").values()) == 0
        leftovers = [k for keys in cluster.keys_per_node("*#lease").values() for k in keys]
        assert leftovers == []
    finally:
        await cache.invalidate_all()
        await cache.aclose()


class GatedLoad:
    """A function tagged ``t`` that reads its source, then waits to be released."""

    def __init__(self, cache: GenericRedisCache) -> None:
        self.started, self.release = asyncio.Event(), asyncio.Event()
        self.source = "old"

        @cached(ttl=600, cache=cache, tags=("t",))
        async def load(x: int) -> str:
            value = self.source
            self.started.set()
            await self.release.wait()
            return value

        self.load = load


async def test_a_value_computed_across_a_tag_invalidation_is_not_stored(
    shared_redis_cluster: Cluster,
) -> None:
    """The tag's set and the entry live on different nodes: the invalidation still voids
    the computation under way."""
    cache = GenericRedisCache(shared_redis_cluster.url, namespace="race")
    gated = GatedLoad(cache)
    load = gated.load
    try:
        call = asyncio.create_task(load(1))
        await gated.started.wait()
        gated.source = "new"
        await cache.invalidate_tags("t")
        gated.release.set()
        assert await call == "old"  # the caller gets its result...
        assert await load.peek(1) is MISSING
        assert await load(1) == "new"  # ...but it was never stored
    finally:
        await cache.invalidate_all()
        await cache.aclose()


async def test_a_store_landing_between_a_tag_reads_its_set_and_deletes_is_deleted(
    shared_redis_cluster: Cluster,
) -> None:
    """The invalidation reads the tag's set (the computation's lease only), the
    computation then stores, and only then does the invalidation delete: the lease names
    its entry, which goes too."""
    cache = GenericRedisCache(shared_redis_cluster.url, namespace="late")
    backend = cache.remote_server()
    assert isinstance(backend, RedisClusterBackend)
    deleting, proceed = asyncio.Event(), asyncio.Event()
    gated = GatedLoad(cache)
    load = gated.load
    tags = backend._tags
    run = tags._run

    async def held_after_reading(what: str, command: Any, **options: Any) -> Any:
        result = await run(what, command, **options)
        if what == "TAG READ":
            deleting.set()
            await proceed.wait()
        return result

    try:
        call = asyncio.create_task(load(1))
        await gated.started.wait()
        gated.source = "new"
        tags._run = held_after_reading
        invalidation = asyncio.create_task(cache.invalidate_tags("t"))
        await deleting.wait()  # the set has been read
        gated.release.set()
        assert await call == "old"  # stored meanwhile: the lease was still there
        proceed.set()
        await invalidation
        assert await load.peek(1) is MISSING
        assert await load(1) == "new"
    finally:
        await cache.invalidate_all()
        await cache.aclose()


async def test_an_unreachable_cluster_is_an_outage_for_the_breaker() -> None:
    from tests.redis_harness import free_port

    backend = RedisClusterBackend.from_url(
        f"redis+cluster://127.0.0.1:{free_port()},127.0.0.1:{free_port()}", connect_timeout=0.2
    )
    try:
        for _ in range(6):
            with pytest.raises(BackendUnavailable):
                await backend.get("memo:k")
        assert backend.breaker.state == "open"
    finally:
        await backend.aclose()


async def test_resharding_100_slots_during_2000_calls_reaches_no_caller(
    redis_cluster: Cluster,
) -> None:
    # No memory tier: every call goes to Redis, where the slots are moving.
    cache = GenericRedisCache(redis_cluster.url, enable_memory_cache=False)

    @cached(ttl=600, cache=cache)
    async def triple(x: int) -> int:
        return 3 * x

    keys = 3000
    try:
        assert await cache.connect()
        for start in range(0, keys, 300):
            await asyncio.gather(*(triple(x) for x in range(start, start + 300)))
        errors_before = (await cache.get_cache_stats())["errors"]
        source, target = redis_cluster.nodes[0], redis_cluster.nodes[1]
        before = target.slots()
        moved = threading.Thread(target=redis_cluster.reshard, args=(100, source, target))
        moved.start()
        wrong, errors, during = 0, [], 0
        for i in range(0, 2000, 20):
            xs = [(i + j) * 7 % keys for j in range(20)]
            alive = moved.is_alive()
            try:
                got = await asyncio.gather(*(triple(x) for x in xs))
            except Exception as exc:  # a caller must never see one
                errors.append(repr(exc))
                continue
            wrong += sum(1 for x, v in zip(xs, got, strict=True) if v != 3 * x)
            during += 20 if alive and moved.is_alive() else 0
        await asyncio.to_thread(moved.join, 120)
        assert not moved.is_alive()
        slots = target.slots() - before
        assert len(slots) == 100
        assert during >= 200, f"only {during} calls ran while the slots moved"
        assert (wrong, errors[:3]) == (0, [])
        # MOVED and ASK were followed inside: not even the cache saw a failed command.
        assert (await cache.get_cache_stats())["errors"] == errors_before
        in_moved = [x for x in range(keys) if slot_of(cache.prefix + triple.key_for(x)) in slots]
        assert in_moved  # keys that moved, now served by the target
        assert [await triple(x) for x in in_moved] == [3 * x for x in in_moved]
        assert [await triple(x) for x in range(keys)] == [3 * x for x in range(keys)]
    finally:
        await cache.aclose()


def _counted(cache: GenericRedisCache) -> tuple[Any, Counter[int]]:
    """A decorated ``x + 1`` on ``cache``, and its runs per argument."""
    runs = Counter[int]()

    @cached(ttl=600, cache=cache)
    async def value(x: int) -> int:
        runs[x] += 1
        return x + 1

    return value, runs


async def _filled(
    cluster: Cluster, cache: GenericRedisCache, value: Any, node: Any
) -> tuple[dict[int, str], set[int]]:
    """``value`` of 0..299 stored; their Redis keys, and which of them ``node`` serves."""
    assert await cache.connect()
    await asyncio.gather(*(value(x) for x in range(300)))
    keys = {x: cache.prefix + value.key_for(x) for x in range(300)}
    return keys, {x for x, key in keys.items() if cluster.node_for(key) is node}


async def test_a_paused_node_is_an_outage_of_its_keys_only(redis_cluster: Cluster) -> None:
    cache = GenericRedisCache(redis_cluster.url, enable_memory_cache=False, operation_timeout=0.3)
    value, runs = _counted(cache)
    try:
        paused = redis_cluster.nodes[2]
        _, on_paused = await _filled(redis_cluster, cache, value, paused)
        assert 0 < len(on_paused) < 300
        runs.clear()
        paused.pause()
        try:
            for _ in range(3):
                got = await asyncio.gather(*(value(x) for x in range(300)))
                assert got == [x + 1 for x in range(300)]  # never an error, never wrong
        finally:
            paused.resume()
        recomputed_elsewhere = {x for x in runs if x not in on_paused}
        assert recomputed_elsewhere == set()  # the other nodes' keys: hits from Redis
        backend = cache.remote_server()
        assert isinstance(backend, RedisClusterBackend)
        states = backend.lanes()
        assert states[f"127.0.0.1:{paused.port}"] in ("open", "half_open")
        assert sorted(s for name, s in states.items() if not name.endswith(str(paused.port))) == [
            "closed",
            "closed",
        ]
    finally:
        await cache.aclose()


async def test_a_paused_nodes_keys_are_served_from_memory_and_only_its_copies_are_flushed(
    redis_cluster: Cluster,
) -> None:
    """With the memory tier on: while one node is out, answers from the others do not
    flush this process's copies, the out node's keys are served from them, and when it
    is back only its own copies are dropped (others may have written them meanwhile)."""
    cache = GenericRedisCache(redis_cluster.url, operation_timeout=0.3)
    value, runs = _counted(cache)
    try:
        paused = redis_cluster.nodes[1]
        keys, on_paused = await _filled(redis_cluster, cache, value, paused)
        memory = cache.backend.memory  # type: ignore[attr-defined]
        assert all(memory.get_local(key) is not None for key in keys.values())
        paused.pause()
        try:
            # New keys: those of the paused node fail, the others are stored in Redis.
            got = await asyncio.gather(*(value(x) for x in range(1000, 1300)))
            assert got == [x + 1 for x in range(1000, 1300)]
            assert cache.backend.remote_down  # type: ignore[attr-defined]
            assert all(memory.get_local(key) is not None for key in keys.values())
            runs.clear()
            got = await asyncio.gather(*(value(x) for x in on_paused))
            assert got == [x + 1 for x in on_paused]
            assert dict(runs) == {}  # served from this process's copies
        finally:
            paused.resume()

        backend = cache.remote_server()
        assert isinstance(backend, RedisClusterBackend)
        lane = f"127.0.0.1:{paused.port}"
        for _ in range(100):  # the node's breaker lets a probe through each second
            await asyncio.gather(*(value(x) for x in on_paused))
            if not cache.backend.remote_down:  # type: ignore[attr-defined]
                break
            await asyncio.sleep(0.05)
        assert backend.lanes()[lane] == "closed"
        assert not cache.backend.remote_down  # type: ignore[attr-defined]
        others = [key for x, key in keys.items() if x not in on_paused]
        assert all(memory.get_local(key) is not None for key in others)  # never dropped
    finally:
        await cache.aclose()
