"""Shared fixtures: an injected clock, a fresh in-memory cache, clean process-wide state."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Union

import pytest

import memo
from memo import InMemoryCache
from memo._slots import _slots
from memo.testing import FakeClock

if TYPE_CHECKING:  # the harnesses are plugins: imported here first, pytest could not rewrite them
    from tests.cluster_harness import Cluster
    from tests.redis_harness import RedisServer

pytest_plugins = ["tests.redis_harness", "tests.sentinel_harness", "tests.cluster_harness"]

_REDIS_FIXTURES = {
    "redis_server",
    "redis_url",
    "make_redis_server",
    "tls_files",
    "sentinel_set",
    "shared_sentinel_set",
    "redis_cluster",
    "shared_redis_cluster",
    "deployment",
}


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
    c = InMemoryCache(clock=clock, default_ttl=60, memory_cache_size=1000)
    yield c
    await c.aclose()


@pytest.fixture(autouse=True)
def _caching_enabled() -> Iterator[None]:
    """A test that disables caching must not leak that into the next one."""
    memo.enable()
    yield
    memo.enable()


#: The variables memo reads; a test sets the ones it needs, none leaks in from outside.
MEMO_ENV = (
    "CACHE_PRESET",
    "CACHE_REDIS_URL",
    "CACHE_NAMESPACE",
    "ENABLE_AI_CACHE",
    "CACHE_CUSTOM_CONFIG",
)


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No CACHE_* variable from the machine, and no decorator cache kept between tests
    (tests that build Redis-backed ones close them with ``memo.aclose_all()``)."""
    for name in MEMO_ENV:
        monkeypatch.delenv(name, raising=False)
    yield
    for slot in _slots.values():
        slot.detach()


#: What a test parametrized over deployments runs against: one server, or a
#: three-primary cluster (both have ``url`` and a synchronous ``client()``).
Deployment = Union["RedisServer", "Cluster"]


@pytest.fixture(params=["server", "cluster"])
def deployment(request: pytest.FixtureRequest) -> Deployment:
    name = "redis_server" if request.param == "server" else "redis_cluster"
    return request.getfixturevalue(name)  # type: ignore[no-any-return]
