"""Tokens and money that AI hits saved: counted per hit from the reply's usage record,
priced from the cache's table, shown by stats, the monitor and ``memo stats``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import redis

from memo import (
    AIResponseCache,
    AISettings,
    CachePerformanceMonitor,
    GenericRedisCache,
    InMemoryCache,
    ai_cached,
)
from memo._savings import price_for, usage_of
from memo.exceptions import ConfigError
from tests.redis_harness import RedisServer

ROOT = Path(__file__).resolve().parent.parent
PRICES = {"gpt-4o-mini": (0.15, 0.60)}
REPLY = {
    "model": "gpt-4o-mini-2024-07-18",
    "choices": [{"message": {"role": "assistant", "content": "Paris."}}],
    "usage": {"prompt_tokens": 120, "completion_tokens": 80, "total_tokens": 200},
}
#: Ten hits saving 120 prompt and 80 completion tokens each, at the prices above.
TEN_HITS_COST = 10 * (120 * 0.15 + 80 * 0.60) / 1_000_000


def chat_on(cache: Any, reply: Any = REPLY, **options: Any) -> Any:
    @ai_cached("chat", request="request", cache=cache, **options)
    async def chat(request: dict[str, Any]) -> Any:
        return reply

    return chat


REQUEST = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Capital?"}]}


async def test_ten_hits_on_a_reply_of_200_tokens_saved_2000_tokens_and_their_price() -> None:
    cache = InMemoryCache(ai=AISettings(model_prices=PRICES))
    chat = chat_on(cache)
    for _ in range(11):  # one miss, ten hits
        await chat(REQUEST)
    saved = (await cache.get_cache_stats())["ai_savings"]
    assert (saved["tokens"], saved["prompt_tokens"], saved["completion_tokens"]) == (
        2000,
        1200,
        800,
    )
    assert saved["cost"] == pytest.approx(TEN_HITS_COST)
    row = saved["by_operation"]["chat"]
    assert (row["hits"], row["tokens"]) == (10, 2000)
    assert row["cost"] == pytest.approx(TEN_HITS_COST)


async def test_without_a_price_the_tokens_are_counted_and_the_cost_is_none() -> None:
    cache = InMemoryCache()
    chat = chat_on(cache)
    for _ in range(3):
        await chat(REQUEST)
    saved = (await cache.get_cache_stats())["ai_savings"]
    assert (saved["tokens"], saved["cost"]) == (400, None)


async def test_a_miss_saves_nothing_and_a_reply_without_usage_counts_nothing() -> None:
    cache = InMemoryCache(ai=AISettings(model_prices=PRICES))
    await chat_on(cache)(REQUEST)
    bare = chat_on(cache, reply={"choices": []}, version=2)
    for _ in range(3):
        await bare(REQUEST)
    saved = (await cache.get_cache_stats())["ai_savings"]
    assert (saved["tokens"], saved["by_operation"]) == (0, {})


def test_usage_is_read_from_objects_and_from_anthropic_style_names() -> None:
    as_object = SimpleNamespace(
        model="claude-x", usage=SimpleNamespace(input_tokens=10, output_tokens=5)
    )
    assert usage_of(as_object) == ("claude-x", 10, 5)
    chunks = [{"model": "m", "choices": [{}]}, {"choices": [], "usage": {"prompt_tokens": 7}}]
    assert usage_of(chunks) == ("m", 7, 0)  # the model named by another chunk
    assert usage_of({"usage": {"prompt_tokens": "7"}}) is None  # not a count


def test_a_model_takes_the_price_of_the_longest_name_it_starts_with() -> None:
    prices = {"gpt-4o": (2.5, 10.0), "gpt-4o-mini": (0.15, 0.6)}
    assert price_for(prices, "gpt-4o-mini-2024-07-18") == (0.15, 0.6)
    assert price_for(prices, "gpt-4o-2024-08-06") == (2.5, 10.0)
    assert price_for(prices, "o3") is None


def test_a_bad_price_table_names_the_entry_and_the_shape_wanted() -> None:
    with pytest.raises(ConfigError, match=r"model_prices\['m'\]=.*\(2.5, 10.0\)"):
        AISettings(model_prices={"m": 3})
    with pytest.raises(ConfigError, match="both >= 0"):
        AISettings(model_prices={"m": (1, -1)})


async def test_a_usage_function_reads_other_reply_shapes() -> None:
    cache = InMemoryCache()
    chat = chat_on(cache, reply={"tokens": [30, 12]}, usage=lambda r: tuple(r["tokens"]))
    for _ in range(3):
        await chat(REQUEST)
    assert (await cache.get_cache_stats())["ai_savings"]["tokens"] == 84


async def test_replayed_streams_save_the_usage_of_their_last_chunk() -> None:
    cache = InMemoryCache(ai=AISettings(model_prices=PRICES))

    @ai_cached("chat", request="request", cache=cache)
    async def stream(request: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        yield {"model": "gpt-4o-mini", "choices": [{"delta": {"content": "Par"}}]}
        yield {"model": "gpt-4o-mini", "choices": [{"delta": {"content": "is."}}]}
        yield {"model": "gpt-4o-mini", "choices": [], "usage": REPLY["usage"]}

    for _ in range(11):
        assert len([c async for c in stream(REQUEST)]) == 3
    saved = (await cache.get_cache_stats())["ai_savings"]
    assert saved["tokens"] == 2000
    assert saved["cost"] == pytest.approx(TEN_HITS_COST)


async def test_the_monitor_shows_savings_per_operation() -> None:
    cache = InMemoryCache(ai=AISettings(model_prices=PRICES))
    chat = chat_on(cache)
    for _ in range(11):
        await chat(REQUEST)
    report = CachePerformanceMonitor([cache]).savings()
    assert report["tokens"] == 2000
    assert report["by_operation"]["chat"]["hits"] == 10
    assert report["cost"] == pytest.approx(TEN_HITS_COST)


WORKER = textwrap.dedent(
    """
    import asyncio, sys
    from memo import GenericRedisCache, ai_cached

    REPLY = {"model": "gpt-4o-mini", "usage": {"prompt_tokens": 120, "completion_tokens": 80}}

    async def main(url, hits):
        cache = GenericRedisCache(url)

        @ai_cached("chat", request="request", cache=cache)
        async def chat(request):
            return REPLY

        request = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Capital?"}]}
        await chat(request)  # a miss here, or a hit on the other process's value
        for _ in range(hits):
            await chat(request)
        await cache.aclose()  # sends what is left to the server

    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
    """
)


def test_memo_stats_prints_what_every_process_saved(redis_server: RedisServer) -> None:
    """Two worker processes; the CLI, a third, reads the fleet's figures from Redis."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    workers = [
        subprocess.Popen([sys.executable, "-c", WORKER, redis_server.url, "5"], env=env)
        for _ in range(2)
    ]
    assert [w.wait(timeout=120) for w in workers] == [0, 0]
    env["CACHE_CUSTOM_CONFIG"] = json.dumps({"model_prices": PRICES})
    command = [sys.executable, "-m", "memo", "stats", "--redis-url", redis_server.url]
    shown = subprocess.run(
        [*command, "--json"], env=env, capture_output=True, text=True, timeout=120, check=True
    )
    fleet = json.loads(shown.stdout)["ai_savings_fleet"]
    # Ten hits in all, plus the first call of whichever process found the other's value.
    hits = fleet["by_operation"]["chat"]["hits"]
    assert hits in (10, 11)
    assert fleet["tokens"] == 200 * hits
    assert fleet["cost"] == pytest.approx(TEN_HITS_COST * hits / 10)
    text = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=120, check=True
    ).stdout
    assert f"ai savings (every process): {200 * hits} tokens" in text
    assert f"  chat: {hits} hits" in text


async def test_savings_are_kept_when_redis_cannot_take_them(redis_server: RedisServer) -> None:
    cache = GenericRedisCache(redis_server.url, operation_timeout=0.2, connect_timeout=0.2)
    chat = chat_on(cache)
    try:
        for _ in range(3):
            await chat(REQUEST)
        redis_server.stop()
        await cache.flush_savings()  # refused: the counts stay pending
        assert cache.savings.pending
        redis_server.start()
        await cache.flush_savings()
        assert not cache.savings.pending
        stats = await cache.get_cache_stats()
        assert stats["ai_savings_fleet"]["tokens"] == stats["ai_savings"]["tokens"] == 400
    finally:
        await cache.aclose()


async def test_a_hit_through_ai_response_cache_counts_its_savings_too() -> None:
    ai = AIResponseCache(InMemoryCache(ai=AISettings(model_prices=PRICES)))
    await ai.cache_response("Capital?", "qa", None, REPLY)
    for _ in range(10):
        assert await ai.get_cached_response("Capital?", "qa") == REPLY
    assert await ai.get_cached_response("Other?", "qa") is None
    saved = (await ai.get_cache_stats())["ai_savings"]
    assert (saved["by_operation"]["qa"]["hits"], saved["tokens"]) == (10, 2000)
    assert saved["cost"] == pytest.approx(TEN_HITS_COST)


@pytest.mark.parametrize(
    "returned", [(None, 5), ("a", 5), (float("nan"), 5), (1.5, 5), (-7, 5), (True, 1), (2**64, 1)]
)
async def test_a_usage_function_returning_nonsense_counts_nothing_and_the_hit_returns(
    returned: Any,
) -> None:
    cache = InMemoryCache()
    chat = chat_on(cache, reply={"ok": 1}, usage=lambda r: returned)
    for _ in range(3):
        assert await chat(REQUEST) == {"ok": 1}
    assert (await cache.get_cache_stats())["ai_savings"]["tokens"] == 0


def test_a_count_no_reply_could_carry_is_not_believed() -> None:
    assert usage_of({"usage": {"prompt_tokens": 2**64, "completion_tokens": 1}}) == (None, 0, 1)


async def test_counts_the_server_refuses_are_dropped_not_sent_forever(
    redis_server: RedisServer,
) -> None:
    """A field someone else made a non-integer: Redis refuses HINCRBY on it. The other
    counts land; the batch is not given back to be sent again every second."""
    cache = GenericRedisCache(redis_server.url)
    chat = chat_on(cache)
    try:
        server = redis.Redis.from_url(redis_server.url)
        server.hset("memo:default#ai_savings", "chat\tgpt-4o-mini-2024-07-18\thits", "x")
        server.hset("memo:default#ai_savings", "someone else", "1.5")
        for _ in range(3):
            await chat(REQUEST)
        await cache.flush_savings()
        assert not cache.savings.pending
        await cache.flush_savings()
        fleet = (await cache.get_cache_stats())["ai_savings_fleet"]
        assert fleet["tokens"] == 400  # the tokens landed once; the refused hits did not
    finally:
        await cache.aclose()
