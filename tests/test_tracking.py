"""Server-assisted tracking: Redis tells a memory tier of changes to the keys it read.

The RESP3 reader is tested on bytes cut at every boundary; the rest against real
redis-server processes (plain, password, ACL user, unix socket, TLS), with writes made by
memo and by a plain client as ``redis-cli`` would.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import pytest

from memo import Cache, GenericRedisCache
from memo._redis_options import RedisOptions
from memo.backends import MemoryBackend
from memo.backends._announce import LISTENER_RECHECK
from memo.backends._resp import Push, RespConnection, ServerError, encode_command, parse_reply
from memo.backends._tracking import TrackingListener
from memo.backends.tiered import TieredBackend
from tests.redis_harness import RedisServer, TlsFiles
from tests.test_invalidation import eventually, in_memory, tiered

# --------------------------------------------------------------------------- the reader

REPLIES: list[tuple[bytes, Any]] = [
    (b"+OK\r\n", "OK"),
    (b":-42\r\n", -42),
    (b"$5\r\nhe\r\no\r\n", b"he\r\no"),  # a bulk string may hold CRLF
    (b"$0\r\n\r\n", b""),
    (b"$-1\r\n", None),
    (b"_\r\n", None),
    (b"*2\r\n$1\r\na\r\n:1\r\n", [b"a", 1]),
    (b"*-1\r\n", None),
    (b"%1\r\n+server\r\n+redis\r\n", {"server": "redis"}),
    (b"~1\r\n:7\r\n", [7]),
    (b",1.5\r\n", 1.5),
    (b"#t\r\n", True),
    (b"(12345678901234567890\r\n", 12345678901234567890),
    (b"=8\r\ntxt:some\r\n", b"some"),
    (b"|1\r\n+ttl\r\n:3\r\n:9\r\n", 9),  # an attribute, then the reply it describes
]


@pytest.mark.parametrize(("wire", "value"), REPLIES, ids=[repr(w[:2]) for w, _ in REPLIES])
def test_each_resp3_type_parses_to_its_python_value(wire: bytes, value: Any) -> None:
    assert (value, len(wire)) == parse_reply(wire, 0)


def test_errors_are_values_and_commands_encode_as_bulk_arrays() -> None:
    error, end = parse_reply(b"-NOPERM no\r\n!3\r\nbad\r\n", 0)
    assert isinstance(error, ServerError) and "NOPERM no" == str(error)
    blob, _ = parse_reply(b"-NOPERM no\r\n!3\r\nbad\r\n", end)
    assert isinstance(blob, ServerError) and "bad" == str(blob)
    assert b"*3\r\n$3\r\nGET\r\n$2\r\n\xc3\xa9\r\n$2\r\n12\r\n" == encode_command(["GET", "é", 12])


class _Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.sent: list[bytes] = []
        self.aborted = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.sent.append(bytes(data))

    def is_closing(self) -> bool:
        return self.aborted

    def abort(self) -> None:
        self.aborted = True


async def test_replies_and_pushes_cut_at_every_byte_arrive_whole_and_in_order() -> None:
    stream = (
        b"$3\r\none\r\n"
        b">2\r\n$10\r\ninvalidate\r\n*2\r\n$1\r\na\r\n$1\r\nb\r\n"
        b">2\r\n$10\r\ninvalidate\r\n*1\r\n$2\r\ncd\r\n"
        b":-2\r\n"
        b">2\r\n$10\r\ninvalidate\r\n_\r\n"
        b"*2\r\n$0\r\n\r\n_\r\n"
    )
    for cut in range(1, len(stream)):
        pushes: list[Push] = []
        connection = RespConnection(pushes.append)
        connection.connection_made(_Transport())
        first, second, third = connection.request(("GET", "x"), ("PTTL", "x"), ("ECHO", "y"))
        connection.data_received(stream[:cut])
        connection.data_received(stream[cut:])
        assert (b"one", -2, [b"", None]) == (first.result(), second.result(), third.result())
        assert [
            [b"invalidate", [b"a", b"b"]],
            [b"invalidate", [b"cd"]],
            [b"invalidate", None],
        ] == pushes


async def test_a_one_key_invalidation_alone_or_beside_a_reply_is_heard_once() -> None:
    keys: list[Any] = []
    connection = RespConnection(lambda push: None, keys.append)
    connection.connection_made(_Transport())
    one = b">2\r\n$10\r\ninvalidate\r\n*1\r\n$6\r\nmemo:k\r\n"
    connection.data_received(one)  # exactly one push: the short way
    (reply,) = connection.request(("PTTL", "memo:k"))
    connection.data_received(one + b":-2\r\n")  # a push and a reply: in the loop
    connection.data_received(one[:20])
    connection.data_received(one[20:])
    assert [[b"memo:k"]] * 3 == keys and -2 == reply.result()


async def test_one_key_invalidations_read_together_are_each_heard_in_order() -> None:
    heard: list[bytes] = []
    lists: list[Any] = []
    connection = RespConnection(lambda push: None, lists.append, heard.append)
    connection.connection_made(_Transport())
    pushes = [b">2\r\n$10\r\ninvalidate\r\n*1\r\n$%d\r\n%s\r\n" % (len(k), k) for k in keys_of(3)]
    both = b">2\r\n$10\r\ninvalidate\r\n*2\r\n$1\r\nx\r\n$1\r\ny\r\n"
    connection.data_received(pushes[0] + both + pushes[1] + pushes[2][:-1])
    connection.data_received(pushes[2][-1:])
    assert keys_of(3) == heard and [[b"x", b"y"]] == lists


def keys_of(n: int) -> list[bytes]:
    return [b"memo:key:%d" % i for i in range(n)]


async def test_a_lost_connection_fails_every_waiting_request() -> None:
    connection = RespConnection(lambda push: None)
    connection.connection_made(_Transport())
    waiting = connection.request(("GET", "a"), ("GET", "b"))
    connection.data_received(b"$1\r\n")  # half a reply
    connection.connection_lost(None)
    for future in waiting:
        with pytest.raises(ConnectionError):
            future.result()
    assert connection.closed.done()
    with pytest.raises(ConnectionError):
        connection.request(("PING",))


# --------------------------------------------------------------------------- the fill race


class _NoSource:
    options = RedisOptions.from_url("redis://127.0.0.1:1/0")
    masked_url = "redis://127.0.0.1:1/0"

    def scrub(self, text: str) -> str:
        return text


async def _turns(n: int = 2) -> None:
    """Let the loop turn: a request is written at the end of the turn it was made in."""
    for _ in range(n):
        await asyncio.sleep(0)


def _tracked_tier() -> tuple[TieredBackend, RespConnection, _Transport]:
    """A tier whose tracking connection is fed bytes by the test."""
    tier = TieredBackend(MemoryBackend(), MemoryBackend())
    listener = TrackingListener(
        _NoSource(),
        on_keys=tier.heard.keys,
        on_flush=tier.heard.flush,
        on_trust=tier._trust,
        fallback=lambda: pytest.fail("no fallback here"),
    )
    tier.listener = listener
    transport = _Transport()
    connection = RespConnection(listener._pushed, listener._invalidated)
    connection.connection_made(transport)
    listener._connection = connection
    listener._set_trust(True)
    return tier, connection, transport


@pytest.mark.parametrize("invalidated", [True, False], ids=["invalidated", "quiet"])
async def test_a_tracked_read_fills_memory_unless_an_invalidation_follows_its_reply(
    invalidated: bool,
) -> None:
    tier, connection, transport = _tracked_tier()
    read = asyncio.create_task(tier.get("memo:k"))
    await _turns()
    assert [
        encode_command(["GET", "memo:k"]) + encode_command(["PTTL", "memo:k"])
    ] == transport.sent
    push = b">2\r\n$10\r\ninvalidate\r\n*1\r\n$6\r\nmemo:k\r\n" if invalidated else b""
    # The reply and a write that came after it, in one chunk: parsed before the reader
    # resumes, so the reader must see the mark.
    connection.data_received(b"$3\r\nold\r\n:60000\r\n" + push)
    assert b"old" == await read  # the caller gets what Redis said either way
    assert (not invalidated) == (tier.memory.get_local("memo:k") is not None)


async def test_a_reader_after_an_invalidation_does_not_join_the_read_it_voided() -> None:
    tier, connection, transport = _tracked_tier()
    first = asyncio.create_task(tier.get("memo:k"))
    await _turns()
    # The reply and a later write's invalidation in one chunk; before the shared read
    # is settled, another reader comes: it must ask again, not take the old reply.
    connection.data_received(
        b"$3\r\nold\r\n:60000\r\n>2\r\n$10\r\ninvalidate\r\n*1\r\n$6\r\nmemo:k\r\n"
    )
    loop = asyncio.get_running_loop()
    loop.call_soon(connection.data_received, b"$3\r\nnew\r\n:60000\r\n")  # its reply
    second = await tier.get("memo:k")  # runs at once, before the shared read is settled
    assert 2 == len(transport.sent)  # a read of its own
    assert (b"old", b"new") == (await first, second)
    assert b"new" == tier.memory.get_local("memo:k")


async def test_a_large_reply_in_many_chunks_is_parsed_once_it_is_whole(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from memo.backends import _resp

    calls = 0
    parse = _resp.parse_reply

    def counted(buf: bytes, pos: int) -> tuple[Any, int]:
        nonlocal calls
        calls += 1
        return parse(buf, pos)

    monkeypatch.setattr(_resp, "parse_reply", counted)
    connection = RespConnection(lambda push: None)
    connection.connection_made(_Transport())
    (reply,) = connection.request(("GET", "big"))
    value = b"v" * 4_000_000
    wire = b"$%d\r\n%s\r\n" % (len(value), value)
    for start in range(0, len(wire), 65_536):
        connection.data_received(wire[start : start + 65_536])
    assert value == reply.result()
    assert calls <= 3  # once on the first chunk, once when whole: not once per chunk


async def test_readers_of_one_key_share_a_tracked_read_and_a_cancelled_one_leaves_it() -> None:
    tier, connection, transport = _tracked_tier()
    readers = [asyncio.create_task(tier.get("memo:k")) for _ in range(5)]
    await _turns()
    readers[0].cancel()
    assert 1 == len(transport.sent)  # one GET and one PTTL for all five
    connection.data_received(b"$1\r\nv\r\n:5000\r\n")
    assert [b"v"] * 4 == await asyncio.gather(*readers[1:])
    assert readers[0].cancelled()


# --------------------------------------------------------------------------- real servers


@pytest.fixture
async def tracked(redis_server: RedisServer) -> Any:
    cache = GenericRedisCache(redis_server.url)
    assert await cache.connect()
    listener = tiered(cache).listener
    assert isinstance(listener, TrackingListener) and listener.reads_tracked
    yield cache
    await cache.aclose()


async def test_any_clients_writes_deletes_expiries_and_flushes_reach_the_tier(
    tracked: Cache, redis_server: RedisServer
) -> None:
    plain = redis_server.client()  # a client that knows nothing of memo, as redis-cli
    await tracked.set_many({"a": 1, "b": 2, "c": 3, "d": 4, "e": 5})
    for key in "abcde":
        await tracked.get(key)
        assert in_memory(tracked, key)

    plain.set(tracked.prefix + "a", plain.get(tracked.prefix + "e"))
    await eventually(lambda: not in_memory(tracked, "a"), "a plain SET reached the tier")
    assert 5 == await tracked.get("a")
    plain.delete(tracked.prefix + "b")
    await eventually(lambda: not in_memory(tracked, "b"), "a plain DEL reached the tier")
    assert await tracked.get("b") is None
    plain.pexpire(tracked.prefix + "c", 1)  # expired by the server, not by memo's clock
    await eventually(lambda: not in_memory(tracked, "c"), "the expiry reached the tier")
    assert await tracked.get("c") is None
    plain.flushall()
    await eventually(lambda: not in_memory(tracked, "d"), "FLUSHALL reached the tier")
    assert not in_memory(tracked, "e")


async def test_writes_to_keys_a_process_does_not_hold_reach_it_not_at_all(
    tracked: Cache, redis_server: RedisServer
) -> None:
    writer = GenericRedisCache(redis_server.url)
    listener = tiered(tracked).listener
    assert listener is not None
    try:
        await writer.set("held", 0)
        await tracked.get("held")
        for i in range(300):
            await writer.set(f"other:{i}", i)
        await writer.set("held", 1)  # the one write it hears of, after all the others
        await eventually(lambda: not in_memory(tracked, "held"), "the held key's write")
        assert 1 == listener.heard  # nothing of the 300 keys it never read
    finally:
        await writer.aclose()


async def test_a_process_own_write_does_not_fill_memory_but_its_next_read_does(
    tracked: Cache, redis_server: RedisServer
) -> None:
    await tracked.set("k", "mine")
    assert not in_memory(tracked, "k")  # Redis does not track what a connection wrote
    assert "mine" == await tracked.get("k")
    assert in_memory(tracked, "k")  # read where it is tracked
    other = GenericRedisCache(redis_server.url)
    try:
        await other.set("k", "theirs")
        await eventually(lambda: not in_memory(tracked, "k"), "the other write heard")
        assert "theirs" == await tracked.get("k")
    finally:
        await other.aclose()


async def test_writes_are_announced_only_while_somebody_listens_on_the_channel(
    tracked: Cache, redis_server: RedisServer
) -> None:
    for i in range(100):
        await tracked.set(f"k{i}", i)
    # Only the first few go out, before the count of listeners (none) is in.
    stats = redis_server.commandstats()
    assert 100 == stats["set"] and stats.get("publish", 0) <= 10

    old_style = GenericRedisCache(redis_server.url, coherence="channel")
    try:
        assert await old_style.connect()
        await old_style.get("k1")
        assert in_memory(old_style, "k1")
        await asyncio.sleep(LISTENER_RECHECK)  # the writer's count of listeners is stale
        await tracked.set("k1", "announced")
        await eventually(lambda: not in_memory(old_style, "k1"), "the channel heard it")
        assert "announced" == await old_style.get("k1")
    finally:
        await old_style.aclose()


async def test_a_server_that_refuses_tracking_gets_the_channel(
    make_redis_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    server: RedisServer = make_redis_server(acl_user=("app", "app-secret"))
    server.client().execute_command("ACL", "SETUSER", "app", "-client|tracking")
    with caplog.at_level(logging.WARNING, logger="memo"):
        writer = GenericRedisCache(server.url)
        reader = GenericRedisCache(server.url)
        try:
            assert await writer.connect() and await reader.connect()
            listener = tiered(reader).listener
            assert listener is not None and not listener.reads_tracked and listener.trusted
            stats = await reader.get_cache_stats()
            assert "channel" == stats["redis"]["invalidation"]["mode"]
            await writer.set("k", 1)
            await eventually(lambda: listener.heard == 1, "the write announced")
            assert 1 == await reader.get("k")
            assert in_memory(reader, "k")
            await writer.set("k", 2)
            await eventually(lambda: not in_memory(reader, "k"), "the channel carried it")
            assert 2 == await reader.get("k")
        finally:
            await writer.aclose()
            await reader.aclose()
    refused = [r.getMessage() for r in caplog.records if "refused client-side" in r.getMessage()]
    assert 2 == len(refused)  # once per tier
    assert "app-secret" not in caplog.text


def _server_kinds() -> list[Any]:
    return [
        pytest.param({"password": "s3cret"}, id="password"),
        pytest.param({"acl_user": ("app", "app-secret")}, id="acl-user"),
        pytest.param({"unix": True}, id="unix-socket"),
        pytest.param({"tls": True}, id="tls"),
    ]


@pytest.mark.parametrize("kind", _server_kinds())
async def test_tracking_works_over_every_kind_of_connection(
    make_redis_server: Callable[..., RedisServer], tls_files: TlsFiles, kind: dict[str, Any]
) -> None:
    options = dict(kind)
    extra: dict[str, Any] = {}
    if options.pop("tls", False):
        options["tls"] = tls_files
        extra["ssl_ca_certs"] = str(tls_files.ca)
    server = make_redis_server(**options)
    url = server.url.replace("/0", "/3") if server.socket is None else server.url + "?db=3"
    reader = GenericRedisCache(url, **extra)
    writer = GenericRedisCache(url, **extra)
    try:
        assert await reader.connect()
        listener = tiered(reader).listener
        assert listener is not None and listener.reads_tracked and listener.trusted
        await writer.set("k", "one")
        assert "one" == await reader.get("k")
        assert in_memory(reader, "k")
        await writer.set("k", "two")
        await eventually(lambda: not in_memory(reader, "k"), "the write heard")
        assert "two" == await reader.get("k")
    finally:
        await reader.aclose()
        await writer.aclose()


async def test_coherence_is_a_checked_option(redis_server: RedisServer) -> None:
    from memo import CacheConfig, ConfigError

    with pytest.raises(ConfigError, match="coherence='server': must be 'tracking'"):
        GenericRedisCache(redis_server.url, coherence="server")
    with pytest.raises(ConfigError, match="coherence='both'"):
        CacheConfig(redis_url=redis_server.url, coherence="both")


async def test_a_key_that_is_not_valid_text_is_refused_and_the_connection_stays_in_step(
    tracked: Cache,
) -> None:
    from memo import ConfigError

    await tracked.set("A", "value of A")
    await tracked.set("B", "value of B")
    with pytest.raises(ConfigError, match="not valid text"):
        await tracked.get("bad\udc80")
    assert ("value of A", "value of B") == (await tracked.get("A"), await tracked.get("B"))
    connection = RespConnection(lambda push: None)
    connection.connection_made(_Transport())
    with pytest.raises(UnicodeEncodeError):
        connection.request(("GET", "bad\udc80"))
    assert connection.oldest_sent_at is None  # nothing queued for a command never sent


@pytest.mark.parametrize("coherence", ["tracking", "channel"])
def test_a_tier_whose_listener_loop_stopped_is_not_trusted_from_another_loop(
    redis_server: RedisServer, coherence: str
) -> None:
    """A loop run call by call (run_until_complete) and left open hears nothing while it
    is not running: hits from another loop must not trust what its listener heard."""
    import memo

    cache = GenericRedisCache(redis_server.url, coherence=coherence)
    first = asyncio.new_event_loop()

    async def hold() -> None:
        assert await cache.connect()
        await cache.set("k", "old")
        await cache.get("k")
        if not in_memory(cache, "k"):
            await cache.get("k")  # with the channel, the write's own echo may race
        assert in_memory(cache, "k")

    async def later() -> None:
        other = GenericRedisCache(redis_server.url)
        await other.set("k", "new")
        await other.aclose()
        assert "new" == await cache.get("k")
        await memo.release_connections()

    first.run_until_complete(hold())
    try:
        asyncio.run(later())
    finally:
        first.run_until_complete(cache.aclose())
        first.close()
