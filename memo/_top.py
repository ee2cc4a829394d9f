"""``memo top``: a live terminal view of the fleet (or of this process, without Redis).

Every refresh reads each process's latest record (``memo._fleet``) and shows the
fleet's hit ratio, operations a second (from the change in its counters since the last
refresh), errors, Redis latency percentiles (the worst process's), one row per decorated
function summed over the processes, and the keys read most often from Redis. The records
are written every ``stats_interval`` seconds, so the figures move at that pace.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from memo._fleet import read_fleet, sum_rows
from memo.backends.base import SharedHashes
from memo.cache import Cache
from memo.exceptions import BackendError

__all__ = ["run_top"]

_FUNCTION_COUNTS = ("hits", "misses", "coalesced", "errors", "bypassed", "computations")


def _functions(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per decorated function, counters summed over the processes that run it."""
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        for f in row.get("functions") or ():
            into = merged.setdefault(
                (f.get("namespace") or "", f.get("function") or ""),
                dict.fromkeys(_FUNCTION_COUNTS, 0),
            )
            for name in _FUNCTION_COUNTS:
                into[name] += int(f.get(name) or 0)
    out = []
    for (namespace, function), counts in sorted(merged.items()):
        reads = counts["hits"] + counts["misses"]
        out.append(
            {"namespace": namespace, "function": function, **counts}
            | {"hit_ratio": counts["hits"] / reads if reads else 0.0}
        )
    return out


async def _snapshot(cache: Cache) -> list[dict[str, Any]]:
    remote = cache.remote_server()
    if isinstance(remote, SharedHashes):
        fleet = await read_fleet(remote.hashes, cache.prefix)
        return [r for r in fleet["processes"] if not r["gone"]]
    record = cache.reporting.record()  # no server: this process is the whole view
    return [record]


def _render(rows: list[dict[str, Any]], rate: float | None, where: str) -> Any:
    totals = sum_rows([r.get("stats") or {} for r in rows])
    p50 = [r["latency"]["p50_ms"] for r in rows if (r.get("latency") or {}).get("p50_ms")]
    p95 = [r["latency"]["p95_ms"] for r in rows if (r.get("latency") or {}).get("p95_ms")]
    head = (
        f"[b]memo top[/b]  {escape(where)}  processes {len(rows)}  "
        f"hit ratio [b]{totals['hit_ratio']:.1%}[/b]  "
        f"ops/s {'…' if rate is None else f'{rate:,.0f}'}  errors {totals['errors']}  "
        f"redis p50 {max(p50) if p50 else '-'} ms, p95 {max(p95) if p95 else '-'} ms"
    )
    functions = Table(title="decorated functions", expand=True)
    for column in ("namespace", "function", "hits", "misses", "hit ratio", "errors"):
        functions.add_column(
            column, justify="left" if column in ("namespace", "function") else "right"
        )
    for f in _functions(rows):
        functions.add_row(  # names and keys are data, never markup: "[/q]" is a key
            escape(str(f["namespace"] or "-")),
            escape(str(f["function"])),
            str(f["hits"]),
            str(f["misses"]),
            f"{f['hit_ratio']:.1%}",
            str(f["errors"]),
        )
    keys = Table(title="hottest keys read from Redis (sampled)", expand=True)
    keys.add_column("key")
    keys.add_column("reads", justify="right")
    hot: dict[str, int] = {}
    for row in rows:
        for key, n in row.get("hot_keys") or ():
            hot[key] = hot.get(key, 0) + int(n)
    for key, n in sorted(hot.items(), key=lambda kv: -kv[1])[:10]:
        keys.add_row(escape(str(key)), str(n))
    return Group(head, functions, keys)


async def run_top(cache: Cache, out: TextIO, *, iterations: int | None, interval: float) -> int:
    """Refresh the view every ``interval`` seconds, ``iterations`` times (None: until
    Ctrl-C). Returns the exit code."""
    console = Console(file=out)
    where = cache.prefix.rstrip(":")
    previous: tuple[float, int] | None = None
    done = 0
    try:
        with Live(console=console, auto_refresh=False, transient=False) as live:
            while iterations is None or done < iterations:
                try:
                    rows = await _snapshot(cache)
                except BackendError as exc:  # Redis gone for now: say so, try again
                    live.update(f"memo top  {escape(where)}: {escape(str(exc))}", refresh=True)
                    done += 1
                    if iterations is None or done < iterations:
                        await asyncio.sleep(interval)
                    continue
                now, ops = time.monotonic(), sum_rows([r.get("stats") or {} for r in rows])
                total = int(ops["total_operations"])
                rate = (
                    None
                    if previous is None
                    else (total - previous[1]) / max(now - previous[0], 1e-9)
                )
                previous = (now, total)
                live.update(_render(rows, rate, where), refresh=True)
                done += 1
                if iterations is None or done < iterations:
                    await asyncio.sleep(interval)
    except asyncio.CancelledError:  # Ctrl-C: asyncio.run cancels the command
        pass
    return 0
