"""Prometheus metrics for memo caches: ``pip install "memo[prometheus]"``.

::

    from prometheus_client import make_asgi_app
    from memo.integrations.prometheus import register

    register()                             # every cache of the process, now and later
    app.mount("/metrics", make_asgi_app())

The collector reads the counters caches keep anyway when Prometheus scrapes: a cached
call does no extra work for it. Names and labels follow Prometheus's conventions (base
units, ``_total`` counters, one aggregation level per metric family):

=========================================  ==========================================
``memo_cache_hits_total{cache}``            reads answered from the cache
``memo_cache_misses_total{cache}``          reads that found nothing
``memo_cache_tier_hits_total{cache,tier}``  hits by tier (``memory``, ``redis``)
``memo_cache_{coalesced,sets,deletes,errors,bypassed}_total{cache}``
``memo_function_calls_total{cache,function,result}``  per decorated function;
                                            result: hit, miss, coalesced, bypassed
``memo_function_errors_total{cache,function}``
``memo_function_compute_seconds_total{cache,function}``
``memo_redis_operation_seconds{cache}``     histogram of Redis operations
``memo_memory_entries{cache}``, ``memo_memory_bytes{cache}``  the memory tier now
``memo_ai_tokens_saved_total{cache,operation,kind}``  kind: prompt, completion
``memo_ai_cost_saved_total{cache,operation}``  in the price table's currency
=========================================  ==========================================

``cache`` is the cache's namespace and backend (``default/tiered``); two caches that
would share a label get ``#2``, ``#3`` … in the order they were built. ``function``
is the namespace given to the decorator, if any, and the function's module and
qualified name.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Iterator

try:
    from prometheus_client import REGISTRY, CollectorRegistry
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
        Metric,
    )
    from prometheus_client.registry import Collector
except ImportError as exc:  # pragma: no cover - exercised in a subprocess
    raise ImportError(
        'memo.integrations.prometheus needs prometheus-client: pip install "memo[prometheus]"'
    ) from exc

from memo._cache_core import CacheCore, live_caches
from memo._metrics import FUNCTION_RESULTS, cache_labels, functions_by_label
from memo.stats import LATENCY_BUCKETS, LatencyWindow

__all__ = ["MemoCollector", "register"]

_CACHE_COUNTERS = ("coalesced", "sets", "deletes", "errors", "bypassed")


class MemoCollector(Collector):
    """Metrics of memo caches, read at each scrape.

    Args:
        caches: the caches to report; None (default) reports every cache of the process,
            including those built after the collector.
    """

    def __init__(self, caches: Iterable[CacheCore] | None = None) -> None:
        self._caches = None if caches is None else list(caches)

    def _watched(self) -> list[CacheCore]:
        return live_caches() if self._caches is None else self._caches

    def collect(self) -> Iterator[Metric]:
        c = CounterMetricFamily
        hits = c("memo_cache_hits", "Reads answered from the cache.", labels=["cache"])
        misses = c("memo_cache_misses", "Reads that found nothing.", labels=["cache"])
        tiers = c("memo_cache_tier_hits", "Hits by tier.", labels=["cache", "tier"])
        others = {
            name: c(f"memo_cache_{name}", f"Cache operations: {name}.", labels=["cache"])
            for name in _CACHE_COUNTERS
        }
        calls = c(
            "memo_function_calls",
            "Calls of decorated functions, by result.",
            labels=["cache", "function", "result"],
        )
        errors = c(
            "memo_function_errors",
            "Decorated computations that raised.",
            labels=["cache", "function"],
        )
        compute = c(
            "memo_function_compute_seconds",
            "Time spent computing decorated functions.",
            labels=["cache", "function"],
        )
        latency = HistogramMetricFamily(
            "memo_redis_operation_seconds", "Redis operations, failures included.", labels=["cache"]
        )
        entries = GaugeMetricFamily(
            "memo_memory_entries", "Entries in the memory tier.", labels=["cache"]
        )
        size = GaugeMetricFamily("memo_memory_bytes", "Bytes in the memory tier.", labels=["cache"])
        tokens = c(
            "memo_ai_tokens_saved",
            "Tokens that AI cache hits saved.",
            labels=["cache", "operation", "kind"],
        )
        cost = c(
            "memo_ai_cost_saved",
            "Money that AI cache hits saved, in the price table's currency.",
            labels=["cache", "operation"],
        )
        for label, cache in cache_labels(self._watched()):
            stats = cache.stats
            hits.add_metric([label], stats.hits)
            misses.add_metric([label], stats.misses)
            tiers.add_metric([label, "memory"], stats.memory_hits)
            tiers.add_metric([label, "redis"], stats.redis_hits)
            for name, family in others.items():
                family.add_metric([label], getattr(stats, name))
            for function, row in functions_by_label(cache).items():
                for counter, result in FUNCTION_RESULTS.items():
                    calls.add_metric([label, function, result], row[counter])
                errors.add_metric([label, function], row["errors"])
                compute.add_metric([label, function], row["compute_seconds"])
            remote = cache.remote_server()
            window = getattr(remote, "latency", None)
            if isinstance(window, LatencyWindow):
                running, buckets = 0, []
                for bound, count in zip(LATENCY_BUCKETS, window.buckets, strict=False):
                    running += count
                    buckets.append((repr(bound), running))
                buckets.append(("+Inf", window.total))
                latency.add_metric([label], buckets, window.sum)
            usage = cache.memory_usage()
            entries.add_metric([label], usage["entries"])
            size.add_metric([label], usage["bytes"])
            saved = cache.savings.summary(cache.ai.model_prices)
            for operation, row in saved["by_operation"].items():
                tokens.add_metric([label, operation, "prompt"], row["prompt_tokens"])
                tokens.add_metric([label, operation, "completion"], row["completion_tokens"])
                if row["cost"] is not None:
                    cost.add_metric([label, operation], row["cost"])
        yield from (hits, misses, tiers, *others.values(), calls, errors, compute)
        yield from (latency, entries, size, tokens, cost)


# Weak keys, not id(): a freed registry's id is soon another registry's, which would then
# get the old collector back without it ever being registered there.
_REGISTERED: weakref.WeakKeyDictionary[CollectorRegistry, MemoCollector] = (
    weakref.WeakKeyDictionary()
)


def register(
    registry: CollectorRegistry | None = None, caches: Iterable[CacheCore] | None = None
) -> MemoCollector:
    """Register a :class:`MemoCollector` with ``registry`` (prometheus-client's default
    when None) and return it; registering again on the same registry returns the first."""
    target = REGISTRY if registry is None else registry
    found = _REGISTERED.get(target)
    if found is None:
        found = _REGISTERED[target] = MemoCollector(caches)
        target.register(found)
    return found
