"""Text views of a cache's figures, shared by ``memo stats`` and ``memo top``."""

from __future__ import annotations

from typing import Any

__all__ = ["SAVINGS_SECTIONS", "fleet_lines", "savings_lines"]


def fleet_lines(fleet: dict[str, Any]) -> list[str]:
    """Totals, then one row per process, as ``memo stats`` prints the fleet."""
    t = fleet["totals"]
    rows = fleet["processes"]
    lines = [
        f"fleet: {len(rows)} process(es), {fleet['gone']} gone; hits={t['hits']} "
        f"misses={t['misses']} hit_ratio={t['hit_ratio']:.3f} errors={t['errors']}",
        f"  {'host:pid':<28} {'cache':<12} {'hits':>9} {'misses':>9} {'ratio':>6} "
        f"{'errors':>7} {'p50 ms':>7} {'p95 ms':>7}",
    ]
    for row in rows:
        s, lat = row.get("stats") or {}, row.get("latency") or {}
        where = f"{row.get('host')}:{row.get('pid')}"
        lines.append(
            f"  {where:<28} {row.get('cache')!s:<12} {s.get('hits', 0):>9} "
            f"{s.get('misses', 0):>9} {s.get('hit_ratio', 0.0):>6.3f} {s.get('errors', 0):>7} "
            f"{lat.get('p50_ms')!s:>7} {lat.get('p95_ms')!s:>7}" + ("  gone" * row["gone"])
        )
    return lines


#: The savings sections of a cache's stats, and how the text output names them.
SAVINGS_SECTIONS = {"ai_savings_fleet": "every process", "ai_savings": "this process"}


def savings_lines(whose: str, savings: dict[str, Any] | None) -> list[str]:
    """Tokens and money AI hits saved, in total and per operation (none: no lines)."""
    if not savings or not savings["by_operation"]:
        return []

    def money(cost: float | None) -> str:
        return "cost not priced" if cost is None else f"cost saved {cost:g}"

    lines = [
        f"ai savings ({whose}): {savings['tokens']} tokens ({savings['prompt_tokens']} "
        f"prompt, {savings['completion_tokens']} completion), {money(savings['cost'])}"
    ]
    for op, row in savings["by_operation"].items():
        lines.append(f"  {op}: {row['hits']} hits, {row['tokens']} tokens, {money(row['cost'])}")
    return lines
