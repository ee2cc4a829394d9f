"""Tasks whose first step runs at once, in the turn of the loop that starts them.

A computation that has nothing to wait for (a miss of a function computed from memory)
then ends before its caller's next line: no turn of the loop to start the task, none to
hand the caller its value. Python 3.12 offers this as ``asyncio.Task(..., eager_start=
True)``. On 3.11, where ``Task`` has no such option, it is done the same way by hand:
the task is created (its first step scheduled, as every task's is), then that first step
is run now, with the new task current and in the task's own copy of the context, so that
whatever the coroutine captures there (``asyncio.timeout``, a ``TaskGroup``,
``current_task()``) belongs to the task that goes on running it; the scheduled step then
hands the task what the coroutine was waiting on, or ends it with the outcome it had
already reached. Elsewhere (3.10, or a loop with a task factory of its own, which
decides how its tasks start) the task starts on the next turn, as any task does.
"""

from __future__ import annotations

import asyncio
import collections.abc
import contextvars
import sys
import threading
import weakref
from asyncio import tasks as _tasks
from collections.abc import Callable, Coroutine, Generator
from typing import Any, TypeVar

__all__ = ["EAGER", "start_eagerly"]

T = TypeVar("T")

_NATIVE = sys.version_info >= (3, 12)
# The hooks every task step uses to mark itself current (C functions where built).
_enter_task = getattr(_tasks, "_enter_task", None)
_leave_task = getattr(_tasks, "_leave_task", None)
_current_tasks: dict[asyncio.AbstractEventLoop, asyncio.Task[Any]] | None = getattr(
    _tasks, "_current_tasks", None
)  # what asyncio.current_task reads, without its Python frame
_EMULATED = (
    not _NATIVE
    and sys.version_info >= (3, 11)  # create_task(context=...) came in 3.11
    and _enter_task is not None
    and _leave_task is not None
    and _current_tasks is not None
)
#: Whether tasks start eagerly on this runtime (a loop's own task factory aside).
EAGER = _NATIVE or _EMULATED

#: Emulated, a task whose first step ended the coroutine still holds its scheduled step
#: (and the task, its context and its outcome) until the loop turns. A caller that
#: never lets it turn (a loop filling a cache, awaiting miss after miss) would pile them
#: up: past this many, tasks start on the next turn, which makes that caller wait and
#: the loop run what is scheduled.
_MOST_SCHEDULED = 1024


class _Backlog:
    """Emulated first steps of one loop whose scheduled step has not run yet."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0


_backlogs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Backlog] = (
    weakref.WeakKeyDictionary()
)


def _no_loop() -> None:
    return None


class _LastBacklog(threading.local):
    """The loop this thread started a task on last (weakly), and its backlog: found
    again without ``WeakKeyDictionary.get``, which is Python code."""

    def __init__(self) -> None:
        self.loop: Callable[[], asyncio.AbstractEventLoop | None] = _no_loop
        self.backlog = _Backlog()


_last = _LastBacklog()


def _backlog_of(loop: asyncio.AbstractEventLoop) -> _Backlog:
    last = _last
    if last.loop() is not loop:
        backlog = _backlogs.get(loop)
        if backlog is None:
            backlog = _backlogs[loop] = _Backlog()
        last.loop, last.backlog = weakref.ref(loop), backlog
    return last.backlog


def start_eagerly(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
    """A task running ``coro`` on ``loop``, its first step already taken where the
    runtime allows. Whether that step finished the coroutine is for the coroutine to
    record: emulated, the task itself is done only after its scheduled step."""
    if loop.get_task_factory() is not None:
        return loop.create_task(coro)
    if _NATIVE:
        return asyncio.Task(coro, loop=loop, eager_start=True)  # type: ignore[call-arg,unused-ignore]
    if not _EMULATED:
        return loop.create_task(coro)
    backlog = _backlog_of(loop)
    if backlog.count >= _MOST_SCHEDULED:
        return loop.create_task(coro)
    context = contextvars.copy_context()
    rest = _RestOf(coro, backlog)
    create: Any = loop.create_task  # context= is 3.11's; mypy checks against 3.10
    task: asyncio.Task[T] = create(rest, context=context)
    backlog.count += 1  # until the step just scheduled runs (_RestOf._hand_on)
    current = _current_tasks  # set whenever _EMULATED
    assert current is not None
    caller = current.get(loop)
    try:
        # Inside the try, and undone by what is current, not by how far this got: an
        # interrupt (a KeyboardInterrupt between two calls) must leave the loop with
        # its caller current, or every later step of the loop would be refused.
        if caller is not None:
            _leave_task(loop, caller)  # type: ignore[misc]  # set whenever _EMULATED
        _enter_task(loop, task)  # type: ignore[misc]
        context.run(rest.first_step)
    finally:
        if current.get(loop) is task:
            _leave_task(loop, task)  # type: ignore[misc]
        if caller is not None and current.get(loop) is None:
            _enter_task(loop, caller)  # type: ignore[misc]
    return task


class _RestOf(collections.abc.Coroutine):  # type: ignore[type-arg]
    """What a task runs after ``coro``'s first step was taken for it: first the outcome
    or the awaited future of that step, then ``coro`` itself, step by step."""

    __slots__ = (
        "_backlog", "_blocking", "_coro", "_error", "_finished", "_handed_on", "_result",
        "_waiting",
    )  # fmt: skip

    def __init__(self, coro: Coroutine[Any, Any, Any], backlog: _Backlog) -> None:
        self._coro = coro
        self._backlog = backlog
        self._handed_on = False  # the first step's outcome has gone to the task
        self._finished = False
        self._result: Any = None
        self._error: BaseException | None = None
        self._waiting: Any = None  # what the first step yielded to the task to wait on
        self._blocking = False

    def first_step(self) -> None:
        try:
            waiting = self._waiting = self._coro.send(None)
            if getattr(waiting, "_asyncio_future_blocking", False):
                # A future yielded by ``await`` is marked so until a task takes it, and
                # refuses to be awaited by anyone else while marked: unmarked until the
                # task's own step takes it, as a task step does at once.
                waiting._asyncio_future_blocking = False
                self._blocking = True
        except StopIteration as stop:
            self._finished, self._result = True, stop.value
        except (KeyboardInterrupt, SystemExit):
            self._finished = True  # the task ends quietly; the caller sees it raised
            raise
        except BaseException as exc:  # the task ends with it, as if raised in its step
            self._finished, self._error = True, exc

    def _hand_on(self) -> None:
        """The task's own step has come: one scheduled step fewer."""
        self._handed_on = True
        self._backlog.count -= 1

    def send(self, value: Any) -> Any:
        if self._handed_on:
            return self._coro.send(value)
        self._hand_on()
        if not self._finished:
            waiting, self._waiting = self._waiting, None
            if self._blocking:
                waiting._asyncio_future_blocking = True  # for the task to take it
            return waiting
        error, result, self._error, self._result = self._error, self._result, None, None
        if error is not None:
            raise error
        raise StopIteration(result)

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        if isinstance(typ, BaseException):
            exc = typ
        elif isinstance(val, BaseException):
            exc = val
        else:
            exc = typ() if val is None else typ(val)
        if not self._handed_on:
            self._hand_on()
            if self._finished:
                raise exc
            waiting, self._waiting = self._waiting, None
            if isinstance(exc, asyncio.CancelledError) and isinstance(waiting, asyncio.Future):
                waiting.cancel()  # as Task.cancel does to the future a task waits on
        return self._coro.throw(exc)

    def close(self) -> None:
        self._coro.close()

    def __await__(self) -> Generator[Any, None, Any]:
        return self  # send/throw make it its own iterator

    def __iter__(self) -> _RestOf:
        return self

    def __next__(self) -> Any:
        return self.send(None)

    # What asyncio's reprs and Task.get_stack() look for on a coroutine.
    def __getattr__(self, name: str) -> Any:
        if name in ("__name__", "__qualname__"):  # not on instances: asked of the coroutine
            return getattr(self._coro, name)
        raise AttributeError(name)

    @property
    def cr_frame(self) -> Any:
        return getattr(self._coro, "cr_frame", None)

    @property
    def cr_code(self) -> Any:
        return getattr(self._coro, "cr_code", None)

    @property
    def cr_await(self) -> Any:
        return getattr(self._coro, "cr_await", None)

    @property
    def cr_running(self) -> bool:
        return bool(getattr(self._coro, "cr_running", False))
