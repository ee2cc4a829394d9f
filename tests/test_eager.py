"""Eager task starts: the first step runs at once, as the task that goes on running it."""

from __future__ import annotations

import asyncio
import contextvars
import sys
import threading
from typing import Any

import pytest

from memo import InMemoryCache, cached
from memo._eager import EAGER, _backlog_of, start_eagerly

pytestmark = pytest.mark.skipif(not EAGER, reason="tasks start eagerly from Python 3.11")

_seen: contextvars.ContextVar[str] = contextvars.ContextVar("seen", default="caller's")


async def test_the_first_step_runs_before_start_returns_and_the_task_ends_with_its_result() -> None:
    ran: list[str] = []

    async def compute() -> int:
        ran.append("step")
        return 42

    task = start_eagerly(asyncio.get_running_loop(), compute())
    assert ["step"] == ran
    assert 42 == await task


async def test_an_error_of_the_first_step_ends_the_task_with_it() -> None:
    async def compute() -> int:
        raise ValueError("boom")

    task = start_eagerly(asyncio.get_running_loop(), compute())
    with pytest.raises(ValueError, match="boom"):
        await task


async def test_the_task_is_current_in_every_step_and_the_caller_again_after_the_first() -> None:
    caller = asyncio.current_task()
    seen: list[asyncio.Task[object] | None] = []
    gate = asyncio.Event()

    async def compute() -> str:
        seen.append(asyncio.current_task())
        await gate.wait()
        seen.append(asyncio.current_task())
        return "done"

    task = start_eagerly(asyncio.get_running_loop(), compute())
    assert caller is asyncio.current_task()
    gate.set()
    assert "done" == await task
    assert [task, task] == seen
    assert caller not in seen


async def test_context_set_in_the_first_step_stays_with_the_task() -> None:
    gate = asyncio.Event()

    async def compute() -> str:
        _seen.set("task's")
        await gate.wait()
        return _seen.get()

    task = start_eagerly(asyncio.get_running_loop(), compute())
    assert "caller's" == _seen.get()
    gate.set()
    assert "task's" == await task


async def test_a_timeout_entered_in_the_first_step_cancels_the_task_not_its_caller() -> None:
    loop = asyncio.get_running_loop()

    async def compute() -> str:
        async with asyncio.timeout_at(loop.time()):  # already due: fires on the next turn
            await asyncio.Event().wait()
        return "unreachable"

    task = start_eagerly(loop, compute())
    for _ in range(3):  # the timeout fires meanwhile: at the task, not at this caller
        await asyncio.sleep(0)
    with pytest.raises(TimeoutError):
        await task
    assert 0 == asyncio.current_task().cancelling()  # type: ignore[union-attr]


async def test_a_task_cancelled_before_its_next_step_cancels_what_the_first_step_awaits() -> None:
    events: list[str] = []
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def compute() -> None:
        try:
            await never
        except asyncio.CancelledError:
            events.append("cancelled")
            raise
        finally:
            events.append("cleaned up")

    task = start_eagerly(asyncio.get_running_loop(), compute())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()
    assert never.cancelled()
    assert ["cancelled", "cleaned up"] == events


async def test_a_loop_with_a_task_factory_of_its_own_starts_the_task_as_it_decides() -> None:
    loop = asyncio.get_running_loop()
    made: list[object] = []

    def factory(loop: asyncio.AbstractEventLoop, coro: object, **kwargs: object) -> object:
        made.append(coro)
        return asyncio.Task(coro, loop=loop, **kwargs)  # type: ignore[arg-type]

    ran: list[str] = []

    async def compute() -> int:
        ran.append("step")
        return 1

    loop.set_task_factory(factory)  # type: ignore[arg-type]
    try:
        task = start_eagerly(loop, compute())
        assert [] == ran  # the factory's task starts on the next turn
        assert 1 == await task
        assert 1 == len(made)
    finally:
        loop.set_task_factory(None)


async def test_a_cached_function_that_enters_a_timeout_before_waiting_times_out_itself(
    cache: InMemoryCache,
) -> None:
    loop = asyncio.get_running_loop()

    @cached(ttl=60, cache=cache)
    async def slow(x: int) -> int:
        async with asyncio.timeout_at(loop.time()):
            await asyncio.Event().wait()
        return x

    with pytest.raises(TimeoutError):
        await slow(1)
    assert 0 == asyncio.current_task().cancelling()  # type: ignore[union-attr]
    assert 1 == slow.stats()["errors"]


async def test_a_cached_function_sees_its_own_task_and_its_callers_join_it(
    cache: InMemoryCache,
) -> None:
    gate = asyncio.Event()
    tasks: list[asyncio.Task[object] | None] = []

    @cached(ttl=60, cache=cache)
    async def load(x: int) -> int:
        tasks.append(asyncio.current_task())
        await gate.wait()
        return x

    callers = [asyncio.create_task(load(3)) for _ in range(3)]
    await asyncio.sleep(0)
    gate.set()
    assert [3, 3, 3] == await asyncio.gather(*callers)
    assert 1 == len(tasks)
    assert tasks[0] not in callers
    assert 1 == load.stats()["misses"] and 2 == load.stats()["coalesced"]


async def test_a_future_awaited_in_the_first_step_can_be_awaited_by_others_meanwhile(
    cache: InMemoryCache,
) -> None:
    # Between the first step and the task's own, the future the step waits on must not
    # look taken: a connection task shared by several cold keys, and anyone else.
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[str] = loop.create_future()

    @cached(ttl=60, cache=cache)
    async def user(i: int) -> str:
        return f"{await ready}:{i}"

    async def bystander() -> str:
        return await ready

    calls = asyncio.gather(*(user(i) for i in range(4)), bystander())
    await asyncio.sleep(0)
    ready.set_result("conn")
    assert ["conn:0", "conn:1", "conn:2", "conn:3", "conn"] == await calls


async def test_a_recursive_cached_function_goes_deeper_than_eager_steps_could(
    cache: InMemoryCache,
) -> None:
    # Only the first few nested computations start eagerly (on their caller's stack).
    @cached(ttl=60, cache=cache)
    async def fib(n: int) -> int:
        return n if n < 2 else await fib(n - 1) + await fib(n - 2)

    depth = sys.getrecursionlimit() // 2
    assert fib_of(depth) == await fib(depth)
    assert 0 == cache.flights.in_flight


def fib_of(n: int) -> int:
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


async def test_a_task_handed_on_after_its_first_step_is_named_by_its_coroutine() -> None:
    gate = asyncio.Event()

    async def compute_something() -> None:
        await gate.wait()

    task = start_eagerly(asyncio.get_running_loop(), compute_something())
    assert "compute_something" in repr(task)
    gate.set()
    await task


async def test_misses_that_never_let_the_loop_turn_leave_a_bounded_backlog(
    cache: InMemoryCache,
) -> None:
    # Emulated, a finished first step leaves its task's step scheduled; a caller
    # awaiting miss after miss without the loop turning must not pile them up.
    @cached(ttl=60, cache=cache)
    async def double(x: int) -> int:
        return 2 * x

    most = 0
    for x in range(5_000):
        assert 2 * x == await double(x)
        if x % 100 == 0:
            most = max(most, len(asyncio.all_tasks()))
    assert most <= 1_100
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert 1 == len(asyncio.all_tasks())  # the test's own task: every step has run


async def _nothing() -> None:
    return None


def _start_then_stop(loop: asyncio.AbstractEventLoop, starts: int) -> None:
    """Run ``loop`` until a task of it has started ``starts`` tasks eagerly and stopped
    the loop, their scheduled steps still waiting."""

    async def start() -> None:
        for _ in range(starts):
            start_eagerly(loop, _nothing())
        loop.stop()

    loop.create_task(start())
    loop.run_forever()


by_hand = pytest.mark.skipif(
    sys.version_info >= (3, 12), reason="the first step is taken by hand on 3.11 only"
)


@by_hand
def test_each_loop_counts_its_own_scheduled_steps_whichever_thread_runs_them() -> None:
    a, b = asyncio.new_event_loop(), asyncio.new_event_loop()
    try:
        _start_then_stop(a, 5)
        _start_then_stop(b, 3)  # another loop of this thread meanwhile
        assert (5, 3) == (_backlog_of(a).count, _backlog_of(b).count)
        a.run_until_complete(asyncio.sleep(0))
        assert (0, 3) == (_backlog_of(a).count, _backlog_of(b).count)
        ran = threading.Thread(target=b.run_until_complete, args=(asyncio.sleep(0),))
        ran.start()
        ran.join()
        assert 0 == _backlog_of(b).count
    finally:
        a.close()
        b.close()


@by_hand
def test_an_interrupt_while_the_task_is_entered_leaves_the_caller_current(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from memo import _eager

    real_enter = _eager._enter_task
    assert real_enter is not None
    interrupt = True

    def enter_then_interrupt(loop: asyncio.AbstractEventLoop, task: asyncio.Task[Any]) -> None:
        nonlocal interrupt
        real_enter(loop, task)
        if interrupt and task is not caller:
            interrupt = False
            raise KeyboardInterrupt

    caller: asyncio.Task[Any] | None = None

    async def main() -> str:
        nonlocal caller
        caller = asyncio.current_task()
        with pytest.raises(KeyboardInterrupt):
            start_eagerly(asyncio.get_running_loop(), _nothing())
        assert caller is asyncio.current_task()
        await asyncio.sleep(0)  # the loop still runs its tasks
        return "went on"

    monkeypatch.setattr(_eager, "_enter_task", enter_then_interrupt)
    assert "went on" == asyncio.run(main())
