"""``memo.integrations.prometheus``: after a scripted workload, ``/metrics`` scraped over
HTTP and parsed by prometheus-client's own parser shows the workload's exact counts."""

from __future__ import annotations

import socket
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.parser import text_string_to_metric_families

from memo import GenericRedisCache, InMemoryCache, cached
from memo.integrations.prometheus import MemoCollector, register
from tests._workloads import savings_workload, workload
from tests.redis_harness import RedisServer


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of ``/metrics``, served over HTTP, by (name, sorted labels)."""
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_scraped_counts_are_the_workloads_own_on_a_redis_cache(
    redis_server: RedisServer,
) -> None:
    cache = GenericRedisCache(redis_server.url, namespace="metrics")
    try:
        alive = await workload(cache)
        function = f"shop:{alive.__module__}.{alive.__qualname__}"
        registry = CollectorRegistry()
        register(registry, caches=[cache])
        samples = scrape(registry)
        label = (("cache", "metrics/tiered"),)

        def call(result: str) -> float:
            key = (("cache", "metrics/tiered"), ("function", function), ("result", result))
            return samples[("memo_function_calls_total", key)]

        assert (call("hit"), call("miss")) == (10, 7)  # a failed computation is a miss too
        assert samples[("memo_function_errors_total", (*label, ("function", function)))] == 2
        assert samples[("memo_cache_hits_total", label)] == 10
        assert samples[("memo_cache_misses_total", label)] == 7
        assert samples[("memo_cache_errors_total", label)] == cache.stats.errors
        window = cache.redis.latency
        assert window.total > 0
        assert samples[("memo_redis_operation_seconds_count", label)] == window.total
        assert samples[("memo_redis_operation_seconds_sum", label)] == pytest.approx(window.sum)
        buckets = [
            value
            for (name, labels), value in samples.items()
            if name == "memo_redis_operation_seconds_bucket" and labels[0] == label[0]
        ]
        assert buckets == sorted(buckets) and max(buckets) == window.total
        assert alive.stats()["hits"] == 10
    finally:
        await cache.aclose()


async def test_every_cache_of_the_process_is_reported_under_its_own_label() -> None:
    first, second = InMemoryCache(namespace="twin"), InMemoryCache(namespace="twin")
    await workload(first)
    registry = CollectorRegistry()
    register(registry)  # all caches, as they are at each scrape
    samples = scrape(registry)
    assert samples[("memo_cache_hits_total", (("cache", "twin/memory"),))] == 10
    assert samples[("memo_cache_hits_total", (("cache", "twin/memory#2"),))] == 0
    await second.aclose()
    assert ("memo_cache_hits_total", (("cache", "twin/memory#2"),)) not in scrape(registry)


async def test_ai_savings_are_exported_in_tokens_and_money() -> None:
    cache = await savings_workload()
    registry = CollectorRegistry()
    register(registry, caches=[cache])
    samples = scrape(registry)
    base = (("cache", "default/memory"), ("kind", "prompt"), ("operation", "qa"))
    assert samples[("memo_ai_tokens_saved_total", base)] == 300
    money = (("cache", "default/memory"), ("operation", "qa"))
    assert samples[("memo_ai_cost_saved_total", money)] == pytest.approx(3 * 200 / 1e6)


def test_registering_twice_on_one_registry_returns_the_first_collector() -> None:
    registry = CollectorRegistry()
    first = register(registry)
    assert register(registry) is first
    assert isinstance(first, MemoCollector)


def test_a_new_registry_at_a_freed_registrys_address_gets_its_own_collector() -> None:
    for _ in range(100):  # CPython soon reuses a freed registry's address (and id)
        registry = CollectorRegistry()
        register(registry, caches=[])
        assert [family.name for family in registry.collect()][:1] == ["memo_cache_hits"]
        del registry


async def test_two_versions_of_one_function_are_one_series_with_their_counts_summed() -> None:
    cache = InMemoryCache(namespace="versions")

    def version(n: int) -> Any:
        @cached(ttl=60, cache=cache, version=n)
        async def price(item: int) -> int:
            return item

        return price

    old, new = version(1), version(2)
    for item in (1, 1, 2):
        await old(item)
        await new(item)
    registry = CollectorRegistry()
    register(registry, caches=[cache])
    samples = scrape(registry)
    hits = [v for (name, labels), v in samples.items() if name == "memo_function_calls_total"
            and ("result", "hit") in labels]  # fmt: skip
    assert hits == [2]  # one series: each version hit once
    assert old.stats()["hits"] == new.stats()["hits"] == 1


def test_scraping_while_other_threads_build_caches_never_fails() -> None:
    import sys
    import threading

    from memo._cache_core import live_caches

    stop = threading.Event()

    def churn() -> None:
        while not stop.is_set():
            InMemoryCache(namespace="churn")  # made and dropped: the set of caches moves

    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    threads = [threading.Thread(target=churn) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for _ in range(300):
            live_caches()
    finally:
        stop.set()
        for t in threads:
            t.join()
        sys.setswitchinterval(switch)
