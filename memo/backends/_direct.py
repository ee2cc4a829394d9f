"""Lone GETs and SETs over memo's own RESP3 connection instead of redis-py's.

A command through redis-py's asyncio client costs its caller tens of microseconds of
Python before and after the round trip (pool checkout, argument packing, response
callbacks), as much as a whole local round trip is worth again. A cache's lone read
or write, the commonest Redis call memo makes, goes over a connection of memo's own
(``_resp.py``) instead, one per event loop; batches, pipelines and scripts stay with
redis-py.

Nothing about a command's guarantees changes: it still runs inside ``RedisBackend._run``
(deadline, breaker, error translation, one retry for reads). Until the running loop's
connection is open (it opens in the background on first use) the command goes through
redis-py, and so does any command the server answers with an error, so that error is
raised and translated exactly as before. A lost connection raises redis-py's
``ConnectionError``; a request still unanswered when its deadline ends drops the
connection (a hung server), and the next command opens another.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from memo._fork import keep_from_parent
from memo._redis_options import RedisOptions
from memo.backends._resp import RespConnection, ServerError
from memo.backends._resp_session import Refused, open_session

__all__ = ["DirectCommands"]

_log = logging.getLogger("memo")

_RETRY_AFTER = 1.0  # seconds between attempts to open a connection that failed to open


class _NoAnswer(ConnectionError):
    """What the requests on a connection dropped for a hung server fail with."""


class DirectCommands:
    """GET and SET for one ``RedisBackend`` over memo's own connections (see the module
    doc). ``client`` arguments are the redis-py client the command falls back to."""

    def __init__(
        self, options: RedisOptions, *, scrub: Callable[[str], str], enabled: bool = True
    ) -> None:
        self._options = options
        self._scrub = scrub
        self._stuck_after = 0.9 * options.operation_timeout
        # False for a client_factory's client (Sentinel, Cluster, fakeredis), and once
        # the server refuses RESP3 (before Redis 6): then every command is redis-py's.
        self._enabled = enabled
        self._connections: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, RespConnection] = (
            weakref.WeakKeyDictionary()
        )
        self._opening: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Task[None]] = (
            weakref.WeakKeyDictionary()
        )
        self._next_try: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, float] = (
            weakref.WeakKeyDictionary()
        )

    # ------------------------------------------------------------------ commands

    async def get(self, client: Any, key: str) -> bytes | None:
        connection = self._connection()
        if connection is None:
            data: bytes | None = await client.get(key)
            return data
        reply = await self._ask(connection, (b"GET", key))
        if isinstance(reply, ServerError):
            return await client.get(key)  # type: ignore[no-any-return]  # raises it, translated
        return reply  # type: ignore[no-any-return]

    async def set(self, client: Any, key: str, value: bytes, ttl_ms: int) -> None:
        # Anything but bytes and a whole number of ms is redis-py's to refuse or convert.
        plain = type(value) is bytes and type(ttl_ms) is int
        connection = self._connection() if plain else None
        if connection is None:
            await client.set(key, value, px=ttl_ms)
            return
        reply = await self._ask(connection, (b"SET", key, value, b"PX", ttl_ms))
        if isinstance(reply, ServerError):
            await client.set(key, value, px=ttl_ms)  # raises it, translated

    async def _ask(self, connection: RespConnection, command: tuple[Any, ...]) -> Any:
        try:
            (reply,) = connection.request(command)
            return await reply
        except _NoAnswer as exc:
            # The server hangs: not a connection error a read may retry (the retry
            # could go through redis-py, whose handshake a hung server never answers).
            raise RedisTimeoutError(str(exc)) from exc
        except ConnectionError as exc:
            raise RedisConnectionError(str(exc)) from exc
        except asyncio.CancelledError:
            # The deadline (or the caller) gave up on it; if the oldest request is this
            # late, the server is not answering: drop the connection, the next opens anew.
            sent = connection.oldest_sent_at
            if sent is not None and connection.loop.time() - sent >= self._stuck_after:
                connection.abort(_NoAnswer("Redis did not answer in time"))
            raise

    # ------------------------------------------------------------------ connections

    def _connection(self) -> RespConnection | None:
        """The running loop's open connection; None while it opens (or cannot)."""
        if not self._enabled:
            return None
        loop = asyncio.get_running_loop()
        connection = self._connections.get(loop)
        if connection is not None and connection.is_open:
            return connection
        if (
            self._enabled
            and loop not in self._opening
            and loop.time() >= self._next_try.get(loop, 0.0)
        ):
            self._opening[loop] = loop.create_task(self._open(loop), name="memo connect")
        return None

    async def _open(self, loop: asyncio.AbstractEventLoop) -> None:
        # A connection references its loop, so a closed loop's entry would stay forever
        # (where loops end without release_connections()): drop those now.
        for old in list(self._connections.keys()):
            if old.is_closed():
                del self._connections[old]
        try:
            self._connections[loop] = await open_session(
                self._options, name="memo", scrub=self._scrub
            )
        except Refused as exc:
            self._enabled = False
            _log.info("memo: commands go through redis-py alone (%s)", exc)
        except Exception:
            self._next_try[loop] = loop.time() + _RETRY_AFTER
        finally:
            self._opening.pop(loop, None)

    async def release_loop(self) -> None:
        """Close the running loop's connection (before that loop ends)."""
        loop = asyncio.get_running_loop()
        opening = self._opening.pop(loop, None)
        if opening is not None and not opening.done():
            opening.cancel()
            await asyncio.wait({opening})
        connection = self._connections.pop(loop, None)
        if connection is not None:
            connection.abort(ConnectionError("closed"))

    def forget_after_fork(self) -> None:
        """In a forked child: the parent's sockets are not ours (see memo._fork)."""
        keep_from_parent([*self._connections.values(), *self._opening.values()])
        self._connections = weakref.WeakKeyDictionary()
        self._opening = weakref.WeakKeyDictionary()
        self._next_try = weakref.WeakKeyDictionary()
