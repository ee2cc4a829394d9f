"""``CachePerformanceMonitor``: thresholds over live cache figures, and the alerts they raise.

The monitor reads counters the caches keep anyway; it sends nothing to Redis and starts
no task, so ``alerts()`` is synchronous and cheap enough for a health endpoint or a
periodic log line. Without ``caches=`` it watches every cache of the process, including
caches built after it.

Thresholds (the keys ``configure_thresholds`` takes):

``memory_warning`` / ``memory_critical``
    bytes held by a cache's memory tier (values as stored, keys and a per-entry
    overhead included). Only the stronger of the two is raised.
``hit_ratio_warning``
    raised when hits / (hits + misses) falls below it, once a cache has served at least
    ``hit_ratio_min_reads`` reads (a cold cache is not an incident).
``operation_slow``
    seconds; raised when the 95th percentile of a cache's recent Redis operations (the
    last 512, failures and timeouts included) exceeds it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from memo._cache_core import CacheCore, live_caches, resolve_cache
from memo.exceptions import ConfigError

__all__ = ["DEFAULT_THRESHOLDS", "Alert", "CachePerformanceMonitor"]

#: Thresholds in force until configured otherwise.
DEFAULT_THRESHOLDS: Mapping[str, float] = {
    "memory_warning": 50_000_000,
    "memory_critical": 100_000_000,
    "hit_ratio_warning": 0.6,
    "hit_ratio_min_reads": 100,
    "operation_slow": 0.1,
}

_UNITS = {
    "memory_warning": "bytes",
    "memory_critical": "bytes",
    "hit_ratio_warning": "a fraction from 0 to 1",
    "hit_ratio_min_reads": "reads",
    "operation_slow": "seconds",
}
# Byte and read counts: a fraction here is a mistake (0.8 meant as "80% full"), not a
# threshold of less than one byte.
_WHOLE_NUMBERS = frozenset({"memory_warning", "memory_critical", "hit_ratio_min_reads"})


@dataclass(frozen=True)
class Alert:
    """One threshold currently crossed by one cache."""

    threshold: str  # the threshold's name, e.g. "memory_critical"
    level: str  # "warning" or "critical"
    cache: str  # the cache's repr (no secrets: URLs are masked)
    value: float  # what was measured
    limit: float  # the threshold it crossed
    message: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class CachePerformanceMonitor:
    """Checks caches against thresholds; ``alerts()`` lists the ones crossed now.

    Args:
        caches: the caches to watch; None watches every cache of the process.
    """

    def __init__(self, caches: Iterable[Any] | None = None) -> None:
        self._caches = None if caches is None else [resolve_cache(c, "caches") for c in caches]
        self._thresholds = dict(DEFAULT_THRESHOLDS)

    @property
    def thresholds(self) -> dict[str, float]:
        """The thresholds in force (a copy)."""
        return dict(self._thresholds)

    def configure_thresholds(self, thresholds: Mapping[str, float]) -> None:
        """Change some thresholds; the others keep their values.

        Raises ConfigError naming an unknown key or a bad value; nothing changes then.
        """
        if not isinstance(thresholds, Mapping):
            raise ConfigError(
                f"thresholds={thresholds!r}: pass a dict such as {{'hit_ratio_warning': 0.6}}"
            )
        merged = dict(self._thresholds)
        for name, value in thresholds.items():
            if name not in DEFAULT_THRESHOLDS:
                raise ConfigError(
                    f"thresholds: unknown key {name!r}; known: {', '.join(DEFAULT_THRESHOLDS)}"
                )
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not ok or not math.isfinite(value) or value <= 0:
                raise ConfigError(f"thresholds[{name!r}]={value!r}: {_UNITS[name]}, above 0")
            if name in _WHOLE_NUMBERS and value != int(value):
                raise ConfigError(
                    f"thresholds[{name!r}]={value!r}: {_UNITS[name]}, a whole number; "
                    + (
                        "memory thresholds are byte counts such as 50_000_000 (50 MB), "
                        "not fractions of the memory tier"
                        if name.startswith("memory_")
                        else "pass an int such as 100"
                    )
                )
            merged[name] = value
        if merged["hit_ratio_warning"] > 1:
            raise ConfigError(
                f"thresholds['hit_ratio_warning']={merged['hit_ratio_warning']!r}: "
                f"a fraction from 0 to 1"
            )
        if merged["memory_critical"] < merged["memory_warning"]:
            raise ConfigError(
                f"thresholds: memory_critical ({merged['memory_critical']!r}) is below "
                f"memory_warning ({merged['memory_warning']!r}); raise it or lower the warning"
            )
        self._thresholds = merged

    def caches(self) -> list[CacheCore]:
        """The open caches watched now."""
        caches = live_caches() if self._caches is None else self._caches
        return [c for c in caches if not c.closed]

    def alerts(self) -> list[Alert]:
        """Every threshold crossed now, per cache (an empty list when all is well)."""
        raised: list[Alert] = []
        for cache in self.caches():
            raised.extend(self._check(cache))
        return raised

    def savings(self) -> dict[str, Any]:
        """What AI hits saved in this process, over the watched caches: tokens and
        money (None where a model has no price) in total and per operation."""
        rows: dict[str, dict[str, Any]] = {}
        for cache in self.caches():
            summary = cache.savings.summary(cache.ai.model_prices)
            for op, row in summary["by_operation"].items():
                into = rows.setdefault(op, dict.fromkeys(row, 0))
                for field, value in row.items():
                    none = value is None or into[field] is None
                    into[field] = None if none else into[field] + value
        costs = [row["cost"] for row in rows.values()]
        return {
            "tokens": sum(row["tokens"] for row in rows.values()),
            "cost": None if None in costs else round(sum(costs), 6),
            "by_operation": rows,
        }

    def _check(self, cache: CacheCore) -> list[Alert]:
        t = self._thresholds
        name = repr(cache)
        found: list[Alert] = []
        used = cache.memory_usage()["bytes"]
        level = next((lv for lv in ("critical", "warning") if used >= t[f"memory_{lv}"]), None)
        if level is not None:  # only the stronger of the two
            limit = t[f"memory_{level}"]
            found.append(
                Alert(f"memory_{level}", level, name, used, limit,
                      f"{name}: memory tier holds {used:,} bytes, at or above "
                      f"memory_{level} {limit:,.0f}")
            )  # fmt: skip
        stats = cache.stats
        reads = stats.hits + stats.misses
        if reads >= t["hit_ratio_min_reads"] and stats.hit_ratio < t["hit_ratio_warning"]:
            found.append(
                Alert("hit_ratio_warning", "warning", name, stats.hit_ratio,
                      t["hit_ratio_warning"],
                      f"{name}: hit ratio {stats.hit_ratio:.1%} over {reads:,} reads is "
                      f"below hit_ratio_warning {t['hit_ratio_warning']:.0%}")
            )  # fmt: skip
        remote = cache.remote_server()
        p95 = remote.latency.percentile(0.95) if remote is not None else None
        if p95 is not None and p95 > t["operation_slow"]:
            found.append(
                Alert("operation_slow", "warning", name, p95, t["operation_slow"],
                      f"{name}: 95% of recent Redis operations took up to {p95 * 1000:.1f} ms, "
                      f"above operation_slow {t['operation_slow'] * 1000:.0f} ms")
            )  # fmt: skip
        return found

    def __repr__(self) -> str:
        watched = "every cache" if self._caches is None else f"{len(self._caches)} cache(s)"
        return f"CachePerformanceMonitor({watched}, thresholds={self._thresholds})"
