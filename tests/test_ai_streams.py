"""Decorated async generators: a streamed reply is recorded as it passes to its callers,
stored only when it ends normally, and replayed as a stream."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator
from typing import Any

import pytest

import memo._streams as streams
from memo import GenericRedisCache, InMemoryCache, ai_cached, cached
from memo.exceptions import ConfigError
from tests.redis_harness import RedisServer

CHUNKS = 50
REQUEST: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


class Upstream:
    """A fake streamed completion that the test releases chunk by chunk (or at once)."""

    def __init__(self, chunks: int = CHUNKS, fail_after: int | None = None) -> None:
        self.chunks = chunks
        self.fail_after = fail_after
        self.calls = 0
        self.produced = 0
        self.closed = 0
        self.gate: asyncio.Queue[None] | None = None

    def gated(self) -> None:
        self.gate = asyncio.Queue()

    async def stream(self, request: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        self.calls += 1
        try:
            for i in range(self.chunks):
                if self.gate is not None:
                    await self.gate.get()
                else:
                    await asyncio.sleep(0)
                if self.fail_after is not None and i == self.fail_after:
                    raise RuntimeError("upstream broke")
                self.produced += 1
                yield {"index": i, "delta": f"t{i} "}
        finally:
            self.closed += 1


def decorate(upstream: Upstream, cache: Any, **options: Any) -> Any:
    @ai_cached("chat", request="request", cache=cache, **options)
    async def complete(request: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        async for chunk in upstream.stream(request):
            yield chunk

    return complete


async def drain(stream: AsyncIterator[Any]) -> list[Any]:
    return [chunk async for chunk in stream]


async def test_a_decorated_stream_is_still_an_async_generator_function() -> None:
    complete = decorate(Upstream(), InMemoryCache())
    assert inspect.isasyncgenfunction(complete)


async def test_the_first_call_yields_each_chunk_as_upstream_produces_it() -> None:
    upstream = Upstream()
    upstream.gated()
    assert upstream.gate is not None
    stream = decorate(upstream, InMemoryCache())(REQUEST)
    for i in range(CHUNKS):
        upstream.gate.put_nowait(None)  # release exactly one chunk
        chunk = await stream.__anext__()
        assert chunk["index"] == i
        assert upstream.produced == i + 1  # it came before the next was produced
    with pytest.raises(StopAsyncIteration):
        await stream.__anext__()


async def test_a_second_call_replays_the_same_chunks_in_order_without_upstream() -> None:
    upstream = Upstream()
    cache = InMemoryCache()
    complete = decorate(upstream, cache)
    first = await drain(complete(REQUEST))
    second = await drain(complete(dict(REQUEST)))
    assert len(first) == CHUNKS
    assert second == first
    assert upstream.calls == 1
    stats = complete.stats()
    assert (stats["misses"], stats["hits"]) == (1, 1)


async def test_replayed_chunks_are_each_callers_own_copies() -> None:
    cache = InMemoryCache()
    complete = decorate(Upstream(), cache)
    first = await drain(complete(REQUEST))
    first[0]["delta"] = "changed"
    again = await drain(complete(REQUEST))
    again[1]["delta"] = "changed too"
    assert [c["delta"] for c in (await drain(complete(REQUEST)))[:2]] == ["t0 ", "t1 "]


async def test_cancelling_the_only_consumer_after_ten_chunks_stores_nothing() -> None:
    upstream = Upstream()
    upstream.gated()
    assert upstream.gate is not None
    cache = InMemoryCache()
    complete = decorate(upstream, cache)
    received: list[Any] = []

    async def consume() -> None:
        async for chunk in complete(REQUEST):
            received.append(chunk)

    task = asyncio.create_task(consume())
    for _ in range(10):
        upstream.gate.put_nowait(None)
    while len(received) < 10:
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(5):
        await asyncio.sleep(0)
    assert upstream.closed == 1  # the upstream generator was closed, not left running
    assert upstream.produced == 10
    assert await complete.peek(REQUEST) is streams_missing()
    upstream.gate = None
    assert len(await drain(complete(REQUEST))) == CHUNKS
    assert upstream.calls == 2  # the next call went upstream


async def test_a_consumer_that_stops_iterating_early_stores_nothing() -> None:
    upstream = Upstream()
    cache = InMemoryCache()
    complete = decorate(upstream, cache)
    stream = complete(REQUEST)
    async for chunk in stream:
        if chunk["index"] == 9:
            break
    await stream.aclose()
    for _ in range(5):
        await asyncio.sleep(0)
    assert await complete.peek(REQUEST) is streams_missing()
    await drain(complete(REQUEST))
    assert upstream.calls == 2


async def test_a_hundred_concurrent_cold_callers_share_one_upstream_stream() -> None:
    upstream = Upstream()
    cache = InMemoryCache()
    complete = decorate(upstream, cache)
    results = await asyncio.gather(*(drain(complete(REQUEST)) for _ in range(100)))
    assert upstream.calls == 1
    assert all([c["index"] for c in r] == list(range(CHUNKS)) for r in results)
    stats = complete.stats()
    assert (stats["misses"], stats["coalesced"]) == (1, 99)


async def test_a_late_joiner_gets_every_chunk_from_the_first() -> None:
    upstream = Upstream()
    upstream.gated()
    assert upstream.gate is not None
    complete = decorate(upstream, InMemoryCache())
    early = complete(REQUEST)
    for _ in range(20):
        upstream.gate.put_nowait(None)
    head = [await early.__anext__() for _ in range(20)]
    late = asyncio.create_task(drain(complete(REQUEST)))
    for _ in range(CHUNKS - 20):
        upstream.gate.put_nowait(None)
    rest = await drain(early)
    assert [c["index"] for c in head + rest] == list(range(CHUNKS))
    assert [c["index"] for c in await late] == list(range(CHUNKS))
    assert upstream.calls == 1


async def test_one_follower_leaving_does_not_stop_the_stream_for_the_others() -> None:
    upstream = Upstream()
    complete = decorate(upstream, InMemoryCache())
    leaving = complete(REQUEST)
    staying = asyncio.create_task(drain(complete(REQUEST)))
    await leaving.__anext__()
    await leaving.aclose()
    assert len(await staying) == CHUNKS
    assert upstream.calls == 1
    assert len(await complete.peek(REQUEST)) == CHUNKS  # and it was stored


async def test_an_upstream_error_reaches_every_follower_after_the_chunks_so_far() -> None:
    upstream = Upstream(fail_after=10)
    cache = InMemoryCache()
    complete = decorate(upstream, cache)

    async def follow() -> list[Any]:
        got: list[Any] = []
        with pytest.raises(RuntimeError, match="upstream broke"):
            async for chunk in complete(REQUEST):
                got.append(chunk)
        return got

    results = await asyncio.gather(follow(), follow(), follow())
    assert [len(r) for r in results] == [10, 10, 10]
    assert await complete.peek(REQUEST) is streams_missing()
    assert complete.stats()["errors"] == 1


async def test_an_invalidation_during_the_stream_keeps_it_out_of_the_cache() -> None:
    upstream = Upstream()
    upstream.gated()
    assert upstream.gate is not None
    complete = decorate(upstream, InMemoryCache())
    stream = complete(REQUEST)
    upstream.gate.put_nowait(None)
    await stream.__anext__()
    await complete.invalidate(REQUEST)
    for _ in range(CHUNKS):
        upstream.gate.put_nowait(None)
    assert len(await drain(stream)) == CHUNKS - 1
    assert await complete.peek(REQUEST) is streams_missing()


async def test_replay_pace_puts_time_between_replayed_chunks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    complete = decorate(Upstream(chunks=5), InMemoryCache(), replay_pace=0.25)
    await drain(complete(REQUEST))
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr(streams.asyncio, "sleep", sleep)
    assert len(await drain(complete(REQUEST))) == 5
    assert slept == [0.25] * 4


async def test_stream_options_that_cannot_apply_are_refused() -> None:
    with pytest.raises(ConfigError, match="stale_ttl and early_refresh do not apply"):
        decorate(Upstream(), InMemoryCache(), stale_ttl=10)
    with pytest.raises(ConfigError, match="replay_pace"):
        ai_cached("chat", replay_pace=-1)


async def test_a_stream_never_shares_a_key_with_a_plain_reply() -> None:
    cache = InMemoryCache()

    @ai_cached("chat", request="request", cache=cache)
    async def reply(request: dict[str, Any]) -> str:
        return "whole reply"

    complete = decorate(Upstream(), cache)
    assert complete.key_for(REQUEST) != reply.key_for(REQUEST)
    assert await reply(REQUEST) == "whole reply"
    assert len(await drain(complete(REQUEST))) == CHUNKS


async def test_cached_streams_too_and_methods_bind_self() -> None:
    cache = InMemoryCache()
    calls = 0

    class Source:
        @cached(ttl=60, cache=cache)
        async def numbers(self, n: int) -> AsyncIterator[int]:
            nonlocal calls
            calls += 1
            for i in range(n):
                yield i

    source = Source()
    assert inspect.isasyncgenfunction(Source.numbers.__wrapped__)
    assert await drain(source.numbers(3)) == [0, 1, 2]
    assert await drain(Source().numbers(3)) == [0, 1, 2]
    assert calls == 1


async def test_deterministic_only_streams_a_sampled_request_uncached() -> None:
    upstream = Upstream(chunks=3)
    complete = decorate(upstream, InMemoryCache(), deterministic_only=True)
    sampled = {**REQUEST, "temperature": 1.0}
    await drain(complete(sampled))
    await drain(complete(sampled))
    assert upstream.calls == 2
    assert complete.stats()["nondeterministic"] == 2


async def test_a_stream_stored_in_redis_is_replayed_by_another_cache(
    redis_server: RedisServer,
) -> None:
    """Two caches on one server stand for two processes."""
    upstream = Upstream()
    writer, reader = GenericRedisCache(redis_server.url), GenericRedisCache(redis_server.url)
    try:
        first = await drain(decorate(upstream, writer)(REQUEST))
        replayed = await drain(decorate(upstream, reader)(REQUEST))
        assert replayed == first
        assert upstream.calls == 1
    finally:
        await writer.aclose()
        await reader.aclose()


def streams_missing() -> Any:
    from memo import MISSING

    return MISSING


def test_recording_names_the_stream_it_records() -> None:
    async def tokens() -> AsyncIterator[str]:
        yield "a"

    assert streams.recording(tokens).__qualname__.endswith("tokens")


async def test_a_caller_arriving_while_an_abandoned_stream_winds_down_gets_a_new_one() -> None:
    """The last follower left; upstream's own cleanup still awaits. A caller arriving
    then is served by a new stream, not handed the old one's cancellation."""
    cleanup = asyncio.Event()
    calls = 0

    @ai_cached("chat", request="request", cache=InMemoryCache())
    async def complete(request: dict[str, Any]) -> AsyncIterator[int]:
        nonlocal calls
        calls += 1
        try:
            for i in range(3):
                await asyncio.sleep(0)
                yield i
        finally:
            if calls == 1:
                await cleanup.wait()  # closing a connection, say

    first = complete(REQUEST)
    assert await first.__anext__() == 0
    await first.aclose()
    await asyncio.sleep(0)
    second = asyncio.create_task(drain(complete(REQUEST)))
    await asyncio.sleep(0)
    cleanup.set()
    assert await second == [0, 1, 2]
    assert calls == 2


async def test_closing_the_cache_right_after_a_stream_ends_still_stores_it() -> None:
    cache = InMemoryCache()
    upstream = Upstream(chunks=3)
    complete = decorate(upstream, cache)
    assert len(await drain(complete(REQUEST))) == 3
    await cache.aclose()
    assert len(await complete.peek(REQUEST)) == 3


async def test_closing_a_redis_cache_right_after_a_stream_stores_it_and_frees_its_lease(
    redis_server: RedisServer,
) -> None:
    cache = GenericRedisCache(redis_server.url)
    complete = decorate(Upstream(chunks=3), cache)
    key = complete.key_for(REQUEST)
    await drain(complete(REQUEST))
    await cache.aclose()
    other = GenericRedisCache(redis_server.url)
    try:
        assert await other.get(key) is not None
        assert await other.keys("*#lease") == []
    finally:
        await other.aclose()
