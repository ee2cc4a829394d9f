"""The fleet's figures: every process's record (see ``memo._reporting``), read back.

A record older than ``GONE_AFTER`` of its own intervals belongs to a process that went
silent (killed, hung, or cut off from Redis): it is shown marked ``gone``. Older than
``DROP_AFTER`` intervals, it is dropped from the hash. A process that closes its cache
takes its record out at once.
"""

from __future__ import annotations

import contextlib
import json
import time
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


def sum_rows(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Counters summed over ``rows`` (each a ``CacheStats.as_dict()``), with hit_ratio."""
    totals: dict[str, Any] = {name: sum(int(r.get(name) or 0) for r in rows) for name in _SUMMED}
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
    now = time.time() if now is None else now
    rows: list[dict[str, Any]] = []
    dropped: list[str] = []
    for field, raw in fields.items():
        try:
            record = json.loads(raw)
            age = now - float(record["at"])
            interval = float(record.get("interval") or 0) or 1.0
        except (ValueError, KeyError, TypeError):
            dropped.append(field)  # not a record memo wrote: unreadable, so dropped
            continue
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
