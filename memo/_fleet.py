"""The fleet's figures: every process's record (see ``memo._reporting``), read back.

A record older than ``GONE_AFTER`` of its own intervals belongs to a process that went
silent (killed, hung, or cut off from Redis): it is shown marked ``gone``. Older than
``DROP_AFTER`` intervals, it is dropped from the hash. A process that closes its cache
takes its record out at once.
"""

from __future__ import annotations

import contextlib
import json
import math
from typing import Any

from memo._reporting import fleet_key
from memo.backends.base import HashStore
from memo.exceptions import BackendError

__all__ = ["DROP_AFTER", "GONE_AFTER", "read_fleet", "sum_rows"]

GONE_AFTER = 3
DROP_AFTER = 10

#: Counters summed over processes (ratios are worked out again from the sums).
_SUMMED = (
    "hits",
    "misses",
    "coalesced",
    "memory_hits",
    "redis_hits",
    "sets",
    "deletes",
    "errors",
    "bypassed",
    "decode_errors",
    "encode_errors",
    "total_operations",
)


def _number(value: Any) -> bool:
    return type(value) in (int, float) and math.isfinite(value)


def _checked(raw: bytes) -> dict[str, Any] | None:
    """A fleet record as memo writes it, or None: whatever else is in the hash (junk,
    records of a future format) must not break the readers."""
    try:
        record = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(record, dict) or not _number(record.get("at")):
        return None
    stats, latency = record.get("stats"), record.get("latency")
    if not isinstance(stats, dict) or not all(_number(v) for v in stats.values()):
        return None
    if latency is not None and not isinstance(latency, dict):
        return None
    functions, hot = record.get("functions", []), record.get("hot_keys", [])
    if not isinstance(functions, list) or not all(isinstance(f, dict) for f in functions):
        return None
    if not isinstance(hot, list) or not isinstance(record.get("pid"), int):
        return None
    if not all(isinstance(p, list) and len(p) == 2 and _number(p[1]) for p in hot):
        return None
    interval: Any = record.get("interval")
    record["interval"] = float(interval) if _number(interval) and interval > 0 else 0.0
    return record


def sum_rows(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Counters summed over ``rows`` (each a ``CacheStats.as_dict()``), with hit_ratio."""
    totals: dict[str, Any] = {
        name: sum(int(r.get(name) or 0) if _number(r.get(name)) else 0 for r in rows)
        for name in _SUMMED
    }
    reads = totals["hits"] + totals["misses"]
    totals["hit_ratio"] = totals["hits"] / reads if reads else 0.0
    return totals


async def read_fleet(hashes: HashStore, prefix: str, *, now: float | None = None) -> dict[str, Any]:
    """Every process's record for the cache with ``prefix``, newest figures first by
    host and pid, with ``age`` (seconds) and ``gone``; and the totals over them.

    Raises:
        BackendError: the server could not be read.
    """
    key = fleet_key(prefix)
    fields = await hashes.read_fields(key)
    now = await hashes.server_time() if now is None else now  # the writers' clock too
    rows: list[dict[str, Any]] = []
    dropped: list[str] = []
    for field, raw in fields.items():
        record = _checked(raw)
        if record is None:
            dropped.append(field)  # not a record memo wrote: unreadable, so dropped
            continue
        age, interval = now - record["at"], record["interval"] or 1.0
        if age > DROP_AFTER * interval:
            dropped.append(field)
            continue
        record["age"] = round(max(age, 0.0), 3)
        record["gone"] = age > GONE_AFTER * interval
        rows.append(record)
    if dropped:
        with contextlib.suppress(BackendError):  # dropped by the next reader instead
            await hashes.drop_fields(key, dropped)
    rows.sort(key=lambda r: (str(r.get("host")), int(r.get("pid") or 0), str(r.get("cache"))))
    return {
        "processes": rows,
        "gone": sum(r["gone"] for r in rows),
        # Every row counts: a process marked gone served that traffic too.
        "totals": sum_rows([r.get("stats") or {} for r in rows]),
    }
