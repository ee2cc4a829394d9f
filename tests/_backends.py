"""The backends the contract suite runs over. A new backend adds one entry here."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import pytest

from memo._options import MemoryOptions
from memo.backends import Backend, MemoryBackend
from memo.backends.redis import RedisBackend
from memo.backends.tiered import TieredBackend
from memo.testing import FakeClock


@dataclass(frozen=True)
class BackendCase:
    """How to build one backend for a contract test.

    ``controls_time``: the backend expires entries by the injected clock, so expiry tests
    advance a FakeClock. Backends that expire by their own clock (a Redis server) get
    short real TTLs instead.
    """

    name: str
    make: Callable[[FakeClock, pytest.FixtureRequest], Awaitable[Backend]]
    controls_time: bool = True


async def _memory(clock: FakeClock, request: pytest.FixtureRequest) -> Backend:
    return MemoryBackend(
        MemoryOptions(memory_cache_size=10_000, memory_max_bytes=64 * 1024 * 1024), clock=clock
    )


async def _tiered_over_memory(clock: FakeClock, request: pytest.FixtureRequest) -> Backend:
    # The tiering rules on their own; the same backend over Redis is an entry below.
    return TieredBackend(
        MemoryBackend(MemoryOptions(memory_cache_size=100), clock=clock),
        await _memory(clock, request),
    )


async def _fakeredis(clock: FakeClock, request: pytest.FixtureRequest) -> Backend:
    import fakeredis

    server = fakeredis.FakeServer()
    return RedisBackend.from_url(
        "redis://fakeredis:6379/0",
        invalidation_channel=False,  # fakeredis runs no Lua without lupa
        client_factory=lambda: fakeredis.FakeAsyncRedis(server=server),
    )


async def _redis(clock: FakeClock, request: pytest.FixtureRequest) -> Backend:
    return RedisBackend.from_url(request.getfixturevalue("redis_url"))


async def _tiered_over_redis(clock: FakeClock, request: pytest.FixtureRequest) -> Backend:
    # The memory tier's clock must run with Redis's, so it gets the real one here.
    return TieredBackend(
        MemoryBackend(MemoryOptions(memory_cache_size=100)), await _redis(clock, request)
    )


async def _sentinel(clock: FakeClock, request: pytest.FixtureRequest) -> Backend:
    return RedisBackend.from_url(request.getfixturevalue("shared_sentinel_set").url)


async def _tiered_over_sentinel(clock: FakeClock, request: pytest.FixtureRequest) -> Backend:
    return TieredBackend(
        MemoryBackend(MemoryOptions(memory_cache_size=100)), await _sentinel(clock, request)
    )


async def _cluster(clock: FakeClock, request: pytest.FixtureRequest) -> Backend:
    from memo.backends.cluster import RedisClusterBackend

    return RedisClusterBackend.from_url(request.getfixturevalue("shared_redis_cluster").url)


async def _tiered_over_cluster(clock: FakeClock, request: pytest.FixtureRequest) -> Backend:
    return TieredBackend(
        MemoryBackend(MemoryOptions(memory_cache_size=100)), await _cluster(clock, request)
    )


BACKENDS: dict[str, BackendCase] = {
    "memory": BackendCase("memory", _memory),
    "tiered-memory": BackendCase("tiered-memory", _tiered_over_memory),
    "fakeredis": BackendCase("fakeredis", _fakeredis, controls_time=False),
    "redis": BackendCase("redis", _redis, controls_time=False),
    "tiered-redis": BackendCase("tiered-redis", _tiered_over_redis, controls_time=False),
    "sentinel": BackendCase("sentinel", _sentinel, controls_time=False),
    "tiered-sentinel": BackendCase("tiered-sentinel", _tiered_over_sentinel, controls_time=False),
    "cluster": BackendCase("cluster", _cluster, controls_time=False),
    "tiered-cluster": BackendCase("tiered-cluster", _tiered_over_cluster, controls_time=False),
}
