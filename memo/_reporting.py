"""What a cache reports beyond its own counters, and how it shares that with the fleet.

``Reporting`` belongs to one cache. It knows the decorated functions bound to the cache
(for per-function figures), holds the ledger of what AI hits saved, and, when the cache
sits on a server every process shares (``SharedHashes``: Redis), sends both there in
the background:

- savings counts are added to ``{prefix}#ai_savings`` at most every
  ``SAVINGS_INTERVAL`` seconds (``HINCRBY``; counts the server refused are kept);
- every ``interval`` seconds the cache's figures (counters, latency, functions) are
  written as one field of ``{prefix}#fleet``, named ``host:pid:cache``, so that
  ``memo stats`` and ``memo top`` show every process (``memo._fleet`` reads them).

Publishing never blocks a call: the hit path does not touch it, and the slow path only
checks that the publishing task runs on the current event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import time
import weakref
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from memo._loops import running_loop
from memo._savings import SavingsLedger, Usage, shared_savings_key
from memo.backends.base import HashStore, SharedHashes
from memo.exceptions import BackendError, BackendUnavailable
from memo.stats import CacheStats, FunctionStats, LatencyWindow

__all__ = [
    "FLEET_SEGMENT",
    "SAVINGS_INTERVAL",
    "CountedFunction",
    "Reporting",
    "fleet_key",
    "snapshot",
]

#: Seconds between two additions of a process's AI savings to the server's figures.
SAVINGS_INTERVAL = 1.0
#: One server read in this many has its key counted for the hottest keys.
HOT_SAMPLE = 8
HOT_KEYS_KEPT = 512
#: The hash of a cache's fleet records sits beside its prefix, out of reach of its keys.
FLEET_SEGMENT = "#fleet"


def fleet_key(prefix: str) -> str:
    return prefix.rstrip(":") + FLEET_SEGMENT


class CountedFunction(Protocol):
    """What a cache knows of a decorated function bound to it."""

    namespace: str
    function_id: str
    operation: str | None
    stats: FunctionStats


class ReportingHost(Protocol):
    """The cache a ``Reporting`` belongs to."""

    prefix: str
    namespace: str

    @property
    def stats(self) -> CacheStats: ...

    @property
    def closed(self) -> bool: ...

    def remote_server(self) -> Any: ...

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]: ...

    def log_once(self, topic: str, message: str, *args: object) -> None: ...


_UNKNOWN: Any = object()
_HOST = socket.gethostname()


class Reporting:
    """A cache's decorated functions, AI savings and fleet record (see the module)."""

    def __init__(self, host: ReportingHost, clock: Callable[[], float]) -> None:
        self._host = weakref.ref(host)  # the cache owns this; never the other way
        self._clock = clock
        self.savings = SavingsLedger()
        self._functions: weakref.WeakSet[CountedFunction] = weakref.WeakSet()
        self._hashes: HashStore | None = _UNKNOWN  # found at first use
        self._savings_due = 0.0
        self._savings_flushing = False
        #: Seconds between two fleet records; 0 publishes none.
        self.interval = 0.0
        self._publisher: asyncio.Task[None] | None = None
        self._stopping = False
        self._pid = os.getpid()
        self._field = f"{_HOST}:{self._pid}:{id(host):x}"
        self._started = time.time()
        # Keys read from the server, one read in HOT_SAMPLE counted (memory hits are not
        # seen: the hit path stays untouched); decayed by halving when it grows.
        self._hot: dict[str, int] = {}
        self._reads = 0

    # ---------------------------------------------------------------- functions

    def register(self, function: CountedFunction) -> None:
        self._functions.add(function)

    def functions(self) -> list[dict[str, Any]]:
        """Each decorated function bound to the cache: namespace, function id, operation
        (AI functions) and its counters."""
        rows = [
            {"namespace": f.namespace, "function": f.function_id, "operation": f.operation}
            | f.stats.as_dict()
            for f in snapshot(self._functions)
        ]
        return sorted(rows, key=lambda r: (r["namespace"], r["function"]))

    # ---------------------------------------------------------------- the server

    def hashes(self) -> HashStore | None:
        found = self._hashes
        if found is _UNKNOWN:
            host = self._host()
            remote = None if host is None else host.remote_server()
            found = self._hashes = remote.hashes if isinstance(remote, SharedHashes) else None
            self.savings.shared = found is not None
        return found

    # ---------------------------------------------------------------- savings

    def record_saving(self, operation: str, usage: Usage) -> None:
        """Count what one AI hit saved; send it to the server in the background, at most
        every ``SAVINGS_INTERVAL`` seconds (a hit never waits)."""
        hashes = self.hashes()
        self.savings.record(operation, usage)
        if hashes is not None and not self._savings_flushing:
            host = self._host()
            if host is not None and self._clock() >= self._savings_due:
                self._savings_flushing = True
                host.spawn(self.flush_savings())

    async def flush_savings(self) -> None:
        """Add the savings counted since the last flush to the server's (kept on failure)."""
        hashes, host = self.hashes(), self._host()
        try:
            if hashes is not None and host is not None and self.savings.pending:
                taken = self.savings.take_pending()
                try:
                    await hashes.add_counts(shared_savings_key(host.prefix), taken)
                except BackendUnavailable as exc:  # never sent: sent with the next flush
                    self.savings.give_back(taken)
                    host.log_once("savings", "memo: AI savings not shared yet: %s", exc)
                except BackendError as exc:
                    # Timed out (they may have landed) or refused (they never will): sent
                    # again they could be counted twice, or fail forever. Dropped.
                    host.log_once("savings", "memo: AI savings not shared: %s", exc)
        finally:
            self._savings_due = self._clock() + SAVINGS_INTERVAL
            self._savings_flushing = False

    # ---------------------------------------------------------------- fleet

    def record(self) -> dict[str, Any]:
        """This cache's figures as the fleet sees them (one row of ``memo stats``)."""
        host = self._host()
        stats = host.stats.as_dict() if host is not None else {}
        remote = host.remote_server() if host is not None else None
        latency: LatencyWindow | None = getattr(remote, "latency", None)
        return {
            "host": _HOST,
            "pid": self._pid,
            "cache": self._field.rsplit(":", 1)[1],
            "namespace": None if host is None else host.namespace,
            "started": self._started,
            "at": time.time(),
            "interval": self.interval,
            "stats": stats,
            "latency": None if latency is None else latency.summary(),
            "functions": self.functions(),
            "hot_keys": self.hot_keys(),
        }

    def remote_read(self, full_key: str) -> None:
        """A read that goes to the server: sample its key, keep the publisher running."""
        self._reads += 1
        if not self._reads % HOT_SAMPLE:
            hot = self._hot
            hot[full_key] = hot.get(full_key, 0) + 1
            if len(hot) > HOT_KEYS_KEPT:
                self._hot = {k: n // 2 for k, n in hot.items() if n > 1}
        self.ensure_publishing()

    def hot_keys(self, limit: int = 10) -> list[tuple[str, int]]:
        """The keys read most often from the server (relative keys, estimated reads)."""
        host = self._host()
        cut = 0 if host is None else len(host.prefix)
        ranked = sorted(list(self._hot.items()), key=lambda kv: -kv[1])[:limit]
        return [(key[cut:], n * HOT_SAMPLE) for key, n in ranked]

    def ensure_publishing(self) -> None:
        """Start publishing fleet records on the running loop, unless already running
        there (called from the cache's slow path: cheap when it is)."""
        if self._pid != os.getpid():
            self._forked()
        task = self._publisher
        if task is not None and not task.done() and not task.get_loop().is_closed():
            return  # one publisher per cache, on whichever loop started it
        if not self.interval or self.hashes() is None:
            return
        host = self._host()
        if host is None or host.closed or self._stopping or running_loop() is None:
            return
        self._publisher = asyncio.get_running_loop().create_task(self._publish_forever())

    def _forked(self) -> None:
        """In a forked child: a row of its own, counting from the fork (the parent's
        counts stay the parent's, and its publisher did not come along)."""
        self._pid = os.getpid()
        self._field = f"{_HOST}:{self._pid}:{self._field.rsplit(':', 1)[1]}"
        self._started = time.time()
        self._publisher = None  # the parent's task, on the parent's loop
        host = self._host()
        if host is not None:
            host.stats.reset()
        for function in snapshot(self._functions):
            function.stats.reset()
        self.savings.reset()

    async def _publish_forever(self) -> None:
        # The first record after one interval: a process that lives less (a script, a
        # CLI) adds nothing, and `publish_stats()` writes one at once when asked.
        # A cancellation can be swallowed by a Redis call under way (it then ends as a
        # BackendError): the flag, or the cancellation still asked of the task, ends the
        # loop, so that aclose(), or asyncio.run() ending with the cache open, is not
        # kept waiting by a publisher that goes on.
        while not self._stopping:
            await asyncio.sleep(self.interval)
            if self._stopping:
                return
            await self.publish()
            if _cancel_asked():
                return

    async def publish(self) -> bool:
        """Write this cache's fleet record now; False when the server could not take it."""
        hashes, host = self.hashes(), self._host()
        if hashes is None or host is None:
            return False
        if self._pid != os.getpid():
            self._forked()
        try:
            record = self.record()
            record["at"] = await hashes.server_time()  # one clock for the whole fleet
            data = json.dumps(record, default=str).encode()
            await hashes.put_fields(fleet_key(host.prefix), {self._field: data})
        except BackendError as exc:
            host.log_once("fleet", "memo: fleet figures not published: %s", exc)
            return False
        return True

    async def aclose(self) -> None:
        """Stop publishing and take this cache's record out of the fleet (best effort);
        send the savings not sent yet."""
        self._stopping = True
        task, self._publisher = self._publisher, None
        if task is not None and not task.done():
            task.cancel()
            if task.get_loop() is running_loop():
                await asyncio.gather(task, return_exceptions=True)
        if self.savings.pending:
            await self.flush_savings()
        hashes, host = self.hashes(), self._host()
        if hashes is not None and host is not None and self.interval:
            # On failure the record ages out: readers mark it gone, then drop it.
            with contextlib.suppress(BackendError):
                await hashes.drop_fields(fleet_key(host.prefix), [self._field])


def snapshot(items: weakref.WeakSet[Any]) -> list[Any]:
    """The members of a WeakSet now: another thread adding one while it is iterated
    makes the iteration raise, so it is tried again."""
    while True:
        try:
            return list(items)
        except RuntimeError:  # "Set changed size during iteration"
            continue


def _cancel_asked() -> bool:
    """Whether the running task was asked to stop, even if the cancellation was lost on
    the way (Python 3.11 and later count the requests; 3.10 cannot tell)."""
    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)
    return cancelling is not None and cancelling() > 0
