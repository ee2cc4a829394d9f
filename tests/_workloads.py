"""A scripted workload whose counts the metric exporters' tests check exactly."""

from __future__ import annotations

from typing import Any

import pytest

from memo import cached


async def workload(cache: Any) -> Any:
    """5 misses, 10 hits and 2 failed computations of one function under namespace
    ``shop`` (returned: a function that is garbage-collected no longer reports)."""

    @cached(ttl=60, cache=cache, namespace="shop")
    async def price(item: int) -> int:
        if item < 0:
            raise ValueError("no such item")
        return item * 10

    for item in range(5):
        await price(item)
    for item in range(10):
        await price(item % 5)
    for item in (-1, -2):
        with pytest.raises(ValueError):
            await price(item)
    return price


async def savings_workload() -> Any:
    """An AI cache priced for model ``m``, after one miss and three hits of operation
    ``qa`` on a reply of 100 prompt and 50 completion tokens (returned: the cache)."""
    from memo import AISettings, InMemoryCache, ai_cached

    cache = InMemoryCache(ai=AISettings(model_prices={"m": (1.0, 2.0)}))

    @ai_cached("qa", cache=cache)
    async def answer(text: str, options: Any = None) -> dict[str, Any]:
        return {"model": "m", "usage": {"prompt_tokens": 100, "completion_tokens": 50}}

    for _ in range(4):
        await answer("why?")
    return cache
