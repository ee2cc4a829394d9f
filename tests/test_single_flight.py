"""Single-flight: one computation per key, cancel-safe, re-entrant, invalidation-aware."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import memo
from memo import InMemoryCache, ai_cached, cached
from memo._eager import EAGER


async def test_a_thousand_concurrent_calls_of_a_cold_key_run_the_function_once(
    cache: InMemoryCache,
) -> None:
    runs = 0
    gate = asyncio.Event()

    @cached(ttl=60, cache=cache)
    async def load(user_id: int) -> dict[str, int]:
        nonlocal runs
        runs += 1
        await gate.wait()
        return {"id": user_id}

    tasks = [asyncio.create_task(load(7)) for _ in range(1000)]
    await asyncio.sleep(0)
    gate.set()
    results = await asyncio.gather(*tasks)

    assert runs == 1
    assert all(r == {"id": 7} for r in results)
    assert await load.peek(7) == {"id": 7}


async def test_joiners_get_independent_copies_of_a_shared_result(cache: InMemoryCache) -> None:
    gate = asyncio.Event()

    @cached(ttl=60, cache=cache)
    async def load(user_id: int) -> dict[str, list[int]]:
        await gate.wait()
        return {"items": [1, 2]}

    tasks = [asyncio.create_task(load(1)) for _ in range(3)]
    await asyncio.sleep(0)
    gate.set()
    first, second, third = await asyncio.gather(*tasks)
    first["items"].append(99)

    assert second["items"] == [1, 2]
    assert third["items"] == [1, 2]


async def test_cancelling_the_first_caller_leaves_the_others_with_the_value(
    cache: InMemoryCache,
) -> None:
    runs = 0
    gate = asyncio.Event()

    @cached(ttl=60, cache=cache)
    async def load(user_id: int) -> str:
        nonlocal runs
        runs += 1
        await gate.wait()
        return f"user-{user_id}"

    first = asyncio.create_task(load(1))
    await asyncio.sleep(0)
    others = [asyncio.create_task(load(1)) for _ in range(999)]
    await asyncio.sleep(0)
    first.cancel()
    await asyncio.sleep(0)
    gate.set()
    results = await asyncio.gather(*others)

    assert first.cancelled()
    assert results == ["user-1"] * 999
    assert runs == 1
    assert await load.peek(1) == "user-1"


async def test_cancelling_every_caller_cancels_the_computation_and_stores_nothing(
    cache: InMemoryCache,
) -> None:
    started = 0
    cancelled = 0
    gate = asyncio.Event()

    @cached(ttl=60, cache=cache)
    async def load(user_id: int) -> str:
        nonlocal started, cancelled
        started += 1
        try:
            await gate.wait()
        except asyncio.CancelledError:
            cancelled += 1
            raise
        return "value"

    callers = [asyncio.create_task(load(1)) for _ in range(10)]
    await asyncio.sleep(0)
    for task in callers:
        task.cancel()
    await asyncio.gather(*callers, return_exceptions=True)
    await asyncio.sleep(0)

    assert cancelled == 1
    assert memo.MISSING is await load.peek(1)

    gate.set()
    assert await load(1) == "value"
    assert started == 2


async def test_ai_cached_finishes_and_stores_work_every_caller_abandoned(
    cache: InMemoryCache,
) -> None:
    gate = asyncio.Event()
    finished = asyncio.Event()
    runs = 0

    class Summarizer:
        @ai_cached(operation="summarize", cache=cache)
        async def summarize(self, text: str, options: dict[str, int]) -> dict[str, str]:
            nonlocal runs
            runs += 1
            await gate.wait()
            finished.set()
            return {"summary": text[:5]}

    service = Summarizer()
    caller = asyncio.create_task(service.summarize("hello world", {"n": 1}))
    await asyncio.sleep(0)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    gate.set()
    await finished.wait()
    await asyncio.sleep(0)

    assert await service.summarize.peek("hello world", {"n": 1}) == {"summary": "hello"}
    assert await service.summarize("hello world", {"n": 1}) == {"summary": "hello"}
    assert runs == 1


async def test_an_exception_reaches_every_waiter_and_is_never_cached(
    cache: InMemoryCache,
) -> None:
    runs = 0
    gate = asyncio.Event()

    @cached(ttl=60, cache=cache)
    async def load(user_id: int) -> str:
        nonlocal runs
        runs += 1
        await gate.wait()
        if runs == 1:
            raise LookupError("db down")
        return "ok"

    tasks = [asyncio.create_task(load(1)) for _ in range(5)]
    await asyncio.sleep(0)
    gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)

    assert all(isinstance(r, LookupError) for r in results)
    assert memo.MISSING is await load.peek(1)
    assert await load(1) == "ok"
    assert runs == 2
    assert load.stats()["errors"] == 1


async def test_invalidating_during_a_computation_keeps_its_result_out_of_the_cache(
    cache: InMemoryCache,
) -> None:
    gate = asyncio.Event()
    started = asyncio.Event()
    version = 1

    @cached(ttl=60, cache=cache)
    async def load(user_id: int) -> int:
        seen = version
        started.set()
        await gate.wait()
        return seen

    in_flight = asyncio.create_task(load(1))
    await started.wait()
    version = 2
    await load.invalidate(1)
    gate.set()

    assert await in_flight == 1  # the caller still gets its result
    assert memo.MISSING is await load.peek(1)
    assert await load(1) == 2


async def test_an_explicit_set_during_a_computation_is_not_overwritten(
    cache: InMemoryCache,
) -> None:
    gate = asyncio.Event()

    @cached(ttl=60, cache=cache)
    async def load(user_id: int) -> str:
        await gate.wait()
        return "computed"

    in_flight = asyncio.create_task(load(1))
    await asyncio.sleep(0)
    await cache.set(load.key_for(1), "written")
    gate.set()
    await in_flight

    assert await load(1) == "written"


async def test_a_reentrant_call_on_the_same_key_does_not_deadlock(cache: InMemoryCache) -> None:
    @cached(ttl=60, cache=cache, ignore=("depth",))
    async def countdown(n: int, depth: int = 0) -> int:
        if depth < 3:
            # depth is not in the key, so this is the key being computed right now:
            # waiting for its own flight would hang forever.
            return 1 + await countdown(n, depth + 1)
        return 0

    assert await asyncio.wait_for(countdown(5), timeout=5) == 3
    assert await countdown.peek(5) == 3


async def test_flights_are_per_event_loop() -> None:
    shared = InMemoryCache()
    runs = 0

    @cached(ttl=60, cache=shared)
    async def load(x: int) -> int:
        nonlocal runs
        runs += 1
        await asyncio.sleep(0)
        return x

    def run_in_new_loop() -> int:
        return asyncio.run(load(3))

    loop = asyncio.get_running_loop()
    assert await loop.run_in_executor(None, run_in_new_loop) == 3
    assert await load(3) == 3
    assert runs == 1


@pytest.mark.parametrize("kind", ["tiered", "redis-only", "memory"])
async def test_a_thousand_cold_callers_share_one_computation_on_every_cache_kind(
    redis_server: Any, kind: str
) -> None:
    """Ten runs in a row: a caller whose read of the cold key returns after the first
    computation finished must not start a second one."""
    if kind == "memory":
        cache: memo.Cache = InMemoryCache()
    else:
        cache = memo.GenericRedisCache(redis_server.url, enable_memory_cache=kind == "tiered")
        await cache.connect()
    for run in range(10):
        runs = 0

        @cached(ttl=60, cache=cache, namespace=f"run{run}")
        async def load(user_id: int) -> dict[str, int]:
            nonlocal runs
            runs += 1
            await asyncio.sleep(0)
            return {"id": user_id}

        results = await asyncio.gather(*(load(7) for _ in range(1000)))
        assert all(r == {"id": 7} for r in results)
        assert (run, 1) == (run, runs)
    await cache.aclose()


async def test_a_thousand_cold_callers_on_a_tiered_cache_share_their_reads(
    redis_server: Any,
) -> None:
    cache = memo.GenericRedisCache(redis_server.url)
    await cache.connect()

    @cached(ttl=60, cache=cache)
    async def load(user_id: int) -> int:
        await asyncio.sleep(0)
        return user_id

    before = redis_server.commandstats()
    assert [7] * 1000 == await asyncio.gather(*(load(7) for _ in range(1000)))
    after = redis_server.commandstats()
    reads = after.get("get", 0) - before.get("get", 0)
    # The first reader goes alone; the other 999 wait for it and share one pipeline;
    # a caller that raced the end of the computation may read once more.
    assert 2 <= reads <= 4
    await cache.aclose()


async def test_a_caller_arriving_while_an_abandoned_computation_winds_down_computes_anew() -> None:
    """The last waiter left, so the computation is cancelled; its cleanup still awaits.
    A caller arriving then starts a new computation instead of inheriting the
    cancellation (which nobody asked of it)."""
    import asyncio

    from memo import InMemoryCache, cached

    cleanup = asyncio.Event()
    calls = 0

    @cached(ttl=60, cache=InMemoryCache())
    async def slow(x: int) -> int:
        nonlocal calls
        calls += 1
        try:
            await asyncio.sleep(10 if calls == 1 else 0)
            return x
        finally:
            if calls == 1:
                await cleanup.wait()

    first = asyncio.create_task(slow(1))
    await asyncio.sleep(0.01)
    first.cancel()
    await asyncio.sleep(0)
    second = asyncio.create_task(slow(1))
    await asyncio.sleep(0)
    cleanup.set()
    assert await second == 1
    assert calls == 2


async def test_a_miss_of_a_function_that_never_waits_takes_no_turn_of_the_loop(
    cache: InMemoryCache,
) -> None:
    # The computation's first step runs at once (memo._eager) and ends it: the caller
    # has its value before anything else runs. (Through a task started on the next
    # turn it took two turns; through a shield and done callbacks, three.)
    @cached(ttl=60, cache=cache)
    async def double(x: int) -> int:
        return 2 * x

    turns = 0
    loop = asyncio.get_running_loop()

    def tick() -> None:
        nonlocal turns, handle
        turns += 1
        handle = loop.call_soon(tick)

    handle = loop.call_soon(tick)
    for x in range(5):
        before = turns
        assert 2 * x == await double(x)
        assert (0 if EAGER else 2) == turns - before
    assert 5 == double.stats()["misses"]
    handle.cancel()


async def test_a_computation_cancelled_before_it_started_ends_its_callers_and_its_flight(
    cache: InMemoryCache,
) -> None:
    # Flights not started eagerly (background refreshes, streams) start on the next
    # turn: a cancellation before then never reaches their coroutine.
    flights = cache.flights
    started = False

    async def work(flight: object) -> tuple[int, None]:
        nonlocal started
        started = True
        return 1, None

    flight = flights.start("k", work)
    waiter = flights.waiter(flight)
    flight.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert not started
    assert flights.running("k") is None
    assert 0 == flights.in_flight
    again, joined = flights.join_or_start("k", work)
    assert not joined
    assert EAGER == again.settled  # the next caller computes afresh
    assert (1, None) == (again.outcome() if EAGER else await flights.waiter(again))
