"""Coherence: writes in one process reach the memory tiers of others.

Two caches on one real redis-server stand for two processes: each has its own memory
tier, its own connections and its own origin, exactly as separate processes would. The
tests over ``two_processes`` run with both ways of keeping tiers coherent (server-assisted
tracking and the channel); those about the channel's own mechanics pin the channel, and
tracking's own mechanics are in test_tracking.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from memo import Cache, GenericRedisCache
from memo.backends import MemoryBackend
from memo.backends._messages import decode_message, encode_keys, encode_pattern
from memo.backends._tracking import TrackingListener
from memo.backends.invalidation import InvalidationListener
from memo.backends.redis import RedisBackend
from memo.backends.tiered import TieredBackend
from tests.redis_harness import RedisServer
from tests.test_cli import run


async def eventually(condition: Callable[[], bool], what: str, within: float = 10.0) -> None:
    """Wait for an event that arrives over the network; fail, naming it, if it never does."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + within
    while not condition():
        if loop.time() > give_up:
            pytest.fail(f"never happened: {what}")
        await asyncio.sleep(0.01)


def in_memory(cache: Cache, key: str) -> bool:
    backend = cache.backend
    assert isinstance(backend, TieredBackend)
    return backend.memory.get_local(cache.prefix + key) is not None


def tiered(cache: Cache) -> TieredBackend:
    backend = cache.backend
    assert isinstance(backend, TieredBackend)
    return backend


def tracked(cache: Cache) -> bool:
    listener = tiered(cache).listener
    return listener is not None and listener.reads_tracked


async def heard(cache: Cache, write: Awaitable[Any]) -> None:
    """Run another process's ``write`` and wait until ``cache`` has heard it (with
    tracking, nothing is told of a key the tier never read: the write is enough)."""
    listener = tiered(cache).listener
    assert listener is not None
    before = listener.heard
    await write
    if not tracked(cache):
        await eventually(lambda: listener.heard > before, "the announcement heard")


async def kill_listeners(server: RedisServer) -> int:
    """What a network blip does to the connections memory tiers listen on."""
    client = server.client()
    killed = int(client.client_kill_filter(_type="pubsub") or 0)
    for entry in client.client_list():
        if entry.get("name") == "memo-tracking":
            killed += int(client.client_kill_filter(_id=entry["id"]) or 0)
    return killed


async def holding_a_copy(
    writer: Cache, reader: Cache, key: str, value: Any
) -> InvalidationListener | TrackingListener:
    """``writer`` stores ``value``; ``reader`` hears it, reads it and holds a memory copy."""
    await heard(reader, writer.set(key, value))
    assert value == await reader.get(key)
    assert in_memory(reader, key)
    listener = tiered(reader).listener
    assert listener is not None and listener.trusted
    return listener


@pytest.fixture(params=["tracking", "channel"])
async def two_processes(
    redis_server: RedisServer, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[Cache, Cache]]:
    first = GenericRedisCache(redis_server.url, coherence=request.param)
    second = GenericRedisCache(redis_server.url, coherence=request.param)
    assert await first.connect() and await second.connect()
    assert tracked(first) == (request.param == "tracking")
    yield first, second
    await first.aclose()
    await second.aclose()


@pytest.fixture
async def channel_processes(redis_server: RedisServer) -> AsyncIterator[tuple[Cache, Cache]]:
    """Two processes whose tiers hear each other through the channel."""
    first = GenericRedisCache(redis_server.url, coherence="channel")
    second = GenericRedisCache(redis_server.url, coherence="channel")
    assert await first.connect() and await second.connect()
    yield first, second
    await first.aclose()
    await second.aclose()


def test_messages_round_trip_as_ascii_and_garbage_is_refused() -> None:
    keys = encode_keys("ab12", ["memo:a", "memo:é"])
    assert keys.isascii()  # a decode_responses=True client can read it as text
    assert ("ab12", ["memo:a", "memo:é"], None) == decode_message(keys)
    assert ("ab12", ["memo:a", "memo:é"], None) == decode_message(keys.decode())
    pattern = encode_pattern("ab12", "memo:user:*")
    assert ("ab12", None, "memo:user:*") == decode_message(pattern)
    for garbage in (b"", b"\xc1", b"[1,2,3]", b"[1,0,[]]", b'["o",0,[1]]', b'["o",2,"x"]'):
        with pytest.raises(ValueError, match="not a memo invalidation message"):
            decode_message(garbage)


async def test_a_write_in_one_process_drops_the_copy_another_holds(
    two_processes: tuple[Cache, Cache],
) -> None:
    writer, reader = two_processes
    await heard(reader, writer.set("user:1", {"name": "old"}))
    assert {"name": "old"} == await reader.get("user:1")
    assert in_memory(reader, "user:1")  # the second process now serves it from memory

    await writer.set("user:1", {"name": "new"})
    await eventually(lambda: not in_memory(reader, "user:1"), "the reader's copy dropped")
    assert {"name": "new"} == await reader.get("user:1")


async def test_deletes_patterns_and_clear_reach_the_other_memory_tier(
    two_processes: tuple[Cache, Cache],
) -> None:
    writer, reader = two_processes
    await heard(
        reader, writer.set_many({"a": 1, "user:1": 1, "user:2": 2, "order:1": 3, "keep": 4})
    )
    for key in ("a", "user:1", "user:2", "order:1", "keep"):
        await reader.get(key)
        assert in_memory(reader, key)

    await writer.delete("a")
    await eventually(lambda: not in_memory(reader, "a"), "delete reached the reader")
    await writer.invalidate_pattern("user:*")
    await eventually(lambda: not in_memory(reader, "user:1"), "pattern reached the reader")
    assert not in_memory(reader, "user:2")
    assert in_memory(reader, "order:1") and in_memory(reader, "keep")
    await writer.clear()
    await eventually(lambda: not in_memory(reader, "keep"), "clear reached the reader")
    assert not in_memory(reader, "order:1")


async def test_with_the_channel_a_process_keeps_its_own_fresh_write_in_memory(
    channel_processes: tuple[Cache, Cache],
) -> None:
    writer, reader = channel_processes
    await writer.set("mine", 1)
    # Published after "mine": once the writer hears it, it has had its own message too.
    await heard(writer, reader.set("probe", 1))
    assert in_memory(writer, "mine")  # its own announcement did not drop it


async def test_a_lost_channel_bypasses_memory_and_flushes_it_before_trusting_it_again(
    two_processes: tuple[Cache, Cache], redis_server: RedisServer
) -> None:
    writer, reader = two_processes
    listener = await holding_a_copy(writer, reader, "k", "v1")

    assert await kill_listeners(redis_server) >= 2  # both caches' listening connections

    await eventually(lambda: listener.reconnects >= 1, "the reader resubscribed")
    assert listener.trusted
    assert not in_memory(reader, "k")  # flushed: a write may have been missed meanwhile
    await writer.set("k", "v2")
    assert "v2" == await reader.get("k")
    stats = await reader.get_cache_stats()
    assert stats["redis"]["invalidation"]["listening"] is True
    assert stats["redis"]["invalidation"]["reconnects"] >= 1


@pytest.mark.parametrize("coherence", ["tracking", "channel"])
async def test_while_the_listener_is_down_memory_is_neither_read_nor_filled(
    redis_server: RedisServer, coherence: str
) -> None:
    redis = RedisBackend.from_url(redis_server.url, coherence=coherence)
    backend = TieredBackend(MemoryBackend(), redis, listen=True, heartbeat=0.2)
    cache = Cache(backend)
    try:
        assert await backend.start_listening(5.0)
        await cache.set("k", 1)
        await cache.get("k")  # (with tracking, only a read fills memory)
        assert in_memory(cache, "k")

        backend._trust(False)  # what the listener does the moment it loses the channel
        assert backend.get_local(cache.prefix + "k") is None  # the hit path skips memory
        await cache.set("other", 2)
        assert not in_memory(cache, "other")  # and writes do not fill it
        assert 2 == await cache.get("other")  # served by Redis
        assert not in_memory(cache, "other")
    finally:
        await cache.aclose()


@pytest.mark.parametrize("coherence", ["tracking", "channel"])
async def test_a_paused_server_is_noticed_by_its_silence(
    redis_server: RedisServer, coherence: str
) -> None:
    redis = RedisBackend.from_url(
        redis_server.url, connect_timeout=0.2, operation_timeout=0.2, coherence=coherence
    )
    backend = TieredBackend(MemoryBackend(), redis, listen=True, heartbeat=0.1)
    cache = Cache(backend)
    try:
        assert await backend.start_listening(5.0)
        listener = backend.listener
        assert listener is not None
        redis_server.pause()
        try:
            await eventually(lambda: not listener.trusted, "the silent channel distrusted")
        finally:
            redis_server.resume()
        await eventually(lambda: listener.trusted, "the channel trusted again after resume")
    finally:
        await cache.aclose()


class _HeldRemote(MemoryBackend):
    """A remote whose reads (and, if asked, writes) take effect at once but answer only
    when released: a reply still on its way while other things happen."""

    def __init__(self, *, hold_writes: bool = False) -> None:
        super().__init__()
        self.reading = asyncio.Event()
        self.writing = asyncio.Event()
        self.release = asyncio.Event()
        self.hold_writes = hold_writes

    async def get_with_ttl(self, key: str) -> tuple[bytes | None, int | None]:
        data = await self.get(key)
        self.reading.set()
        await self.release.wait()
        return data, 60_000

    async def set(self, key: str, value: bytes, ttl_ms: int) -> None:
        await super().set(key, value, ttl_ms)
        if self.hold_writes:
            self.writing.set()
            await self.release.wait()


@pytest.mark.parametrize(
    ("announced", "filled"),
    [("memo:default:k", False), ("memo:default:other", True)],
    ids=["its-own-key", "another-key"],
)
async def test_a_read_fills_memory_unless_its_key_was_announced_meanwhile(
    announced: str, filled: bool
) -> None:
    remote = _HeldRemote()
    await remote.set("memo:default:k", b"bytes", 60_000)
    backend = TieredBackend(MemoryBackend(), remote)
    read = asyncio.create_task(backend.get("memo:default:k"))
    await remote.reading.wait()  # Redis has answered; the reply is on its way
    backend.heard.keys([announced])  # an announcement arrives first
    remote.release.set()
    assert b"bytes" == await read  # the caller always gets what Redis said
    assert filled == (backend.memory.get_local("memo:default:k") is not None)


async def test_undecodable_messages_are_counted_and_ignored(
    channel_processes: tuple[Cache, Cache], redis_server: RedisServer
) -> None:
    writer, reader = channel_processes
    listener = tiered(reader).listener
    assert listener is not None
    await heard(reader, writer.set("k", 1))
    await reader.get("k")
    channel = tiered(reader).remote.invalidation_channel  # type: ignore[attr-defined]
    redis_server.client().publish(channel, b"not msgpack \xc1")
    await eventually(lambda: listener.dropped_messages == 1, "the garbage counted")
    assert listener.trusted and in_memory(reader, "k")


async def test_a_refused_publish_does_not_fail_writes(
    make_redis_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    server: RedisServer = make_redis_server(acl_user=("app", "app-secret"))
    server.client().execute_command("ACL", "SETUSER", "app", "-publish")
    cache = GenericRedisCache(server.url, coherence="channel")
    try:
        with caplog.at_level(logging.WARNING, logger="memo"):
            await cache.set("k", 1)
            await cache.set("k", 2)
        assert 2 == await cache.get("k")
        refused = [r for r in caplog.records if "refused PUBLISH" in r.getMessage()]
        assert 1 == len(refused)  # said once, then announcing stops
        assert "app-secret" not in caplog.text
        assert cache.redis is not None and cache.redis.announce is False
    finally:
        await cache.aclose()


@pytest.mark.parametrize("coherence", ["tracking", "channel"])
async def test_the_cli_invalidation_reaches_a_running_process(
    redis_server: RedisServer, coherence: str
) -> None:
    cache = GenericRedisCache(redis_server.url, coherence=coherence)
    try:
        assert await cache.connect()
        listener = tiered(cache).listener
        # The channel's listener flushes the tier once, a while after subscribing (for
        # writes made unannounced before it joined): the copies below must outlive it.
        await eventually(lambda: getattr(listener, "settled", True), "the listener settled")
        await cache.set_many({"user:1": 1, "user:2": 2, "order:1": 3})
        for key in ("user:1", "user:2", "order:1"):
            await cache.get(key)
        assert in_memory(cache, "user:1")

        done = await asyncio.to_thread(run, "invalidate", "user:*", "--yes", url=redis_server.url)
        assert 0 == done.returncode, done.stderr
        await eventually(lambda: not in_memory(cache, "user:1"), "the CLI's pattern arrived")
        assert not in_memory(cache, "user:2") and in_memory(cache, "order:1")
    finally:
        await cache.aclose()


async def test_without_the_channel_nothing_is_published_or_heard(
    redis_server: RedisServer,
) -> None:
    cache = GenericRedisCache(redis_server.url, invalidation_channel=False)
    try:
        await cache.set("k", 1)
        assert 0 == redis_server.commandstats().get("publish", 0)
        assert tiered(cache).listener is None
        assert in_memory(cache, "k")  # memory is trusted at once: nothing to wait for
    finally:
        await cache.aclose()


async def test_the_channel_is_a_configuration_field(redis_server: RedisServer) -> None:
    from memo import CacheConfig, CacheFactory, ConfigError

    with pytest.raises(ConfigError, match="invalidation_channel='no': must be True or False"):
        CacheConfig(invalidation_channel="no")  # type: ignore[arg-type]
    off = await CacheFactory().create_cache_from_config(
        {"redis_url": redis_server.url, "invalidation_channel": False}
    )
    on = await CacheFactory().create_cache_from_config({"redis_url": redis_server.url})
    try:
        assert tiered(off).listener is None
        listener = tiered(on).listener
        assert listener is not None and listener.trusted  # connect() waited for it
    finally:
        await off.aclose()
        await on.aclose()


async def test_writes_use_one_script_call_and_fall_back_when_scripts_are_refused(
    make_redis_server: Any,
) -> None:
    server: RedisServer = make_redis_server(acl_user=("app", "app-secret"))
    cache = GenericRedisCache(server.url, coherence="channel")
    try:
        await cache.set("k", 1)
        await cache.delete("k")
        before = server.commandstats()  # (commands run by scripts count too)
        assert (1, 2) == (before["set"], before["publish"])
        assert before["evalsha"] >= 2  # (the first call of each script also met NOSCRIPT)

        server.client().execute_command("ACL", "SETUSER", "app", "-evalsha", "-script")
        await cache.set("k", 2)  # refused as a script: pipelined instead
        await cache.set("k", 3)
        assert 3 == await cache.get("k")
        after = server.commandstats()
        assert (3, 4) == (after["set"], after["publish"])
    finally:
        await cache.aclose()


async def test_a_restarted_server_is_resubscribed_and_the_stale_tier_flushed(
    two_processes: tuple[Cache, Cache], redis_server: RedisServer
) -> None:
    writer, reader = two_processes
    listener = await holding_a_copy(writer, reader, "k", "before")

    redis_server.kill()
    await eventually(lambda: not listener.trusted, "the lost channel distrusted")
    redis_server.restart()  # an empty server: what the reader holds is now stale
    await eventually(lambda: listener.trusted, "the channel back after the restart")
    assert not in_memory(reader, "k")
    assert await reader.get("k") is None  # from the new server, not the old copy


async def test_a_read_that_raced_this_process_own_delete_does_not_fill_memory() -> None:
    remote = _HeldRemote()
    await remote.set("memo:default:k", b"old", 60_000)
    backend = TieredBackend(MemoryBackend(), remote)
    read = asyncio.create_task(backend.get("memo:default:k"))
    await remote.reading.wait()  # Redis has answered "old"; the reply is on its way
    assert await backend.delete("memo:default:k")
    remote.release.set()
    assert b"old" == await read
    assert backend.memory.get_local("memo:default:k") is None  # not refilled after the delete


async def test_a_write_overtaken_by_another_process_does_not_fill_memory() -> None:
    remote = _HeldRemote(hold_writes=True)
    backend = TieredBackend(MemoryBackend(), remote)
    write = asyncio.create_task(backend.set("memo:default:k", b"mine", 60_000))
    await remote.writing.wait()  # applied in Redis; the reply is on its way
    remote.set_local("memo:default:k", b"theirs", 60_000)  # another process overwrites
    backend.heard.keys(["memo:default:k"])  # and its announcement arrives first
    remote.release.set()
    await write
    assert backend.memory.get_local("memo:default:k") is None  # "mine" is not kept


async def test_two_writes_of_one_key_in_flight_leave_memory_empty() -> None:
    remote = _HeldRemote(hold_writes=True)
    backend = TieredBackend(MemoryBackend(), remote)
    first = asyncio.create_task(backend.set("memo:default:k", b"one", 60_000))
    await remote.writing.wait()
    second = asyncio.create_task(backend.set("memo:default:k", b"two", 60_000))
    await asyncio.sleep(0)
    remote.release.set()
    await asyncio.gather(first, second)
    # Which reached Redis last is not known here, so neither is trusted to memory.
    assert backend.memory.get_local("memo:default:k") is None
    await backend.set("memo:default:k", b"three", 60_000)  # alone, a write fills as usual
    assert b"three" == backend.memory.get_local("memo:default:k")


async def test_a_pattern_delete_that_fails_late_has_announced_what_it_deleted(
    channel_processes: tuple[Cache, Cache], monkeypatch: pytest.MonkeyPatch
) -> None:
    from memo.exceptions import BackendTimeout

    writer, reader = channel_processes
    await heard(reader, writer.set_many({f"user:{i}": i for i in range(5)}))
    for i in range(5):
        await reader.get(f"user:{i}")
    assert in_memory(reader, "user:3")

    redis = writer.redis
    assert redis is not None
    run = redis._run

    async def publish_times_out(what: str, command: Any, **kwargs: Any) -> Any:
        # The pattern's own announcement, after every batch was deleted, is lost.
        if what == "PUBLISH":
            raise BackendTimeout("Redis PUBLISH did not finish within 0.5 s")
        return await run(what, command, **kwargs)

    monkeypatch.setattr(redis, "_run", publish_times_out)
    assert 5 == await writer.invalidate_pattern("user:*")  # the deletes stand
    await eventually(lambda: not in_memory(reader, "user:3"), "the batch's keys announced")
    assert not any(in_memory(reader, f"user:{i}") for i in range(5))


async def test_a_listener_on_a_decoding_client_still_hears(redis_server: RedisServer) -> None:
    import redis.asyncio as aioredis

    decoding = RedisBackend.from_url(
        redis_server.url,
        client_factory=lambda: aioredis.Redis.from_url(redis_server.url, decode_responses=True),
    )
    backend = TieredBackend(MemoryBackend(), decoding, listen=True, heartbeat=0.2)
    reader = Cache(backend)
    writer = GenericRedisCache(redis_server.url)
    try:
        assert await backend.start_listening(5.0)
        listener = backend.listener
        assert listener is not None
        await writer.set("k", 1)
        await eventually(lambda: listener.heard >= 1, "the decoded announcement heard")
        assert 0 == listener.reconnects and 0 == listener.dropped_messages
    finally:
        await reader.aclose()
        await writer.aclose()


def _write_in_child(cache: Cache) -> None:
    asyncio.run(cache.set("k", "from the child"))


@pytest.mark.slow
@pytest.mark.parametrize("coherence", ["tracking", "channel"])
def test_forked_siblings_hear_each_other(redis_server: RedisServer, coherence: str) -> None:
    import multiprocessing

    # Built before the fork, as with --preload.
    cache = GenericRedisCache(redis_server.url, coherence=coherence)

    async def parent() -> None:
        assert await cache.connect()
        await cache.set("k", "from the parent")
        assert "from the parent" == await cache.get("k")
        assert in_memory(cache, "k")
        child = multiprocessing.get_context("fork").Process(target=_write_in_child, args=(cache,))
        child.start()
        await asyncio.to_thread(child.join, 30)
        assert 0 == child.exitcode
        await eventually(lambda: not in_memory(cache, "k"), "the child's write heard")
        assert "from the child" == await cache.get("k")
        await cache.aclose()

    asyncio.run(parent())


async def test_a_refused_subscribe_leaves_a_working_cache_that_reads_redis(
    make_redis_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    server: RedisServer = make_redis_server(acl_user=("app", "app-secret"))
    server.client().execute_command("ACL", "SETUSER", "app", "resetchannels")
    cache = GenericRedisCache(server.url, connect_timeout=0.3, coherence="channel")
    try:
        with caplog.at_level(logging.WARNING, logger="memo"):
            assert await cache.connect()  # Redis answers; only the channel is refused
            await cache.set("k", 1)
            assert 1 == await cache.get("k")
        assert not in_memory(cache, "k")  # never trusted, so never filled
        health = await cache.health_check()
        assert "degraded" == health["status"]
        assert "memory tier is bypassed" in health["reason"]
        lost = [r.getMessage() for r in caplog.records if "channel" in r.getMessage()]
        assert lost and "invalidation_channel=False" in lost[0]
        assert "app-secret" not in caplog.text
    finally:
        await cache.aclose()


async def test_a_computation_under_way_when_another_process_writes_does_not_store(
    two_processes: tuple[Cache, Cache],
) -> None:
    from memo import cached

    first, second = two_processes
    started, release = asyncio.Event(), asyncio.Event()
    runs = 0

    @cached(ttl=60, cache=second)
    async def report(day: int) -> str:
        nonlocal runs
        runs += 1
        started.set()
        await release.wait()
        return f"computed from old data, run {runs}"

    key = report.key_for(1)
    computing = asyncio.create_task(report(1))
    await started.wait()
    # Meanwhile another process replaces the data the computation read.
    await heard(second, first.set(key, "fresh"))
    release.set()
    assert "computed from old data, run 1" == await computing  # its caller still gets it
    assert "fresh" == await first.get(key)  # but it did not overwrite the fresh value
    assert "fresh" == await report(1)
    assert 1 == runs


async def _stubborn(ended: asyncio.Event, swallowed: int) -> None:
    """A step that swallows ``swallowed`` cancellations and goes on, as redis-py's
    connect can (it then reconnected after its pool was closed), then ends."""
    for _ in range(swallowed):
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(10)
    try:
        await asyncio.sleep(10)
    finally:
        ended.set()


@pytest.mark.parametrize("swallowed", [0, 1])
async def test_a_step_given_up_on_by_its_deadline_has_ended_when_within_raises(
    swallowed: int,
) -> None:
    from memo.backends._listener_task import within

    ended = asyncio.Event()
    with pytest.raises(TimeoutError):
        await within(_stubborn(ended, swallowed), 0.01, "the step")
    assert ended.is_set()


@pytest.mark.parametrize("swallowed", [0, 1])
async def test_a_step_whose_caller_is_cancelled_has_ended_when_the_caller_ends(
    swallowed: int,
) -> None:
    from memo.backends._listener_task import within

    ended = asyncio.Event()
    caller = asyncio.create_task(within(_stubborn(ended, swallowed), 10, "the step"))
    for _ in range(3):  # the caller starts the step, which starts waiting
        await asyncio.sleep(0)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert ended.is_set()
