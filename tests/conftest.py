"""Shared fixtures: an injected clock, a fresh in-memory cache, a clean global switch."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

import memo
from memo import InMemoryCache
from memo.testing import FakeClock

pytest_plugins = ["tests.redis_harness"]

_REDIS_FIXTURES = {"redis_server", "redis_url", "make_redis_server", "tls_files"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that uses a Redis fixture carries the ``redis`` marker."""
    for item in items:
        if _REDIS_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.redis)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def cache(clock: FakeClock) -> AsyncIterator[InMemoryCache]:
    c = InMemoryCache(clock=clock, default_ttl=60, max_size=1000)
    yield c
    await c.aclose()


@pytest.fixture(autouse=True)
def _caching_enabled() -> Iterator[None]:
    """A test that disables caching must not leak that into the next one."""
    memo.enable()
    yield
    memo.enable()
