"""The circuit breaker's states, and deadlines kept by the watchdog."""

from __future__ import annotations

import asyncio
import sys

import pytest

from memo import BackendTimeout, ConfigError
from memo.resilience import CircuitBreaker, DeadlineWatchdog, run_with_deadline
from memo.testing import FakeClock


def test_the_breaker_opens_after_the_threshold_of_consecutive_failures() -> None:
    breaker = CircuitBreaker(failure_threshold=3, reset_timeout=1.0, clock=FakeClock())
    for _ in range(2):
        assert breaker.allow()
        breaker.record_failure()
    breaker.record_success()  # a success in between resets the count
    for _ in range(3):
        assert breaker.allow()
        breaker.record_failure()
    assert "open" == breaker.state
    assert breaker.allow() is False
    assert 1 == breaker.times_opened


def test_an_open_breaker_half_opens_after_the_reset_timeout_and_lets_one_probe_through() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=1, reset_timeout=2.0, clock=clock)
    breaker.record_failure()
    clock.advance(1.999)
    assert breaker.allow() is False
    clock.advance(0.001)
    assert "half_open" == breaker.state
    assert breaker.allow() is True
    assert breaker.allow() is False  # only one probe at a time
    breaker.record_success()
    assert "closed" == breaker.state
    assert breaker.allow() is True


def test_a_failed_probe_opens_the_breaker_for_another_reset_timeout() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=1, reset_timeout=1.0, clock=clock)
    breaker.record_failure()
    clock.advance(1)
    assert breaker.allow()
    breaker.record_failure()
    assert "open" == breaker.state
    clock.advance(0.5)
    assert breaker.allow() is False
    clock.advance(0.5)
    assert breaker.allow() is True


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"failure_threshold": 0}, "failure_threshold"), ({"reset_timeout": 0}, "reset_timeout")],
)
def test_bad_breaker_settings_name_the_argument(kwargs: dict[str, float], name: str) -> None:
    with pytest.raises(ConfigError, match=name):
        CircuitBreaker(**kwargs)  # type: ignore[arg-type]


async def test_run_with_deadline_raises_backend_timeout() -> None:
    with pytest.raises(BackendTimeout, match=r"within 0\.05 s"):
        await run_with_deadline(asyncio.sleep(10), 0.05, "a nap")
    assert 7 == await run_with_deadline(asyncio.sleep(0, result=7), 1, "no nap")


needs_311 = pytest.mark.skipif(sys.version_info < (3, 11), reason="Task.uncancel() is 3.11+")


async def _watched(watchdog: DeadlineWatchdog, seconds: float, work: float) -> str:
    task = asyncio.current_task()
    assert task is not None
    watchdog.watch(task, seconds)
    try:
        try:
            await asyncio.sleep(work)
            return "done"
        finally:
            watchdog.unwatch(task)
    except asyncio.CancelledError:
        if watchdog.expired(task):
            return "timed out"
        raise


@needs_311
async def test_the_watchdog_cancels_only_what_overran_its_deadline() -> None:
    watchdog = DeadlineWatchdog(asyncio.get_running_loop())
    results = await asyncio.gather(
        _watched(watchdog, 0.05, 5),
        _watched(watchdog, 0.05, 0),
        _watched(watchdog, 0.2, 5),
        _watched(watchdog, 5, 0.1),
    )
    assert ["timed out", "done", "timed out", "done"] == results


@needs_311
async def test_an_outside_cancellation_stays_a_cancellation() -> None:
    watchdog = DeadlineWatchdog(asyncio.get_running_loop())
    task = asyncio.create_task(_watched(watchdog, 5, 5))
    for _ in range(100):  # let the task start and come under watch before cancelling it
        if task in watchdog._watched:
            break
        await asyncio.sleep(0)
    assert task in watchdog._watched
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@needs_311
async def test_sequential_watches_reuse_one_timer() -> None:
    loop = asyncio.get_running_loop()
    watchdog = DeadlineWatchdog(loop)
    for _ in range(100):
        assert "done" == await _watched(watchdog, 5, 0)
    handle = watchdog._handle
    assert handle is not None
    assert "done" == await _watched(watchdog, 5, 0)
    assert handle is watchdog._handle  # no timer per command
