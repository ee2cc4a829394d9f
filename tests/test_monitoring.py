"""CachePerformanceMonitor: thresholds, and the alerts live caches raise."""

from __future__ import annotations

import random

import pytest

from memo import CachePerformanceMonitor, ConfigError, GenericRedisCache, InMemoryCache
from memo._cache_core import CacheCore
from memo.backends.memory import MemoryBackend
from memo.monitoring import DEFAULT_THRESHOLDS
from memo.stats import LatencyWindow
from memo.testing import FakeClock
from tests.redis_harness import RedisServer

GUIDE_THRESHOLDS = {
    "memory_warning": 50_000_000,
    "memory_critical": 100_000_000,
    "hit_ratio_warning": 0.6,
    "operation_slow": 0.1,
}


def names(monitor: CachePerformanceMonitor) -> list[str]:
    return sorted(a.threshold for a in monitor.alerts())


def test_the_defaults_are_the_guide_figures_and_configuring_keeps_the_rest() -> None:
    monitor = CachePerformanceMonitor(caches=[])
    assert GUIDE_THRESHOLDS.items() <= monitor.thresholds.items()
    monitor.configure_thresholds({"hit_ratio_warning": 0.8})
    assert 0.8 == monitor.thresholds["hit_ratio_warning"]
    assert DEFAULT_THRESHOLDS["memory_warning"] == monitor.thresholds["memory_warning"]


@pytest.mark.parametrize(
    ("thresholds", "named"),
    [
        ({"memory_warnings": 1}, "'memory_warnings'.*known: memory_warning"),
        ({"hit_ratio_warning": 1.5}, "hit_ratio_warning"),
        ({"operation_slow": 0}, "'operation_slow'"),
        ({"operation_slow": float("nan")}, "'operation_slow'"),
        ({"memory_warning": True}, "'memory_warning'"),
        ({"memory_warning": 0.8}, "'memory_warning'.*byte counts such as 50_000_000"),
        ({"memory_critical": 1.5e8 + 0.5}, "'memory_critical'.*whole number"),
        ({"hit_ratio_min_reads": 10.5}, "'hit_ratio_min_reads'.*whole number"),
        ({"memory_warning": 10, "memory_critical": 5}, "memory_critical.*below"),
    ],
)
def test_bad_thresholds_are_refused_by_name_and_change_nothing(
    thresholds: dict[str, float], named: str
) -> None:
    monitor = CachePerformanceMonitor(caches=[])
    before = monitor.thresholds
    with pytest.raises(ConfigError, match=named):
        monitor.configure_thresholds(thresholds)
    assert before == monitor.thresholds


async def test_memory_raises_the_warning_then_only_the_critical(clock: FakeClock) -> None:
    cache = InMemoryCache(memory_cache_size=1000, clock=clock)
    monitor = CachePerformanceMonitor(caches=[cache])
    monitor.configure_thresholds({"memory_warning": 20_000, "memory_critical": 60_000})
    assert [] == monitor.alerts()

    # Random bytes: lz4 cannot shrink them, so each entry holds its full kilobyte.
    await cache.set_many({f"k{i}": random.Random(i).randbytes(1000) for i in range(25)})
    [alert] = monitor.alerts()
    assert ("memory_warning", "warning", 20_000) == (alert.threshold, alert.level, alert.limit)
    assert alert.value >= 25_000 and "memory_warning" in alert.message

    await cache.set_many({f"j{i}": random.Random(-i).randbytes(1000) for i in range(50)})
    assert ["memory_critical"] == names(monitor)
    await cache.invalidate_all()
    assert [] == monitor.alerts()


async def test_a_low_hit_ratio_is_raised_only_after_enough_reads(clock: FakeClock) -> None:
    cache = InMemoryCache(clock=clock)
    monitor = CachePerformanceMonitor(caches=[cache])
    monitor.configure_thresholds({"hit_ratio_warning": 0.5, "hit_ratio_min_reads": 10})
    for i in range(9):
        await cache.get(f"absent{i}")
    assert [] == monitor.alerts()  # nine reads: too few to judge
    await cache.get("absent9")
    [alert] = monitor.alerts()
    assert "hit_ratio_warning" == alert.threshold and 0.0 == alert.value

    await cache.set("k", 1)
    for _ in range(20):
        await cache.get("k")
    assert [] == monitor.alerts()  # 20 hits of 30 reads: 67%


async def test_a_bare_monitor_watches_every_open_cache_even_later_ones(clock: FakeClock) -> None:
    monitor = CachePerformanceMonitor()
    monitor.configure_thresholds({"hit_ratio_min_reads": 1, "hit_ratio_warning": 0.99})
    cache = InMemoryCache(namespace="built_after_the_monitor", clock=clock)
    await cache.get("absent")
    assert any("built_after_the_monitor" in a.cache for a in monitor.alerts())
    await cache.aclose()
    assert all("built_after_the_monitor" not in a.cache for a in monitor.alerts())


async def test_any_cache_core_is_watched_and_one_without_a_server_is_never_slow(
    clock: FakeClock,
) -> None:
    core = CacheCore(MemoryBackend(clock=clock), namespace="bare_core", clock=clock)
    monitor = CachePerformanceMonitor(caches=[core])
    assert [core] == monitor.caches()
    monitor.configure_thresholds({"memory_warning": 1, "memory_critical": 2**40})
    data = core.encode_entry("v" * 100, 60_000)
    assert await core.store_entry(core.full_key("k"), data, 60_000)
    assert ["memory_warning"] == names(monitor)  # and no operation_slow: no remote server
    with pytest.raises(TypeError, match="not a memo cache"):
        CachePerformanceMonitor(caches=[object()])
    await core.aclose()
    assert [] == monitor.caches()


def test_slow_redis_operations_raise_operation_slow_from_the_p95() -> None:
    cache = GenericRedisCache("redis://127.0.0.1:1/0")  # never contacted here
    monitor = CachePerformanceMonitor(caches=[cache])
    monitor.configure_thresholds({"operation_slow": 0.05})
    assert cache.redis is not None
    for _ in range(95):
        cache.redis.latency.record(0.001)
    for _ in range(5):
        cache.redis.latency.record(0.5)  # 5% slow: at the 95th percentile, not above it
    assert [] == monitor.alerts()
    for _ in range(5):
        cache.redis.latency.record(0.5)
    [alert] = monitor.alerts()
    assert ("operation_slow", 0.5) == (alert.threshold, alert.value)
    assert "127.0.0.1" in alert.cache


async def test_a_paused_redis_server_raises_operation_slow(redis_server: RedisServer) -> None:
    cache = GenericRedisCache(redis_server.url, enable_memory_cache=False, operation_timeout=0.1)
    monitor = CachePerformanceMonitor(caches=[cache])
    monitor.configure_thresholds({"operation_slow": 0.05})
    await cache.set("k", "v")
    redis_server.pause()
    try:
        for _ in range(5):  # each read waits out its 0.1 s deadline, then the breaker opens
            assert await cache.get("k") is None
    finally:
        redis_server.resume()
    alerts = [a for a in monitor.alerts() if a.threshold == "operation_slow"]
    assert len(alerts) == 1 and alerts[0].value >= 0.1
    stats = await cache.get_cache_stats()
    assert stats["redis"]["latency_ms"]["max_ms"] >= 100
    await cache.aclose()


def test_the_latency_window_forgets_all_but_the_last_512_operations() -> None:
    window = LatencyWindow()
    assert window.percentile(0.95) is None
    assert {"samples": 0, "p50_ms": None, "p95_ms": None, "max_ms": None} == window.summary()
    for _ in range(600):
        window.record(1.0)
    for _ in range(512):
        window.record(0.002)
    assert 0.002 == window.percentile(0.95) == window.percentile(1.0)
    assert {"samples": 512, "p50_ms": 2.0, "p95_ms": 2.0, "max_ms": 2.0} == window.summary()
    assert 1112 == window.total
