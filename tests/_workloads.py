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
