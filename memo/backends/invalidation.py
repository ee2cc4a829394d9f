"""The invalidation channel: how a write in one process reaches the memory tiers of others.

Every Redis write memo makes (``SET``, ``UNLINK``, a pattern delete) goes with a
``PUBLISH`` on ``memo:invalidations:{db}``, in the same command, naming the keys or the
pattern it changed (see ``_announce.py``; the messages are in ``_messages.py``). Each
memory tier in front of Redis listens on that channel and drops what it names.

A listener that may have missed a message must not let its memory tier be trusted, so:

* The tier is bypassed from the moment the channel is lost (an error, or silence past
  the heartbeat: a paused server sends nothing and reports nothing) until the
  subscription is confirmed again, and it is flushed before it is trusted again.
* Every subscription confirmation counts as a reconnect, including one redis-py makes on
  its own, so no reconnect goes unnoticed.
* The tier is told of every message, loss and confirmation, and refuses to fill memory
  from a Redis read that any of them overtook (see ``TieredBackend``).

One listener per memory tier, running as a task of one event loop; a tier used from a
new loop (after the old one stopped) gets a new listener there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import Callable
from typing import Any, Protocol

from memo._fork import in_forked_child, keep_from_parent
from memo._validate import check_seconds
from memo.backends._announce import LISTENER_RECHECK
from memo.backends._listener_task import end_task, running_in_live_loop, within
from memo.backends._messages import decode_message

__all__ = [
    "ChannelSource",
    "InvalidationListener",
    "stop_listeners_of_running_loop",
]

logger = logging.getLogger("memo")


_LIVE_LISTENERS: weakref.WeakSet[InvalidationListener] = weakref.WeakSet()


class PubSubClient(Protocol):
    """What the listener needs of a redis-py client."""

    def pubsub(self) -> Any: ...


class ChannelSource(Protocol):
    """The Redis side of a listener: a server, its channel and this process's origin.

    ``RedisBackend`` is one; the listener uses nothing else of it.
    """

    @property
    def invalidation_channel(self) -> str:
        """The pub/sub channel writes are announced on."""
        ...

    @property
    def origin(self) -> str:
        """This process's id in announcements (its own are skipped)."""
        ...

    @property
    def masked_url(self) -> str:
        """The server's URL, fit for logs."""
        ...

    @property
    def connect_timeout(self) -> float: ...

    @property
    def operation_timeout(self) -> float: ...

    def client(self) -> PubSubClient:
        """The client of the running event loop."""
        ...

    def scrub(self, text: str) -> str:
        """``text`` with any secret of the connection replaced by ``***``."""
        ...


class InvalidationListener:
    """Listens on the channel of ``redis`` for one memory tier.

    ``on_keys``/``on_pattern`` drop what another process announced; ``on_flush`` drops
    everything (a subscription was confirmed); ``on_trust(True)`` is called once the
    subscription is confirmed (after the tier is flushed), ``on_trust(False)`` as soon as
    the channel may have missed something.
    """

    def __init__(
        self,
        redis: ChannelSource,
        *,
        on_keys: Callable[[list[str]], None],
        on_pattern: Callable[[str], None],
        on_flush: Callable[[], None],
        on_trust: Callable[[bool], None],
        heartbeat: float = 1.0,
    ) -> None:
        check_seconds("heartbeat", heartbeat, 60)
        self.redis = redis
        self.channel = redis.invalidation_channel
        self.heartbeat = heartbeat
        self._on_keys = on_keys
        self._on_pattern = on_pattern
        self._on_flush = on_flush
        self._on_trust = on_trust
        self._task: asyncio.Task[None] | None = None
        self._up: asyncio.Event | None = None
        self.trusted = False
        self.reconnects = 0  # confirmations after the first: how often the channel came back
        # False from a subscription until its settling flush (see _listen) has run: what
        # the tier holds from then on is dropped only by what the channel announces.
        self.settled = False
        self.dropped_messages = 0  # undecodable messages (logged once)
        self.heard = 0  # announcements of other processes applied to the memory tier
        self._closed = False
        self._failures = 0  # losses since the last confirmed subscription
        self._last_read = 0.0  # loop time of the last thing read from the channel
        _LIVE_LISTENERS.add(self)

    #: Reads are not tracked by the server: this tier may take copies of its own writes.
    reads_tracked = False
    #: ``read_with_ttl`` is ``TrackingListener``'s alone.
    tracking = False

    async def read_with_ttl(self, key: str) -> tuple[bytes | None, int | None]:
        raise NotImplementedError("the channel carries no reads")

    # ------------------------------------------------------------------ lifecycle

    def ensure_running(self) -> None:
        """Start listening in the running loop unless a listener runs in a live loop."""
        task = self._task
        if running_in_live_loop(task):
            return
        if task is not None and not task.done():
            # Its loop stopped: it hears nothing, so the tier must not be trusted.
            self._set_trust(False)
        if self._closed:
            return
        loop = asyncio.get_running_loop()
        self._up = asyncio.Event()
        self._task = loop.create_task(self._run(), name=f"memo invalidations {self.channel}")

    async def wait_trusted(self, timeout: float) -> bool:
        """Start if needed and wait up to ``timeout`` s for the subscription."""
        self.ensure_running()
        if self.trusted:
            return True
        up = self._up
        if up is None:
            return False
        with contextlib.suppress(TimeoutError):
            await within(up.wait(), timeout, "the first subscription")
        return self.trusted

    async def stop(self) -> None:
        """Stop listening (the tier is no longer trusted); ``ensure_running`` restarts."""
        task, self._task = self._task, None
        self._set_trust(False)
        await end_task(task, self.heartbeat + 2.0)

    async def aclose(self) -> None:
        self._closed = True
        await self.stop()

    def forget_after_fork(self) -> None:
        """In a forked child: the parent's task and socket are not ours (see memo._fork)."""
        if self._task is not None:
            keep_from_parent([self._task])
        self._task = None
        self._set_trust(False)

    # ------------------------------------------------------------------ the loop

    async def _run(self) -> None:
        self._failures = 0
        while True:
            try:
                await self._listen()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # every loss is handled the same way (and _listen
                self._failures += 1  # has already withdrawn the trust)
                if self._failures == 1:
                    logger.warning(
                        "memo: invalidation channel %s on %s lost (%s); the memory tier "
                        "is bypassed until it is back (if the server refuses SUBSCRIBE, "
                        "allow that channel, or set invalidation_channel=False)",
                        self.channel,
                        self.redis.masked_url,
                        self.redis.scrub(f"{type(exc).__name__}: {exc}"),
                    )
                await asyncio.sleep(min(self.heartbeat, 0.05 * 2 ** min(self._failures, 6)))
                _raise_if_cancelled()

    async def _listen(self) -> None:
        """One subscription, until it fails. A reader task reads with no timeout (so a
        cancellation reaches it cleanly); this task watches it, pings when the channel
        is quiet and gives up on a silent one, which is how a paused server shows."""
        redis = self.redis
        deadline = redis.connect_timeout + redis.operation_timeout
        loop = asyncio.get_running_loop()
        pubsub = redis.client().pubsub()
        reader: asyncio.Task[None] | None = None
        try:
            await within(pubsub.subscribe(self.channel), deadline, "SUBSCRIBE")
            _raise_if_cancelled()
            self._last_read = loop.time()
            reader = loop.create_task(self._read(pubsub), name=f"memo reader {self.channel}")
            # Writers whose peers are told by the server announce only while the channel
            # has listeners, counted at most LISTENER_RECHECK s ago: a write they made
            # unannounced may land until then, so what the tier took meanwhile goes too.
            settled_at: float | None = loop.time() + LISTENER_RECHECK + redis.operation_timeout
            self.settled = False
            while True:
                await asyncio.wait({reader}, timeout=min(self.heartbeat, LISTENER_RECHECK))
                _raise_if_cancelled()
                if reader.done():
                    reader.result()  # its error is this subscription's end
                    raise ConnectionError("the subscription ended")
                if settled_at is not None and loop.time() >= settled_at and self.trusted:
                    settled_at = None
                    self._on_flush()
                    self.settled = True
                silent = loop.time() - self._last_read
                if silent > 2 * self.heartbeat + deadline:
                    raise TimeoutError(f"no answer for {silent:.1f} s")
                if silent >= self.heartbeat:
                    await pubsub.ping()  # only sent here; the reader takes the "pong"
        finally:
            self._set_trust(False)
            await self._dispose(pubsub, reader)

    async def _read(self, pubsub: Any) -> None:
        loop = asyncio.get_running_loop()
        while True:
            message = await pubsub.get_message(timeout=None)
            self._last_read = loop.time()
            if message is not None:
                self._handle(message)

    async def _dispose(self, pubsub: Any, reader: asyncio.Task[None] | None) -> None:
        """Close the subscription's connection first: a reader blocked on it then ends
        with an error even if a cancellation would not reach it."""
        connection = pubsub.connection
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.disconnect(nowait=True)
        if reader is not None and not reader.done():
            reader.cancel()
            await asyncio.wait({reader}, timeout=1.0)
        if reader is not None and reader.done() and not reader.cancelled():
            reader.exception()  # retrieved: its error was this subscription's end
        with contextlib.suppress(Exception):
            await within(pubsub.aclose(), 1.0, "closing the subscription")

    def _handle(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "message":
            self._received(message["data"])
        elif kind == "subscribe":
            # The first confirmation, or a reconnect (redis-py re-subscribes by itself
            # after reconnecting): whatever was published meanwhile is lost, so flush.
            if self._up is not None and self._up.is_set():
                self.reconnects += 1
            if self._failures:
                logger.warning("memo: invalidation channel on %s is back", self.redis.masked_url)
            self._failures = 0
            self._on_flush()
            self._set_trust(True)
            if self._up is not None:
                self._up.set()
        # "pong" and anything else: only proof of life, recorded by the caller.

    def _received(self, data: bytes) -> None:
        try:
            origin, keys, pattern = decode_message(data)
        except ValueError as exc:
            self.dropped_messages += 1
            if self.dropped_messages == 1:
                logger.warning("memo: ignored a message on %s: %s", self.channel, exc)
            return
        if origin == self.redis.origin:
            return  # this process's own write: its memory tier is already up to date
        self.heard += 1
        if keys is not None:
            self._on_keys(keys)
        elif pattern is not None:
            self._on_pattern(pattern)

    def _set_trust(self, trusted: bool) -> None:
        self.trusted = trusted
        # Told on every call, a repeated loss included: the tier counts each one to
        # refuse fills that raced it.
        self._on_trust(trusted)


def _raise_if_cancelled() -> None:
    """Python 3.11's ``wait_for`` (and timeouts inside redis-py) can swallow a
    cancellation that lands as their inner step completes; the task still counts it, so
    the listener checks, or ``asyncio.run`` could wait for it forever at shutdown."""
    cancelling = getattr(asyncio.current_task(), "cancelling", None)  # Python 3.11+
    if cancelling is not None and cancelling():
        raise asyncio.CancelledError


async def stop_listeners_of_running_loop() -> None:
    """Stop the listeners running in this loop (before it ends); they restart on use."""
    loop = asyncio.get_running_loop()
    for listener in list(_LIVE_LISTENERS):
        task = listener._task
        if task is not None and task.get_loop() is loop:
            await listener.stop()


def _after_fork_in_child() -> None:
    for listener in list(_LIVE_LISTENERS):
        listener.forget_after_fork()


in_forked_child(_after_fork_in_child)
