"""How metric exporters name caches and functions: one rule for every exporter
(Prometheus, OpenTelemetry), kept free of their packages so each extra installs alone."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from memo._cache_core import CacheCore

__all__ = ["FUNCTION_RESULTS", "cache_labels", "functions_by_label"]

#: FunctionStats counter -> the ``result`` a call counts as.
FUNCTION_RESULTS = {
    "hits": "hit",
    "misses": "miss",
    "coalesced": "coalesced",
    "bypassed": "bypassed",
}
_SUMMED = (*FUNCTION_RESULTS, "errors", "compute_seconds")


def cache_labels(caches: Iterable[CacheCore]) -> list[tuple[str, CacheCore]]:
    """Each open cache with its label, its namespace and backend (``default/tiered``);
    caches that would share one get ``#2``, ``#3`` … in the order given."""
    seen: dict[str, int] = {}
    out = []
    for cache in caches:
        if cache.closed:
            continue
        label = f"{cache.namespace}/{cache.backend.name}"
        seen[label] = seen.get(label, 0) + 1
        out.append((label if seen[label] == 1 else f"{label}#{seen[label]}", cache))
    return out


def functions_by_label(cache: CacheCore) -> dict[str, dict[str, Any]]:
    """The cache's decorated functions by label (the decorator's namespace, if any, and
    the module and qualified name), their counters summed: two versions of one function
    (``version=``) are one series, as exporters refuse two with the same labels."""
    merged: dict[str, dict[str, Any]] = {}
    for row in cache.functions():
        name = f"{row['namespace']}:{row['function']}" if row["namespace"] else row["function"]
        into = merged.setdefault(name, dict.fromkeys(_SUMMED, 0))
        for field in _SUMMED:
            into[field] += row[field]
    return merged
