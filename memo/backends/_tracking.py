"""Server-assisted invalidation: Redis tells a memory tier when what it read has changed.

With ``CLIENT TRACKING ON`` (Redis 6 and later) the server remembers which keys a
connection read and, when one of them changes (any client's write, a delete, an expiry,
an eviction, a flush), pushes an ``invalidate`` message to that connection, once. So a
process hears only of keys it holds, whoever wrote them, and writers announce nothing.

The tier's fills must be reads on the tracking connection itself, over RESP3 (see
``_resp.py``): then a read's reply and the invalidations of its key arrive on one
stream in the order the server executed them, so an invalidation can never overtake the
read it voids (with tracking on a second connection, ``REDIRECT``, it can). For the same
reason the tier is filled only by these reads, never by this process's own writes: a
write does not make the server track its key, and a copy the server does not know of
would never be invalidated.

The guarantees of the channel (``invalidation.py``) carry over: the tier is bypassed
from the moment the connection is lost or falls silent past the heartbeat until tracking
is on again on a new connection, and it is flushed before it is trusted again. Where the
server refuses tracking (before Redis 6, or an ACL without ``CLIENT``), the listener
hands over to the channel, once, with a log line saying so.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from asyncio import get_running_loop
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from memo._fork import in_forked_child, keep_from_parent
from memo._redis_options import RedisOptions
from memo._validate import check_seconds
from memo.backends._listener_task import end_task, running_in_live_loop, within
from memo.backends._resp import Push, RespConnection, ServerError
from memo.backends._resp_session import Refused, open_session, retrieve
from memo.exceptions import BackendTimeout

if TYPE_CHECKING:  # the channel is built by the fallback it is given: redis-py loads then
    from memo.backends.invalidation import InvalidationListener

__all__ = [
    "NotTracking",
    "TrackingListener",
    "TrackingSource",
    "stop_trackers_of_running_loop",
]

logger = logging.getLogger("memo")

_LIVE: weakref.WeakSet[TrackingListener] = weakref.WeakSet()


class NotTracking(Exception):
    """A tracked read could not be made (no tracking connection, or it was lost while
    the read was under way): read the remote instead, and do not fill memory."""


class TrackingSource(Protocol):
    """The Redis side of a tracking listener; ``RedisBackend`` is one."""

    @property
    def options(self) -> RedisOptions: ...

    @property
    def masked_url(self) -> str: ...

    def scrub(self, text: str) -> str: ...


class TrackingListener:
    """Tracked reads and their invalidations for one memory tier (see the module doc).

    Offers what ``InvalidationListener`` offers (``ensure_running``, ``wait_trusted``,
    ``stop``, ``aclose``, ``trusted``, ``reconnects``, ``heard``), plus
    ``read_with_ttl`` while ``tracking`` is True. ``fallback`` builds the channel
    listener it hands over to when the server refuses tracking.
    """

    channel = "CLIENT TRACKING"

    def __init__(
        self,
        redis: TrackingSource,
        *,
        on_keys: Callable[[list[str]], None],
        on_flush: Callable[[], None],
        on_trust: Callable[[bool], None],
        fallback: Callable[[], InvalidationListener],
        heartbeat: float = 1.0,
        on_key: Callable[[str], None] | None = None,
    ) -> None:
        check_seconds("heartbeat", heartbeat, 60)
        self.redis = redis
        self.heartbeat = heartbeat
        self._on_keys = on_keys
        # One key changed, what is heard most: told without a list, when a tier can be.
        self._on_key = on_key or (lambda key: on_keys([key]))
        self._on_flush = on_flush
        self._on_trust = on_trust
        self._make_fallback = fallback
        self.fallback: InvalidationListener | None = None
        self._task: asyncio.Task[None] | None = None
        self._up: asyncio.Event | None = None
        self._connection: RespConnection | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._reading: dict[str, asyncio.Future[tuple[Any, Any]]] = {}  # reads under way
        self._closed = False
        self._failures = 0
        self._trusted = False
        self._reconnects = 0
        self._heard = 0  # invalidation messages applied to the memory tier
        self._dropped = 0  # pushes that were not invalidations
        _LIVE.add(self)

    # ------------------------------------------------------------------ state

    @property
    def tracking(self) -> bool:
        """Whether reads may go through ``read_with_ttl`` (tracking is on and trusted)."""
        return self._trusted and self._connection is not None and self.fallback is None

    @property
    def reconnects(self) -> int:
        """Connections made again after the first (the channel's, once handed over)."""
        return self._reconnects + (self.fallback.reconnects if self.fallback else 0)

    @property
    def heard(self) -> int:
        """Invalidations applied to the memory tier."""
        return self._heard + (self.fallback.heard if self.fallback else 0)

    @property
    def dropped_messages(self) -> int:
        return self._dropped + (self.fallback.dropped_messages if self.fallback else 0)

    @property
    def reads_tracked(self) -> bool:
        """Whether this tier's copies come from tracked reads only (not handed over)."""
        return self.fallback is None

    @property
    def trusted(self) -> bool:
        fallback = self.fallback
        return fallback.trusted if fallback is not None else self._trusted

    # ------------------------------------------------------------------ lifecycle

    def ensure_running(self) -> None:
        """Start in the running loop unless this listener runs in a live loop."""
        if self.fallback is not None:
            self.fallback.ensure_running()
            return
        task = self._task
        if running_in_live_loop(task):
            return
        if task is not None and not task.done():
            self._set_trust(False)  # its loop stopped: nothing is heard any more
        if self._closed:
            return
        self._up = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="memo tracking")

    async def wait_trusted(self, timeout: float) -> bool:
        self.ensure_running()
        if self.fallback is not None:
            return await self.fallback.wait_trusted(timeout)
        up = self._up
        if not self._trusted and up is not None:
            with contextlib.suppress(TimeoutError):
                await within(up.wait(), timeout, "tracking to start")
        if self.fallback is not None:  # refused while waiting: the channel's turn
            return await self.fallback.wait_trusted(timeout)
        return self._trusted

    async def stop(self) -> None:
        """Stop (the tier is no longer trusted); ``ensure_running`` starts again."""
        if self.fallback is not None:
            await self.fallback.stop()
        task, self._task = self._task, None
        self._set_trust(False)
        await end_task(task, self.heartbeat + 2.0)

    async def aclose(self) -> None:
        self._closed = True
        await self.stop()
        if self.fallback is not None:
            await self.fallback.aclose()

    def forget_after_fork(self) -> None:
        """In a forked child: the parent's task and socket are not ours."""
        if self._task is not None:
            keep_from_parent([self._task])
        self._task = None
        self._connection = None
        self._timer = None
        self._reading = {}
        self._set_trust(False)
        if self.fallback is not None:
            self.fallback.forget_after_fork()

    # ------------------------------------------------------------------ reads

    async def read_with_ttl(self, key: str) -> tuple[bytes | None, int | None]:
        """``key``'s value and remaining milliseconds (None for none), read on the
        tracking connection, so the server tells this listener when it changes.

        Raises:
            NotTracking: no tracking connection, or it was lost meanwhile.
            BackendTimeout: no answer within the operation deadline (the connection is
                dropped: a paused server).
        """
        connection = self._connection
        # The connection belongs to the loop this listener runs in; a read from another
        # loop (another thread) goes to Redis the usual way and fills nothing.
        if connection is None or not self._trusted or connection.loop is not get_running_loop():
            raise NotTracking
        shared = self._reading.get(key)
        if shared is None or shared.get_loop() is not connection.loop:
            # Concurrent readers of one key share one GET and PTTL.
            shared = self._read(connection, key)
        try:
            data, pttl = await asyncio.shield(shared)  # one reader's cancellation is its own
        except TimeoutError as exc:
            raise BackendTimeout(
                f"Redis at {self.redis.masked_url} did not answer a read within "
                f"{self.redis.options.operation_timeout:g} s"
            ) from exc
        except ConnectionError as exc:
            raise NotTracking from exc
        if isinstance(data, ServerError) or isinstance(pttl, ServerError):
            raise NotTracking  # the remote read says what it is, in memo's words
        return data, (pttl if pttl > 0 else None)

    def _read(self, connection: RespConnection, key: str) -> asyncio.Future[tuple[Any, Any]]:
        try:
            value, remaining = connection.request((b"GET", key), (b"PTTL", key))
        except ConnectionError as exc:
            raise NotTracking from exc
        shared: asyncio.Future[tuple[Any, Any]] = connection.loop.create_future()
        shared.add_done_callback(retrieve)  # every joiner may have given up
        self._reading[key] = shared

        def settle(_: object) -> None:  # replies come in order: the GET's is in too
            if self._reading.get(key) is shared:
                del self._reading[key]
            # Both replies fail together (the connection's end); each is retrieved.
            first, second = value.exception(), remaining.exception()
            failure = first or second
            if shared.done():
                return
            if failure is not None:
                shared.set_exception(failure)
            else:
                shared.set_result((value.result(), remaining.result()))

        remaining.add_done_callback(settle)
        if self._timer is None:
            self._arm_timer(self.redis.options.operation_timeout)
        return shared

    def _arm_timer(self, seconds: float) -> None:
        self._timer = asyncio.get_running_loop().call_later(seconds, self._check_overdue)

    def _check_overdue(self) -> None:
        """One timer for all reads under way: the oldest past the deadline drops the
        connection (each waiting read then fails), else wait for the oldest's turn."""
        self._timer = None
        connection = self._connection
        if connection is None:
            return
        sent = connection.oldest_sent_at
        if sent is None:
            return
        deadline = self.redis.options.operation_timeout
        late = asyncio.get_running_loop().time() - sent
        if late >= deadline:
            connection.abort(TimeoutError(f"no reply within {deadline:g} s"))
        else:
            self._arm_timer(deadline - late)

    # ------------------------------------------------------------------ the loop

    async def _run(self) -> None:
        self._failures = 0
        while True:
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except Refused as exc:
                self._hand_over(str(exc))
                return
            except Exception as exc:
                self._failures += 1
                if self._failures == 1:
                    logger.warning(
                        "memo: tracking connection to %s lost (%s); the memory tier is "
                        "bypassed until it is back",
                        self.redis.masked_url,
                        self.redis.scrub(f"{type(exc).__name__}: {exc}"),
                    )
                await asyncio.sleep(min(self.heartbeat, 0.05 * 2 ** min(self._failures, 6)))

    async def _session(self) -> None:
        """One connection: handshake, then watch it until it fails or falls silent."""
        options = self.redis.options
        connection = await open_session(
            options,
            name="memo-tracking",
            scrub=self.redis.scrub,
            then=[("CLIENT", "TRACKING", "ON")],
            on_push=self._pushed,
            on_invalidate=self._invalidated,
            on_invalidate_one=self._invalidated_one,
        )
        connection.batch_reads(options.invalidation_batch)
        try:
            self._timer = None  # one of an earlier connection's loop may never fire
            self._reading.clear()
            self._connection = connection
            if self._up is not None and self._up.is_set():
                self._reconnects += 1
            if self._failures:
                logger.warning("memo: tracking connection to %s is back", self.redis.masked_url)
            self._failures = 0
            self._on_flush()  # what was read on an earlier connection is tracked no more
            self._set_trust(True)
            if self._up is not None:
                self._up.set()
            await self._watch(connection, options.operation_timeout)
        finally:
            self._connection = None
            self._set_trust(False)
            connection.abort(ConnectionError("the tracking connection was closed"))
            self._reading.clear()

    async def _watch(self, connection: RespConnection, deadline: float) -> None:
        while True:
            await asyncio.wait({connection.closed}, timeout=self.heartbeat)
            if connection.closed.done():
                raise ConnectionError("the tracking connection closed")
            silent = time.monotonic() - connection.last_heard
            if silent > 2 * self.heartbeat + deadline:
                raise TimeoutError(f"no answer for {silent:.1f} s")
            if silent >= self.heartbeat:
                (pong,) = connection.request(("PING",))
                pong.add_done_callback(retrieve)

    def _pushed(self, push: Push) -> None:
        """A push other than an invalidation (none is expected): counted, ignored."""
        if len(push) == 2 and push[0] == b"invalidate":
            self._invalidated(push[1])
        else:
            self._dropped += 1

    def _invalidated_one(self, key: bytes) -> None:
        """What ``_invalidated([key])`` does, in fewer steps: it runs for nearly every
        message a tracking connection hears."""
        self._heard += 1
        name = key.decode("utf-8", "surrogateescape")
        if self._reading:
            self._reading.pop(name, None)  # see _invalidated
        self._on_key(name)

    def _invalidated(self, keys: list[bytes] | None) -> None:
        """Keys changed in Redis (None: the database was flushed)."""
        self._heard += 1
        reading = self._reading
        if keys is None:  # FLUSHALL / FLUSHDB
            reading.clear()
            self._on_flush()
            return
        if len(keys) == 1:  # what is heard most (and no comprehension to run)
            names = [keys[0].decode("utf-8", "surrogateescape")]
        else:
            names = [key.decode("utf-8", "surrogateescape") for key in keys]
        if reading:
            # A read of these under way carries what they held before this change:
            # readers who come now must not join it (its reply may be parsed already,
            # in this very chunk, and their marks would not see this invalidation).
            for name in names:
                reading.pop(name, None)
        self._on_keys(names)

    def _hand_over(self, why: str) -> None:
        logger.warning(
            "memo: Redis at %s refused client-side tracking (%s); memory tiers use the "
            "invalidation channel instead (announced writes, heard by every process)",
            self.redis.masked_url,
            why,
        )
        self._set_trust(False)
        self.fallback = self._make_fallback()
        if not self._closed:
            self.fallback.ensure_running()

    def _set_trust(self, trusted: bool) -> None:
        self._trusted = trusted
        if self.fallback is None:
            self._on_trust(trusted)


def _after_fork_in_child() -> None:
    for listener in list(_LIVE):
        listener.forget_after_fork()


in_forked_child(_after_fork_in_child)


async def stop_trackers_of_running_loop() -> None:
    """Stop the tracking listeners running in this loop (before it ends); they restart
    on use."""
    loop = asyncio.get_running_loop()
    for listener in list(_LIVE):
        task = listener._task
        if task is not None and task.get_loop() is loop:
            await listener.stop()
