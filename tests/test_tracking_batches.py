"""Batched reads of a tracking connection: under a stream of invalidations a memory tier
reads its connection at most once per ``invalidation_batch``, and never holds a reply.

The rules are tested on a connection fed bytes at times of the test's choosing; the
whole against a real redis-server, with writes by a plain client as ``redis-cli`` would.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from memo import GenericRedisCache
from memo.backends._resp import RespConnection
from memo.backends._tracking import TrackingListener
from memo.exceptions import ConfigError
from tests.redis_harness import RedisServer, TlsFiles
from tests.test_invalidation import eventually, in_memory, tiered

BATCH = 0.001


class _Transport(asyncio.Transport):
    """Records writes and whether reading is paused."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[bytes] = []
        self.reading = True
        self.closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.sent.append(bytes(data))

    def pause_reading(self) -> None:
        assert self.reading, "paused twice"
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_reading(self) -> bool:
        return self.reading

    def is_closing(self) -> bool:
        return self.closing

    def abort(self) -> None:
        self.closing = True


class _Clock:
    """Stands still unless moved; starts well after any ``time.monotonic()`` so far."""

    def __init__(self) -> None:
        self.now = time.monotonic() + 3600.0

    def __call__(self) -> float:
        return self.now


def _push(key: bytes) -> bytes:
    return b">2\r\n$10\r\ninvalidate\r\n*1\r\n$%d\r\n%s\r\n" % (len(key), key)


def _batched(batch: float = BATCH) -> tuple[RespConnection, _Transport, _Clock, list[bytes]]:
    heard: list[bytes] = []
    connection = RespConnection(lambda push: None, None, heard.append)
    transport = _Transport()
    connection.connection_made(transport)
    clock = _Clock()
    connection.batch_reads(batch, clock)
    return connection, transport, clock, heard


def _until_paused(
    connection: RespConnection, transport: _Transport, clock: _Clock, apart: float
) -> int:
    """Feed pushes ``apart`` batches apart until reading pauses: how many it took."""
    for n in range(1, 50):
        connection.data_received(_push(b"s%d" % n))
        if not transport.reading:
            return n
        clock.now += apart * BATCH
    return 0


async def test_a_dense_stream_pauses_reading_while_enough_pushes_gather() -> None:
    connection, transport, clock, heard = _batched()
    taken = _until_paused(connection, transport, clock, 0.05)
    assert 4 <= taken <= 16 and 1 == connection.pauses  # one close pair is not a stream
    resume = connection._resume
    assert resume is not None
    assert 0 < resume.when() - asyncio.get_running_loop().time() <= BATCH
    # What gathered meanwhile is read in one go, each push heard in order; while it is
    # enough pushes, reading stops again.
    clock.now += BATCH
    connection._read_again()  # the timer's work
    assert transport.reading
    connection.data_received(b"".join(_push(b"k%d" % i) for i in range(50)))
    assert [b"s%d" % n for n in range(1, taken + 1)] + [b"k%d" % i for i in range(50)] == heard
    assert not transport.reading and 2 == connection.pauses
    # Three gathered: the stream has thinned, and pushes are read as they come again.
    clock.now += BATCH
    connection._read_again()
    connection.data_received(b"".join(_push(b"z%d" % i) for i in range(3)))
    assert transport.reading and 2 == connection.pauses and b"z2" == heard[-1]
    for key in (b"y1", b"y2", b"y3"):
        clock.now += 0.3 * BATCH
        connection.data_received(_push(key))
        assert transport.reading and 2 == connection.pauses


@pytest.mark.parametrize("apart", [0.3, 0.7, 1.5, 3.0])
async def test_pushes_further_apart_than_a_fifth_batch_are_read_as_they_come(
    apart: float,
) -> None:
    # A pause that gathers a push or two costs more than it saves.
    connection, transport, clock, heard = _batched()
    assert 0 == _until_paused(connection, transport, clock, apart)
    assert 49 == len(heard) and 0 == connection.pauses


async def test_one_close_pair_in_a_sparse_stream_does_not_pause() -> None:
    connection, transport, clock, _ = _batched()
    for _ in range(20):
        connection.data_received(_push(b"a"))
        clock.now += 0.01 * BATCH
        connection.data_received(_push(b"b"))  # close behind the one before
        clock.now += 2 * BATCH
    assert transport.reading and 0 == connection.pauses


async def test_a_push_read_in_part_as_a_pause_ends_waits_for_no_second_pause() -> None:
    connection, transport, clock, heard = _batched()
    assert _until_paused(connection, transport, clock, 0.0)
    connection._read_again()
    late = _push(b"late")
    connection.data_received(b"".join(_push(b"k%d" % i) for i in range(8)) + late[:10])
    assert transport.reading  # the rest of "late" is on its way: read it at once
    connection.data_received(late[10:])
    assert b"late" == heard[-1]


async def test_replies_do_not_make_a_stream_of_pushes() -> None:
    connection, transport, _, heard = _batched()  # time stands still: replies come close
    for _ in range(30):
        (reply,) = connection.request(("GET", "k"))
        connection.data_received(b"$1\r\nv\r\n")
        assert b"v" == reply.result()
    connection.data_received(_push(b"a"))  # one push after many close replies
    assert transport.reading and 0 == connection.pauses and [b"a"] == heard


async def test_the_heartbeat_keeps_its_own_clock_when_another_is_injected() -> None:
    connection, _, clock, _ = _batched()  # an hour ahead of time.monotonic()
    before = time.monotonic()
    connection.data_received(_push(b"a"))
    assert before <= connection.last_heard <= time.monotonic() < clock.now


async def test_no_batch_never_pauses_reading() -> None:
    connection, transport, _, heard = _batched(0.0)
    for key in (b"a", b"b", b"c"):
        connection.data_received(_push(key))  # all at the same instant
    assert transport.reading and 0 == connection.pauses and 3 == len(heard)


async def test_a_request_ends_the_pause_and_its_reply_is_never_held_back() -> None:
    connection, transport, clock, _ = _batched()
    assert _until_paused(connection, transport, clock, 0.0)
    resume = connection._resume
    assert resume is not None
    (reply,) = connection.request(("GET", "k"))
    assert transport.reading and resume.cancelled() and connection._resume is None
    # Pushes read close together while a reply is awaited do not pause: it may be next.
    clock.now += BATCH
    for i in range(20):
        connection.data_received(_push(b"c%d" % i))
    assert transport.reading and 1 == connection.pauses
    connection.data_received(b"$1\r\nv\r\n")
    assert b"v" == reply.result()


async def test_a_lost_connection_ends_the_pause() -> None:
    connection, transport, clock, _ = _batched()
    assert _until_paused(connection, transport, clock, 0.0)
    resume = connection._resume
    assert resume is not None
    connection.connection_lost(None)
    assert resume.cancelled() and connection._resume is None


async def test_invalidation_batch_is_a_checked_option() -> None:
    for bad in (-0.001, 0.02, float("nan"), "1ms", True):
        with pytest.raises(ConfigError, match="invalidation_batch"):  # checked before connecting
            GenericRedisCache("redis://127.0.0.1:1/0", invalidation_batch=bad)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- a real server


def _connection(cache: GenericRedisCache) -> RespConnection:
    listener = tiered(cache).listener
    assert isinstance(listener, TrackingListener) and listener.reads_tracked
    connection = listener._connection
    assert connection is not None
    return connection


async def _hold(cache: GenericRedisCache, keys: list[str]) -> None:
    await cache.set_many({key: 0 for key in keys})
    for key in keys:
        await cache.get(key)
    assert all(in_memory(cache, key) for key in keys)


@pytest.mark.parametrize(
    ("kind", "batch"),
    [
        pytest.param("tcp", BATCH, id="batched"),
        pytest.param("tcp", 0.0, id="each-at-once"),
        pytest.param("unix", BATCH, id="batched-unix-socket"),
        pytest.param("tls", BATCH, id="batched-tls"),
    ],
)
async def test_a_stream_of_writes_reaches_the_tier_whatever_the_batch(
    make_redis_server: Callable[..., RedisServer], tls_files: TlsFiles, kind: str, batch: float
) -> None:
    extra: dict[str, Any] = {}
    if kind == "tls":
        server = make_redis_server(tls=tls_files)
        extra["ssl_ca_certs"] = str(tls_files.ca)
    else:
        server = make_redis_server(unix=kind == "unix")
    cache = GenericRedisCache(server.url, invalidation_batch=batch, **extra)
    writer = GenericRedisCache(server.url, enable_memory_cache=False, **extra)
    try:
        assert await cache.connect()
        keys = [f"k{i}" for i in range(200)]
        await _hold(cache, keys)
        connection = _connection(cache)
        if batch:  # time stands still: every read is close enough to start a pause
            connection.batch_reads(batch, _Clock())
        for i, key in enumerate(keys):  # one after the other: pushes a round trip apart
            await writer.set(key, i + 1)
        await eventually(
            lambda: not any(in_memory(cache, key) for key in keys), "every write reached the tier"
        )
        assert list(range(1, 201)) == [await cache.get(key) for key in keys]
        if batch:
            assert connection.pauses >= 1  # the stream was read in batches
        else:
            assert 0 == connection.pauses
    finally:
        await cache.aclose()
        await writer.aclose()


async def test_a_tracked_read_during_a_pause_is_answered_at_once(
    redis_server: RedisServer,
) -> None:
    cache = GenericRedisCache(redis_server.url)
    plain = redis_server.client()
    try:
        assert await cache.connect()
        await _hold(cache, ["c"] + [f"k{i}" for i in range(40)])  # all 0
        connection = _connection(cache)
        # A pause far longer than the read's deadline (0.5 s): were the read's reply held
        # back, the read would time out and the connection be dropped and made again.
        clock = _Clock()
        connection.batch_reads(6.0, clock)  # no time passes: a few pushes make a stream
        blob = plain.get(cache.prefix + "c")
        for i in range(40):
            plain.set(cache.prefix + f"k{i}", blob)
            await eventually(lambda i=i: not in_memory(cache, f"k{i}"), "a write heard")
            if connection.pauses:
                break
        assert 1 == connection.pauses
        assert 0 == await cache.get("k0")  # read on the tracking connection
        assert connection._resume is None and connection.is_open
        listener = tiered(cache).listener
        assert listener is not None and 0 == listener.reconnects
        assert _connection(cache) is connection
    finally:
        await cache.aclose()
