"""GenericRedisCache against real redis-server processes: killed, paused, corrupted, TLS."""

from __future__ import annotations

import asyncio
import logging
import pickle
import struct
import time
from pathlib import Path
from typing import Any

import pytest
import redis as sync_redis
import redis.asyncio as aioredis
import xxhash

from memo import (
    BackendAuthError,
    BackendError,
    BackendUnavailable,
    CacheFactory,
    ConfigError,
    InMemoryCache,
    cached,
)
from memo._options import MemoryOptions
from memo.backends.redis import RedisBackend
from memo.backends.tiered import TieredBackend
from memo.redis_cache import GenericRedisCache
from memo.resilience import CircuitBreaker
from memo.testing import FakeClock
from tests.redis_harness import RedisServer, TlsFiles


def redis_only(server: RedisServer, **kw: Any) -> GenericRedisCache:
    return GenericRedisCache(server.url, enable_memory_cache=False, **kw)


def test_the_defaults_are_the_documented_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CACHE_REDIS_URL", raising=False)
    cache = GenericRedisCache("redis://127.0.0.1:1/0")
    backend = cache.backend
    assert isinstance(backend, TieredBackend)
    redis_backend = cache.redis
    assert redis_backend is not None
    assert cache.enable_memory_cache is True
    assert cache.fail_on_connection_error is False
    assert 1.0 == redis_backend.connect_timeout
    assert 0.5 == redis_backend.operation_timeout
    assert 50 == redis_backend.max_connections
    assert 60_000 == backend.memory.max_ttl_ms
    assert 1000 == backend.memory.max_entries
    assert 1024 * 1024 == cache.codec.max_value_size
    assert 3600_000 == cache.default_ttl_ms


async def test_the_pool_waits_within_the_deadline_and_redis_py_retries_are_off() -> None:
    backend = RedisBackend.from_url("redis://127.0.0.1:1/0")
    client = backend.client()
    pool = client.connection_pool
    assert type(pool).__name__ == "BlockingConnectionPool"
    assert 0.5 == pool.timeout  # type: ignore[attr-defined]
    # With a pool given, redis-py takes the retry policy from the pool's connections.
    assert 0 == pool.connection_kwargs["retry"].get_retries()
    await backend.aclose()


def test_a_redis_cache_without_a_url_is_refused_with_the_way_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CACHE_REDIS_URL", "redis://cachehost:6380/3")  # not read here
    with pytest.raises(ConfigError, match=r"^redis_url=None: .*InMemoryCache.*for_web_app"):
        GenericRedisCache()


async def test_without_a_url_the_factory_caches_in_memory_and_says_so_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import memo.factory as module

    monkeypatch.delenv("CACHE_REDIS_URL", raising=False)
    monkeypatch.setattr(module, "_warned_memory_only", False)
    with caplog.at_level(logging.WARNING, logger="memo"):
        first = await CacheFactory().for_web_app()
        await CacheFactory().for_web_app()
    assert isinstance(first, InMemoryCache)
    assert 1 == sum("memory only" in r.getMessage() for r in caplog.records)


async def test_the_factory_falls_back_to_cache_redis_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CACHE_REDIS_URL", "redis://:pw@127.0.0.1:1/3")
    cache = await CacheFactory().for_web_app(connect_timeout=0.05, operation_timeout=0.05)
    assert isinstance(cache, GenericRedisCache)
    assert "redis://:***@127.0.0.1:1/3" == cache.redis.masked_url
    await cache.aclose()


async def test_two_thousand_calls_survive_a_killed_server_and_redis_is_used_again(
    redis_server: RedisServer,
) -> None:
    cache = GenericRedisCache(redis_server.url, operation_timeout=0.5)
    assert await cache.connect()
    assert cache.redis is not None
    cache.redis.breaker.reset_timeout = 0.2

    @cached(ttl=60, cache=cache)
    async def square(x: int) -> int:
        return x * x

    errors: list[BaseException] = []
    for i in range(2000):
        if i == 500:
            redis_server.kill()
        try:
            assert i % 300 * (i % 300) == await square(i % 300)
        except BaseException as exc:  # any exception reaching a caller fails the test
            errors.append(exc)
    assert [] == errors

    redis_server.restart()
    key = cache.prefix + square.key_for(12345)
    deadline = time.monotonic() + 10
    while not redis_server.client().exists(key):
        assert time.monotonic() < deadline, "the cache never wrote to Redis again"
        await square.invalidate(12345)
        await square(12345)
        await asyncio.sleep(0.05)
    redis_server.client().set(cache.prefix + "planted", cache.encode_entry("from redis", 60_000))
    assert "from redis" == await cache.get("planted")
    await cache.aclose()


async def test_a_paused_server_bounds_every_call_and_an_open_breaker_sends_nothing(
    redis_server: RedisServer,
) -> None:
    deadline = 0.3
    cache = redis_only(redis_server, operation_timeout=deadline)
    assert cache.redis is not None
    breaker = cache.redis.breaker = CircuitBreaker(failure_threshold=5, reset_timeout=60)

    @cached(ttl=60, cache=cache)
    async def load(x: int) -> int:
        return x + 1

    assert 2 == await load(1)  # connections are open before the pause
    before = redis_server.commandstats()
    redis_server.pause()
    # A call makes at most two Redis operations (read, write), each ending by the deadline.
    bound = 2 * deadline + 2 * deadline + 0.5
    slowest = 0.0
    calls_while_open = 0
    try:
        for x in range(100, 300):
            started = time.monotonic()
            assert x + 1 == await load(x)
            slowest = max(slowest, time.monotonic() - started)
            if breaker.state == "open":
                calls_while_open += 1
    finally:
        redis_server.resume()
    after = redis_server.commandstats()

    assert slowest < bound
    assert calls_while_open > 150
    sent = {cmd: n - before.get(cmd, 0) for cmd, n in after.items() if cmd not in ("info",)}
    # Only commands sent before the breaker opened can have reached the server (at most
    # one per failure, a script counted with the commands it runs: up to five); the
    # 150+ calls made while it was open (no probe was due) sent nothing.
    assert 1 <= sum(sent.values()) <= 5 * breaker.failure_threshold, sent
    await cache.aclose()


async def test_the_breaker_probes_and_closes_once_the_server_answers(
    redis_server: RedisServer,
) -> None:
    clock = FakeClock()
    backend = RedisBackend.from_url(
        redis_server.url,
        operation_timeout=0.2,
        breaker=CircuitBreaker(failure_threshold=2, reset_timeout=0.2, clock=clock),
    )
    await backend.set("memo:t:k", b"v", 60_000)
    redis_server.kill()
    for _ in range(3):
        with pytest.raises(BackendUnavailable):
            await backend.get("memo:t:k")
    assert "open" == backend.breaker.state
    redis_server.restart()
    assert await backend.ping() is False  # still open: no probe before reset_timeout
    clock.advance(0.2)
    assert await backend.ping()
    assert "closed" == backend.breaker.state
    await backend.aclose()


def _with_checksum(data: bytearray) -> bytes:
    data[4:12] = struct.pack(">Q", xxhash.xxh3_64_intdigest(bytes(data[12:])))
    return bytes(data)


async def test_damaged_values_are_misses_and_only_the_corrupt_ones_are_deleted(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    cache = redis_only(redis_server, compression_threshold=0)
    client = redis_server.client()
    await cache.set("template", "x" * 5000)
    valid = bytearray(client.get(cache.prefix + "template") or b"")
    assert valid[3] & 1  # compressed, so the size prefix can be forged

    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self) -> tuple[Any, ...]:
            return (open, (str(marker), "w"))

    newer = bytearray(valid)
    newer[2] = 2
    huge = bytearray(valid)
    huge[32:36] = struct.pack(">I", 2**31)
    flipped = bytearray(valid)
    flipped[len(valid) // 2] ^= 0x10
    planted = {
        "truncated": bytes(valid[: len(valid) // 2]),
        "flipped": bytes(flipped),
        "huge": _with_checksum(huge),
        "pickle": pickle.dumps(Exploit()),
        "newer": bytes(newer),
    }
    for name, data in planted.items():
        client.set(cache.prefix + name, data, px=60_000)

    for name in planted:
        assert await cache.get(name) is None, name

    assert not marker.exists()
    for name in ("truncated", "flipped", "huge", "pickle"):
        assert not client.exists(cache.prefix + name), name
    assert planted["newer"] == client.get(cache.prefix + "newer")
    assert 5 == (await cache.get_cache_stats())["errors"]
    await cache.aclose()


async def test_tls_works_with_the_ca_and_refuses_a_server_it_cannot_verify(
    make_redis_server: Any, tls_files: TlsFiles
) -> None:
    server: RedisServer = make_redis_server(tls=tls_files)
    assert server.url.startswith("rediss://")
    trusting = GenericRedisCache(server.url, ssl_ca_certs=str(tls_files.ca))
    assert await trusting.connect()
    await trusting.set("k", {"secure": True})
    assert {"secure": True} == await trusting.get("k")
    assert server.client().exists(trusting.prefix + "k")

    doubting = RedisBackend.from_url(server.url, ssl_ca_certs=str(tls_files.other_ca))
    with pytest.raises(BackendUnavailable):
        await doubting.get("memo:any")
    plain_url = server.url.replace("rediss://", "redis://")
    plain = RedisBackend.from_url(plain_url, operation_timeout=0.5)
    assert await plain.ping() is False
    await trusting.aclose()
    await doubting.aclose()
    await plain.aclose()


async def test_a_memory_copy_never_outlives_its_redis_entry(redis_server: RedisServer) -> None:
    clock = FakeClock()
    from memo.backends import MemoryBackend

    tier = TieredBackend(
        MemoryBackend(MemoryOptions(memory_max_ttl=60), clock=clock),
        RedisBackend.from_url(redis_server.url),
    )
    redis_server.client().set("memo:t:k", b"v", px=5_000)
    assert b"v" == await tier.get("memo:t:k")
    remaining = await tier.memory.ttl("memo:t:k")
    assert remaining is not None and remaining <= 5_000
    clock.advance(5)
    assert tier.memory.get_local("memo:t:k") is None
    await tier.aclose()


async def test_a_short_ttl_expires_in_both_tiers_on_the_real_clock(
    redis_server: RedisServer,
) -> None:
    cache = GenericRedisCache(redis_server.url)
    await cache.set("k", "v", ttl=0.3)
    assert "v" == await cache.get("k")  # from memory
    for _ in range(500):  # each tier on its own real clock: wait until both let it go
        served = await cache.get("k")
        in_redis = bool(redis_server.client().exists(cache.prefix + "k"))
        if served is None and not in_redis:
            break
        await asyncio.sleep(0.01)
    else:
        pytest.fail(f"the entry never expired: served {served!r}, in Redis {in_redis}")
    await cache.aclose()


async def test_a_cache_built_while_redis_is_down_works_in_memory_then_uses_redis(
    redis_server: RedisServer,
) -> None:
    url = redis_server.url
    redis_server.kill()
    clock = FakeClock()
    cache = GenericRedisCache(url, enable_memory_cache=False, operation_timeout=0.3, clock=clock)
    assert await cache.connect() is False
    assert cache.redis is not None
    await cache.set("during", "outage value")
    assert "outage value" == await cache.get("during")
    assert await cache.delete("during") is False  # the delete could not reach Redis
    assert (await cache.get_cache_stats())["errors"] >= 2

    redis_server.restart()
    clock.advance(cache.redis.breaker.reset_timeout)  # the breaker may probe again
    assert await cache.connect()
    await cache.set("after", "in redis")
    assert redis_server.client().exists(cache.prefix + "after")
    assert await cache.get("during") is None  # the outage tier was flushed
    await cache.aclose()


async def test_fail_on_connection_error_raises_for_connect_and_explicit_writes(
    redis_server: RedisServer,
) -> None:
    url = redis_server.url
    redis_server.kill()
    cache = GenericRedisCache(url, fail_on_connection_error=True, operation_timeout=0.3)
    with pytest.raises(BackendUnavailable, match="fail_on_connection_error=False"):
        await cache.connect()
    with pytest.raises(BackendUnavailable):
        await cache.set("k", 1)

    @cached(ttl=60, cache=cache)
    async def still_works(x: int) -> int:
        return x

    assert 3 == await still_works(3)  # decorated calls never raise for Redis's sake
    health = await cache.health_check()
    assert "unhealthy" == health["status"]
    await cache.aclose()


async def test_secrets_never_appear_in_repr_errors_stats_or_logs(
    make_redis_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    server: RedisServer = make_redis_server(password="hunter2-secret")
    good = GenericRedisCache(server.url, signing_key=b"signing-secret")
    bad = GenericRedisCache(
        server.url.replace("hunter2-secret", "wrong-secret"), operation_timeout=0.5
    )
    with caplog.at_level(logging.DEBUG, logger="memo"):
        assert await good.connect()
        await good.set("k", 1)
        assert 1 == await good.get("k")
        assert await bad.connect() is False
        await bad.set("k", 1)
        try:
            await bad.redis.get("memo:x")  # type: ignore[union-attr]
        except Exception as exc:  # its message is what is checked
            error_text = f"{exc} {exc.__cause__!r}"
        else:
            pytest.fail("a wrong password was accepted")
    shown = " ".join(
        [
            repr(good),
            repr(bad),
            str(await good.get_cache_stats()),
            str(await bad.get_cache_stats()),
            str(await good.health_check()),
            str(await bad.health_check()),
            repr(good.redis),
            error_text,
            caplog.text,
        ]
    )
    for secret in ("hunter2-secret", "wrong-secret", "signing-secret"):
        assert secret not in shown
    assert "***" in shown
    await good.aclose()
    await bad.aclose()


def test_a_non_redis_url_is_refused_naming_redis_url() -> None:
    from memo import ConfigError

    with pytest.raises(ConfigError, match="redis_url"):
        GenericRedisCache("http://localhost:6379")


def test_the_sync_client_of_the_harness_sees_the_same_server(redis_server: RedisServer) -> None:
    assert redis_server.client().ping()
    assert isinstance(redis_server.client(), sync_redis.Redis)


async def test_concurrent_reads_share_mget_round_trips_and_a_lone_read_is_a_get(
    redis_server: RedisServer,
) -> None:
    backend = RedisBackend.from_url(redis_server.url)
    await backend.set_many({f"memo:b:{i}": str(i).encode() for i in range(200)}, 60_000)
    before = redis_server.commandstats()

    assert b"7" == await backend.get("memo:b:7")
    readers = [asyncio.create_task(backend.get(f"memo:b:{i % 200}")) for i in range(400)]
    await asyncio.sleep(0)
    readers[5].cancel()  # one reader leaving must not disturb the others
    results = await asyncio.gather(*readers, return_exceptions=True)

    after = redis_server.commandstats()
    assert isinstance(results[5], asyncio.CancelledError)
    assert [str(i % 200).encode() for i in range(400) if i != 5] == [
        r for i, r in enumerate(results) if i != 5
    ]
    gets = after.get("get", 0) - before.get("get", 0)
    mgets = after.get("mget", 0) - before.get("mget", 0)
    assert gets <= 2  # the lone read, and the first of the burst
    assert 1 <= mgets <= 3
    await backend.aclose()


async def test_unix_socket_urls_work(make_redis_server: Any) -> None:
    server: RedisServer = make_redis_server(unix=True)
    assert server.url.startswith("unix://")
    cache = GenericRedisCache(server.url)
    assert await cache.connect()
    await cache.set("k", [1, 2])
    assert [1, 2] == await cache.get("k")
    assert server.client().exists(cache.prefix + "k")
    await cache.aclose()


async def test_acl_users_authenticate_from_the_url(make_redis_server: Any) -> None:
    server: RedisServer = make_redis_server(acl_user=("memo-app", "acl-secret"))
    assert server.url.startswith("redis://memo-app:acl-secret@")
    cache = GenericRedisCache(server.url)
    assert await cache.connect()
    await cache.set("k", "v")
    assert "v" == await cache.get("k")
    assert "acl-secret" not in repr(cache) + str(await cache.get_cache_stats())
    await cache.aclose()


async def test_pattern_invalidation_scans_and_never_sends_keys(redis_server: RedisServer) -> None:
    cache = redis_only(redis_server)
    await cache.set_many({f"user:{i}": i for i in range(2500)} | {"team:1": 1}, ttl=60)
    assert 2500 == await cache.invalidate_pattern("user:*")
    assert 1 == await cache.get("team:1")
    stats = redis_server.commandstats()
    assert "keys" not in stats
    assert stats["scan"] >= 3  # 2 501 keys at 1 000 a page
    assert 1 == redis_server.dbsize()
    await cache.aclose()


async def test_corrupt_bytes_from_redis_never_stay_in_the_memory_tier(
    redis_server: RedisServer,
) -> None:
    cache = GenericRedisCache(redis_server.url)  # memory tier on
    await cache.set("k", {"v": 1})
    full = cache.prefix + "k"
    good = redis_server.client().get(full) or b""
    backend = cache.backend
    assert isinstance(backend, TieredBackend)
    backend.memory.discard_local(full)
    redis_server.client().set(full, good[:-3], px=60_000)

    assert await cache.get("k") is None
    assert backend.memory.get_local(full) is None
    assert not redis_server.client().exists(full)
    await cache.aclose()


@pytest.mark.parametrize("credentials", [":not-the-password@", ""], ids=["wrong", "missing"])
async def test_refused_credentials_are_named_as_such_without_the_password(
    make_redis_server: Any, credentials: str
) -> None:
    secret = "s3cr3t-pw"
    server: RedisServer = make_redis_server(password=secret)
    url = f"redis://{credentials}127.0.0.1:{server.port}/0"
    strict = GenericRedisCache(url, fail_on_connection_error=True)
    with pytest.raises(BackendAuthError, match="refused the credentials") as caught:
        await strict.connect()
    assert "not-the-password" not in str(caught.value) and secret not in str(caught.value)
    lenient = GenericRedisCache(url)
    assert await lenient.connect() is False  # caches in memory, says why in the log

    @cached(ttl=60, cache=lenient)
    async def double(x: int) -> int:
        return 2 * x

    assert 42 == await double(21)
    await strict.aclose()
    await lenient.aclose()


async def test_a_thousand_concurrent_writes_are_stored_in_a_few_round_trips(
    redis_server: RedisServer,
) -> None:
    cache = redis_only(redis_server)
    assert await cache.connect()
    before = redis_server.commandstats()

    await asyncio.gather(*(cache.set(f"w:{i}", i) for i in range(1000)))

    after = redis_server.commandstats()
    assert 1000 == after.get("set", 0) - before.get("set", 0)
    assert 1000 == redis_server.dbsize()
    assert 0 == (await cache.get_cache_stats())["errors"]
    # Alone, each write was one EVALSHA announcing its key: 1 000 of each. Now: the lone
    # first write, then the burst as one script (each met NOSCRIPT once on a new server).
    assert after.get("evalsha", 0) - before.get("evalsha", 0) <= 4
    assert after.get("publish", 0) - before.get("publish", 0) <= 3
    assert 999 == await cache.get("w:999")
    await cache.aclose()


class _CountingRedis(aioredis.Redis):
    """A client that counts its round trips: single commands and pipelines."""

    round_trips = 0

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        self.round_trips += 1
        return await super().execute_command(*args, **options)

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Any:
        self.round_trips += 1
        return super().pipeline(transaction, shard_hint)


async def test_unannounced_concurrent_writes_share_pipelines_and_a_lone_write_goes_alone(
    redis_server: RedisServer,
) -> None:
    clients: list[_CountingRedis] = []

    def factory() -> aioredis.Redis:
        pool = aioredis.BlockingConnectionPool.from_url(redis_server.url, max_connections=50)
        clients.append(_CountingRedis(connection_pool=pool))
        return clients[-1]

    backend = RedisBackend.from_url(
        redis_server.url, invalidation_channel=False, client_factory=factory
    )
    await backend.set("memo:lone", b"v", 60_000)
    assert 1 == clients[0].round_trips and b"v" == redis_server.client().get("memo:lone")

    await asyncio.gather(*(backend.set(f"memo:w:{i}", b"%d" % i, 60_000) for i in range(1000)))

    assert 1001 == redis_server.dbsize()
    assert clients[0].round_trips <= 1 + 3  # the lone write, then the burst: 1 + 1 (+ 1)
    assert b"999" == redis_server.client().get("memo:w:999")
    assert 0 == redis_server.commandstats().get("publish", 0)
    await backend.aclose()


async def test_a_write_refused_in_a_batch_fails_alone(make_redis_server: Any) -> None:
    server: RedisServer = make_redis_server(acl_user=("app", "app-secret"))
    backend = RedisBackend.from_url(server.url)
    server.client().execute_command("ACL", "SETUSER", "app", "resetkeys", "~memo:*")
    keys = [f"memo:w:{i}" for i in range(100)]
    keys[50] = "elsewhere:50"  # outside the user's keys: refused by the server

    results = await asyncio.gather(
        *(backend.set(key, b"v", 60_000) for key in keys), return_exceptions=True
    )

    assert isinstance(results[50], BackendError) and "NOPERM" in str(results[50]).upper()
    assert "app-secret" not in str(results[50])
    assert [None] * 99 == results[:50] + results[51:]
    assert 99 == server.dbsize()
    assert backend.announce and backend.breaker.allow()
    await backend.aclose()


async def test_a_publish_refused_in_a_batch_stops_announcing_once_and_stores_every_write(
    make_redis_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    server: RedisServer = make_redis_server(acl_user=("app", "app-secret"))
    server.client().execute_command("ACL", "SETUSER", "app", "-publish")
    backend = RedisBackend.from_url(server.url)
    with caplog.at_level(logging.WARNING, logger="memo"):
        await asyncio.gather(*(backend.set(f"memo:w:{i}", b"v", 60_000) for i in range(200)))
        await asyncio.gather(*(backend.set(f"memo:x:{i}", b"v", 60_000) for i in range(200)))
    assert 400 == server.dbsize()
    assert 1 == sum("refused PUBLISH" in r.getMessage() for r in caplog.records)
    assert backend.announce is False
    await backend.aclose()


async def test_a_batch_of_writes_reaches_the_memory_tier_of_another_process(
    redis_server: RedisServer,
) -> None:
    writer = GenericRedisCache(redis_server.url)
    reader = GenericRedisCache(redis_server.url)
    assert await writer.connect() and await reader.connect()
    await writer.set_many({f"k:{i}": "old" for i in range(300)})
    backend = reader.backend
    assert isinstance(backend, TieredBackend)
    for i in range(300):
        assert "old" == await reader.get(f"k:{i}")
    assert all(backend.memory.get_local(f"{reader.prefix}k:{i}") for i in range(300))

    await asyncio.gather(*(writer.set(f"k:{i}", "new") for i in range(300)))

    give_up = time.monotonic() + 10
    while any(backend.memory.get_local(f"{reader.prefix}k:{i}") for i in range(300)):
        assert time.monotonic() < give_up, "the batch's announcement never arrived"
        await asyncio.sleep(0.01)
    assert ["new"] * 300 == [await reader.get(f"k:{i}") for i in range(300)]
    await writer.aclose()
    await reader.aclose()


async def test_a_batch_larger_than_one_round_trip_keeps_the_order_of_its_writes(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import memo.backends._write_batch as write_batch

    monkeypatch.setattr(write_batch, "MAX_BATCH", 3)  # a burst of 12 goes as 4 round trips
    cache = redis_only(redis_server)
    assert await cache.connect()
    writes = [
        ("k", "old") if i == 2 else ("k", "new") if i == 10 else (f"o{i}", i) for i in range(12)
    ]
    for _ in range(20):
        await cache.delete("k")
        await asyncio.gather(*(cache.set(key, value) for key, value in writes))
        assert "new" == await cache.get("k")
    await cache.aclose()


@pytest.mark.slow
async def test_many_callers_during_a_pause_each_end_by_their_deadline(
    redis_server: RedisServer,
) -> None:
    """30 callers reading and writing while the server is stopped for 2 s each end by
    their deadline. (A read failed when the connection was dropped for a hung server was
    retried through redis-py, whose write could swallow the deadline's cancellation on
    Python 3.11 and wait out the pause; that race is rare here, so this test guards the
    bound rather than reproducing it.)"""
    deadline = 0.3
    cache = GenericRedisCache(redis_server.url, enable_memory_cache=False, operation_timeout=0.3)
    await cache.set("warm", 1)
    assert 1 == await cache.get("warm")  # the direct connection is open
    slowest = 0.0
    stop = asyncio.Event()

    async def caller(n: int) -> None:
        nonlocal slowest
        i = 0
        while not stop.is_set():
            started = time.monotonic()
            if i % 2:
                await cache.set(f"k{n}", i)
            else:
                await cache.get(f"k{n}")
            slowest = max(slowest, time.monotonic() - started)
            i += 1
            await asyncio.sleep(0.01)

    callers = [asyncio.ensure_future(caller(n)) for n in range(30)]
    try:
        await asyncio.sleep(0.3)
        redis_server.pause()
        try:
            await asyncio.sleep(2.0)
        finally:
            redis_server.resume()
    finally:
        stop.set()
        await asyncio.gather(*callers)
        await cache.aclose()
    assert slowest < 4 * deadline + 0.5  # far below the pause: nothing waited it out
