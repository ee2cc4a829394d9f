"""memo in one screen: decorate async functions, call them twice, look at the stats.

Run it with ``python examples/quickstart.py``; it needs no server (the default cache
lives in this process's memory).
"""

from __future__ import annotations

import asyncio
import time

import memo
from memo import ai_cached, cached


@cached(ttl=300)
async def get_user(user_id: int) -> dict[str, object]:
    await asyncio.sleep(0.05)  # stands in for a database query
    return {"id": user_id, "name": f"user-{user_id}", "roles": ["reader"]}


class Summarizer:
    """An AI service: the key is built from the operation, the text and the options."""

    @ai_cached(operation="summarize", ttl=3600)
    async def summarize(self, text: str, options: dict[str, object]) -> dict[str, str]:
        await asyncio.sleep(0.2)  # stands in for a model call
        return {"summary": text[:40] + "…"}


async def timed(label: str, call: object) -> None:
    started = time.perf_counter()
    result = await call  # type: ignore[misc]
    elapsed_ms = (time.perf_counter() - started) * 1000
    print(f"{label:<38} {elapsed_ms:8.3f} ms  {result}")


async def main() -> None:
    await timed("get_user(42)      miss, computes", get_user(42))
    await timed("get_user(42)      hit", get_user(42))
    await timed("get_user(user_id=42) same key, hit", get_user(user_id=42))

    # A thousand concurrent callers of a cold key share one computation.
    before = get_user.stats()["computations"]
    started = time.perf_counter()
    results = await asyncio.gather(*(get_user(7) for _ in range(1000)))
    elapsed_ms = (time.perf_counter() - started) * 1000
    runs = get_user.stats()["computations"] - before
    print(
        f"{'1000 concurrent get_user(7)':<38} {elapsed_ms:8.3f} ms  {len(results)} results, "
        f"{runs} computation(s)"
    )

    service = Summarizer()
    text = "memo caches AI calls by operation, text and normalized options. " * 20
    await timed("summarize(...)    miss", service.summarize(text, {"max_length": 100}))
    await timed(
        "summarize(...)    hit (100.0 == 100)",
        service.summarize(text, {"max_length": 100.0, "style": None}),
    )

    print()
    print("key of get_user(42):      ", get_user.key_for(42))
    print("get_user stats:           ", get_user.stats())
    stats = await memo.default_cache().get_cache_stats()
    print(
        f"default cache: hits={stats['hits']} misses={stats['misses']} "
        f"hit_ratio={stats['hit_ratio']:.2%} entries={stats['memory_usage']['entries']}"
    )

    await get_user.invalidate(42)
    await timed("get_user(42)      after invalidate", get_user(42))


if __name__ == "__main__":
    asyncio.run(main())
