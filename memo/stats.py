"""Counters kept by caches and decorated functions."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

__all__ = ["CacheStats", "FunctionStats"]


@dataclass(slots=True)
class CacheStats:
    """Operation counters of one cache. Plain ints: incrementing one costs nanoseconds."""

    hits: int = 0
    misses: int = 0
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
        """Reads, writes and deletes served."""
        return self.hits + self.misses + self.sets + self.deletes

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
    errors: int = 0
    bypassed: int = 0
    stale_served: int = 0
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
