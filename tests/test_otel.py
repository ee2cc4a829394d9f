"""``memo.integrations.otel``: after the Prometheus tests' workload, an in-memory metric
reader sees the workload's exact counts, and spans, when on, trace misses and Redis
commands and nothing else. Providers are passed explicitly: no global OpenTelemetry
state is set, so nothing leaks between tests."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, Sum
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from memo import GenericRedisCache, InMemoryCache
from memo._tracing import TRACING
from memo.integrations.otel import Instrumentation, instrument
from tests._workloads import savings_workload, workload
from tests.redis_harness import RedisServer

ROOT = Path(__file__).resolve().parent.parent

Points = dict[tuple[str, tuple[tuple[str, Any], ...]], Any]


class Telemetry:
    """A meter provider read by an in-memory reader, a tracer provider writing to an
    in-memory exporter: OpenTelemetry's SDK, with nothing global."""

    def __init__(self) -> None:
        self.reader = InMemoryMetricReader()
        self.meters = MeterProvider(metric_readers=[self.reader])
        self.exporter = InMemorySpanExporter()
        self.tracers = TracerProvider()
        self.tracers.add_span_processor(SimpleSpanProcessor(self.exporter))

    def instrument(self, **options: Any) -> Instrumentation:
        return instrument(self.meters, self.tracers, **options)

    def collect(self) -> tuple[Points, dict[str, Any]]:
        """Every data point by (metric, sorted attributes), and each metric's data."""
        points: Points = {}
        data: dict[str, Any] = {}
        collected = self.reader.get_metrics_data()
        for resource in collected.resource_metrics if collected else ():
            for scope in resource.scope_metrics:
                assert "memo" == scope.scope.name
                for metric in scope.metrics:
                    data[metric.name] = metric
                    for point in metric.data.data_points:
                        key = tuple(sorted(point.attributes.items()))
                        points[(metric.name, key)] = point.value
        return points, data

    def spans(self, name: str | None = None) -> list[ReadableSpan]:
        found = self.exporter.get_finished_spans()
        return [s for s in found if name is None or s.name == name]


@pytest.fixture
def otel() -> Iterator[Telemetry]:
    globals_before = (metrics.get_meter_provider(), trace.get_tracer_provider())
    telemetry = Telemetry()
    yield telemetry
    telemetry.meters.shutdown()
    telemetry.tracers.shutdown()
    assert TRACING.tracer is None, "a test left a tracer installed"
    assert globals_before == (metrics.get_meter_provider(), trace.get_tracer_provider())


async def test_collected_counts_are_the_workloads_own_on_a_redis_cache(
    redis_server: RedisServer, otel: Telemetry
) -> None:
    cache = GenericRedisCache(redis_server.url, namespace="otel")
    try:
        alive = await workload(cache)
        function = f"shop:{alive.__module__}.{alive.__qualname__}"
        with otel.instrument(caches=[cache]):
            points, data = otel.collect()
        label = (("memo.cache.name", "otel/tiered"),)

        def call(result: str) -> Any:
            key = (*label, ("memo.function.name", function), ("memo.result", result))
            return points[("memo.function.calls", key)]

        assert (call("hit"), call("miss"), call("coalesced")) == (10, 7, 0)
        assert 2 == points[("memo.function.errors", (*label, ("memo.function.name", function)))]
        assert 10 == points[("memo.cache.hits", label)]
        assert 7 == points[("memo.cache.misses", label)]
        assert cache.stats.errors == points[("memo.cache.errors", label)]
        tier = ("memo.cache.tier", "memory")
        assert cache.stats.memory_hits == points[("memo.cache.tier.hits", (*label, tier))]
        window = cache.redis.latency
        assert window.total > 0
        assert window.total == points[("memo.redis.operations", label)]
        assert window.sum == pytest.approx(points[("memo.redis.operation.time", label)])
        compute = points[("memo.function.compute.time", (*label, ("memo.function.name", function)))]
        assert compute > 0
        assert alive.stats()["hits"] == 10
        units = {name: metric.unit for name, metric in data.items()}
        assert units["memo.cache.hits"] == "{hit}"
        assert units["memo.redis.operations"] == "{operation}"
        assert units["memo.redis.operation.time"] == units["memo.function.compute.time"] == "s"
        assert units["memo.memory.usage"] == "By"
    finally:
        await cache.aclose()


async def test_counters_are_monotonic_sums_and_memory_figures_go_both_ways(
    otel: Telemetry,
) -> None:
    cache = InMemoryCache(namespace="otel-kinds")
    alive = await workload(cache)  # a function reports while it lives
    with otel.instrument(caches=[cache]):
        points, data = otel.collect()
    for name in ("memo.cache.hits", "memo.function.calls", "memo.function.compute.time"):
        assert isinstance(data[name].data, Sum) and data[name].data.is_monotonic, name
    for name in ("memo.memory.entry.count", "memo.memory.usage"):
        assert isinstance(data[name].data, Sum) and not data[name].data.is_monotonic, name
    label = (("memo.cache.name", "otel-kinds/memory"),)
    usage = cache.memory_usage()
    assert 5 == usage["entries"] == points[("memo.memory.entry.count", label)]
    assert usage["bytes"] == points[("memo.memory.usage", label)] > 0
    # A cache in memory has no Redis latency to report.
    assert ("memo.redis.operations", label) not in points
    assert 7 == alive.stats()["misses"]  # 5 stored, 2 raised
    await cache.aclose()


async def test_every_cache_of_the_process_is_reported_under_its_own_label(
    otel: Telemetry,
) -> None:
    first, second = InMemoryCache(namespace="otel-twin"), InMemoryCache(namespace="otel-twin")
    await workload(first)
    with otel.instrument():  # all caches, as they are at each collection
        points, _ = otel.collect()
        assert 10 == points[("memo.cache.hits", (("memo.cache.name", "otel-twin/memory"),))]
        assert 0 == points[("memo.cache.hits", (("memo.cache.name", "otel-twin/memory#2"),))]
        await second.aclose()
        points, _ = otel.collect()
        assert ("memo.cache.hits", (("memo.cache.name", "otel-twin/memory#2"),)) not in points
    await first.aclose()


async def test_ai_savings_are_exported_in_tokens_by_type_and_money(otel: Telemetry) -> None:
    cache = await savings_workload()
    with otel.instrument(caches=[cache]):
        points, data = otel.collect()
    base = (("gen_ai.token.type", "input"), ("memo.ai.operation", "qa"))
    label = ("memo.cache.name", "default/memory")
    assert 300 == points[("memo.ai.saved.tokens", (*base, label))]
    output = (("gen_ai.token.type", "output"), ("memo.ai.operation", "qa"), label)
    assert 150 == points[("memo.ai.saved.tokens", output)]
    money = (("memo.ai.operation", "qa"), label)
    assert points[("memo.ai.saved.cost", money)] == pytest.approx(3 * 200 / 1e6)
    assert "{token}" == data["memo.ai.saved.tokens"].unit
    await cache.aclose()


async def test_uninstrument_stops_reporting_and_instrumenting_again_reports_anew(
    otel: Telemetry, caplog: pytest.LogCaptureFixture
) -> None:
    """The SDK keeps an instrument's first callbacks: a second instrumentation of the
    same provider must report through them, without a duplicate-instrument warning."""
    cache = InMemoryCache(namespace="otel-again")
    await workload(cache)
    label = (("memo.cache.name", "otel-again/memory"),)
    first = otel.instrument(caches=[cache])
    assert 10 == otel.collect()[0][("memo.cache.hits", label)]
    first.uninstrument()
    first.uninstrument()  # twice is harmless
    assert not first.active
    assert ("memo.cache.hits", label) not in otel.collect()[0]
    with caplog.at_level(logging.WARNING, logger="opentelemetry"):
        second = otel.instrument(caches=[cache])
    assert [] == [r.getMessage() for r in caplog.records if r.name.startswith("opentelemetry")]
    assert 10 == otel.collect()[0][("memo.cache.hits", label)]
    # Two active instrumentations of one cache report it once.
    third = otel.instrument(caches=[cache])
    assert 10 == otel.collect()[0][("memo.cache.hits", label)]
    second.uninstrument()
    third.uninstrument()
    await cache.aclose()


async def test_with_spans_a_miss_is_one_compute_span_and_a_hit_is_none(
    otel: Telemetry,
) -> None:
    cache = InMemoryCache(namespace="otel-spans")
    with otel.instrument(caches=[cache], spans=True) as instrumentation:
        assert TRACING.tracer is instrumentation.tracer is not None
        price = await workload(cache)
        computed = otel.spans("memo.compute")
        # 5 misses and 2 failed computations; the 10 hits are not traced.
        assert 7 == len(computed)
        function = f"{price.__module__}.{price.__qualname__}"
        assert {function} == {s.attributes["code.function.name"] for s in computed if s.attributes}
        assert 2 == sum(1 for s in computed if not s.status.is_ok)
        otel.exporter.clear()
        await price(1)  # a hit
        assert [] == otel.spans()
    assert TRACING.tracer is None
    await price(99)  # a miss, with spans off again
    assert [] == otel.spans()
    await cache.aclose()


async def test_with_spans_redis_commands_are_database_client_spans(
    redis_server: RedisServer, otel: Telemetry
) -> None:
    cache = GenericRedisCache(redis_server.url, namespace="otel-redis-spans")
    try:
        with otel.instrument(caches=[cache], spans=True):
            await workload(cache)
        commands = [s for s in otel.spans() if s.name.startswith("Redis ")]
        assert commands, [s.name for s in otel.spans()]
        for span in commands:
            assert span.attributes is not None
            assert "redis" == span.attributes["db.system.name"]
            assert span.name == f"Redis {span.attributes['db.operation.name']}"
        assert 7 == len(otel.spans("memo.compute"))
    finally:
        await cache.aclose()


async def test_without_spans_nothing_is_traced(otel: Telemetry) -> None:
    cache = InMemoryCache(namespace="otel-quiet")
    with otel.instrument(caches=[cache]) as instrumentation:
        assert instrumentation.tracer is None and TRACING.tracer is None
        await workload(cache)
    assert [] == otel.spans()
    await cache.aclose()


def test_nested_instrumentations_leave_the_newest_tracer_installed(otel: Telemetry) -> None:
    """Undone in any order, the tracer installed is always the newest active one's."""
    first = otel.instrument(caches=[], spans=True)
    second = otel.instrument(caches=[], spans=True)
    assert TRACING.tracer is second.tracer
    first.uninstrument()
    assert TRACING.tracer is second.tracer
    second.uninstrument()
    assert TRACING.tracer is None


def _run(code: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    return out.stdout


@pytest.mark.slow
def test_without_opentelemetry_the_error_names_the_extra() -> None:
    code = (
        "import sys; sys.modules['opentelemetry'] = None\n"
        "try:\n    import memo.integrations.otel\n"
        "except ImportError as e:\n    print(e)\n"
    )
    assert 'pip install "memo[otel]"' in _run(code)


@pytest.mark.slow
def test_using_memo_without_the_integration_loads_no_opentelemetry() -> None:
    code = (
        "import asyncio, sys\n"
        "from memo import cached\n"
        "@cached(ttl=60)\n"
        "async def double(x: int) -> int:\n    return 2 * x\n"
        "asyncio.run(double(2))\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n"
    )
    assert "[]" == _run(code).strip()
