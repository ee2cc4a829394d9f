"""Counters kept by caches and decorated functions."""

from __future__ import annotations

import math
from bisect import bisect_left
from dataclasses import dataclass, fields
from typing import Any

#: Backend operations a latency window remembers.
LATENCY_SAMPLES = 512
#: Upper bounds (seconds) of the latency histogram's buckets, as Prometheus reads them:
#: from a fast local round trip to the default operation deadline and past it.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

__all__ = ["LATENCY_BUCKETS", "CacheStats", "FunctionStats", "LatencyWindow"]


@dataclass(slots=True)
class CacheStats:
    """Operation counters of one cache. Plain ints: incrementing one costs nanoseconds."""

    hits: int = 0
    misses: int = 0
    #: Callers of a cold key who joined a computation already running (neither hits
    #: nor misses: they waited for another caller's miss).
    coalesced: int = 0
    memory_hits: int = 0
    redis_hits: int = 0
    sets: int = 0
    deletes: int = 0
    errors: int = 0
    bypassed: int = 0
    decode_errors: int = 0
    encode_errors: int = 0

    @property
    def hit_ratio(self) -> float:
        """Hits over reads (hits + misses), 0.0 before the first read."""
        reads = self.hits + self.misses
        return self.hits / reads if reads else 0.0

    @property
    def total_operations(self) -> int:
        """Reads (coalesced ones included), writes and deletes served."""
        return self.hits + self.misses + self.coalesced + self.sets + self.deletes

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        out["hit_ratio"] = self.hit_ratio
        out["total_operations"] = self.total_operations
        return out

    def reset(self) -> None:
        for f in fields(self):
            setattr(self, f.name, 0)


@dataclass(slots=True)
class FunctionStats:
    """Counters of one decorated function."""

    hits: int = 0
    misses: int = 0
    coalesced: int = 0
    errors: int = 0
    bypassed: int = 0
    stale_served: int = 0
    #: Non-deterministic AI requests run uncached (``deterministic_only=True``).
    nondeterministic: int = 0
    refreshes: int = 0
    computations: int = 0
    compute_seconds: float = 0.0

    @property
    def hit_ratio(self) -> float:
        reads = self.hits + self.misses
        return self.hits / reads if reads else 0.0

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        out["hit_ratio"] = self.hit_ratio
        return out

    def reset(self) -> None:
        for f in fields(self):
            setattr(self, f.name, 0.0 if f.name == "compute_seconds" else 0)


class LatencyWindow:
    """Durations of the most recent backend operations (a ring of fixed size).

    Recording is an index store, cheap beside a network round trip; percentiles are
    computed only when asked for (stats, the performance monitor). Every operation since
    creation is also counted in a histogram (``buckets``: per ``LATENCY_BUCKETS`` bound,
    then one for slower ones) with its total time (``sum``), as Prometheus exports it.
    """

    __slots__ = ("_next", "_samples", "_size", "buckets", "sum", "total")

    def __init__(self, size: int = LATENCY_SAMPLES) -> None:
        self._size = size
        self._samples: list[float] = []
        self._next = 0
        self.total = 0  # operations recorded since creation
        self.sum = 0.0
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)

    def record(self, seconds: float) -> None:
        if len(self._samples) < self._size:
            self._samples.append(seconds)
        else:
            self._samples[self._next] = seconds
            self._next = (self._next + 1) % self._size
        self.total += 1
        self.sum += seconds
        self.buckets[bisect_left(LATENCY_BUCKETS, seconds)] += 1

    def percentile(self, q: float) -> float | None:
        """The ``q`` quantile (0-1) of the window in seconds; None when it is empty."""
        if not self._samples:
            return None
        ordered = sorted(self._samples)
        rank = math.ceil(q * len(ordered))  # nearest rank: p95 of 100 is the 95th value
        return ordered[min(len(ordered), max(rank, 1)) - 1]

    def summary(self) -> dict[str, Any]:
        """samples, p50_ms, p95_ms and max_ms of the window (None values when empty)."""

        def ms(value: float | None) -> float | None:
            return None if value is None else round(value * 1000, 3)

        return {
            "samples": len(self._samples),
            "p50_ms": ms(self.percentile(0.5)),
            "p95_ms": ms(self.percentile(0.95)),
            "max_ms": ms(max(self._samples) if self._samples else None),
        }
