"""``RedisBackend``: bytes in Redis, every command bounded by one deadline.

What each command is guaranteed:

* One deadline (``operation_timeout``) covers waiting for a pooled connection, the one
  retry reads may get, and the I/O; when it runs out the caller gets ``BackendTimeout``.
* The pool waits for a free connection (within that deadline) instead of raising "too
  many connections" as redis-py's default pool does, and redis-py's own retries are off
  (``Redis(...)`` retries with backoff by default), so no hidden waits add up.
* A circuit breaker stops sending anything to a server that keeps failing and lets one
  probe through now and then; while it is open commands fail at once with
  ``BackendUnavailable``.
* Clients and pools belong to one event loop; each loop that uses the backend gets its
  own, and a process forked from another makes new ones instead of sharing sockets.
* Errors are translated here, most specific first, and never carry the password.

Sentinel and Cluster fit behind ``_client()``: it is the one place that turns the
configuration into a client for the running loop, and the commands below only use what
every redis-py client offers (pattern deletes and multi-key commands would then be done
per primary and per slot).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import sys
import time
import weakref
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from contextlib import aclosing
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoPermissionError, NoScriptError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from memo._clock import Clock
from memo._fork import in_forked_child, keep_from_parent
from memo._secrets import mask_url
from memo._urls import check_redis_url
from memo.backends.base import Backend
from memo.backends.invalidation import (
    encode_keys,
    encode_pattern,
    new_origin,
    stop_listeners_of_running_loop,
)
from memo.exceptions import BackendError, BackendTimeout, BackendUnavailable, ConfigError
from memo.resilience import CircuitBreaker, DeadlineWatchdog, run_with_deadline
from memo.stats import LatencyWindow

__all__ = ["RedisBackend"]

_log = logging.getLogger("memo")

T = TypeVar("T")

_SCAN_COUNT = 1000
_UNLINK_CHUNK = 500


# A write and the PUBLISH announcing it, as one command. Pipelined instead, announcing
# cost 91 µs a write (median) over memo's unannounced SET; as a script, 23 to 46 µs in
# three runs (benchmarks/redis_writes.py). PUBLISH goes through pcall, so that a server refusing it
# (an ACL) still applies the write and says so in the reply.
# Both reply {what the write returned, 'OK' or PUBLISH's error}; the channel and the
# message are the last two arguments.
_SET_AND_ANNOUNCE = """
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
local sent = redis.pcall('PUBLISH', ARGV[3], ARGV[4])
if type(sent) == 'table' and sent.err then return {1, sent.err} end
return {1, 'OK'}
"""
_UNLINK_AND_ANNOUNCE = """
local removed = redis.call('UNLINK', unpack(KEYS))
local sent = redis.pcall('PUBLISH', ARGV[1], ARGV[2])
if type(sent) == 'table' and sent.err then return {removed, sent.err} end
return {removed, 'OK'}
"""
_SHA1 = {s: hashlib.sha1(s.encode()).hexdigest() for s in (_SET_AND_ANNOUNCE, _UNLINK_AND_ANNOUNCE)}


def _database_of(url: str) -> str:
    """The database number of a Redis URL (path ``/3`` or, for sockets, ``?db=3``)."""
    parts = urlsplit(url)
    path = parts.path.strip("/")
    if parts.scheme != "unix" and path.isdigit():
        return path
    for pair in parts.query.split("&"):
        name, _, value = pair.partition("=")
        if name == "db" and value.isdigit():
            return value
    return "0"


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _no_retry() -> Retry:
    return Retry(NoBackoff(), 0)


_LIVE_BACKENDS: weakref.WeakSet[RedisBackend] = weakref.WeakSet()


class _ReadBatch:
    """Reads of one event loop waiting to go out together as one MGET."""

    __slots__ = ("in_flight", "scheduled", "tasks", "waiting")

    def __init__(self) -> None:
        self.in_flight = 0
        self.scheduled = False
        self.waiting: dict[str, list[asyncio.Future[bytes | None]]] = {}
        self.tasks: set[asyncio.Task[None]] = set()


async def release_loop_connections() -> None:
    """Close the running loop's connections of every Redis backend (see ``release_loop``)."""
    await stop_listeners_of_running_loop()
    for backend in list(_LIVE_BACKENDS):
        await backend.release_loop()


def _after_fork_in_child() -> None:
    for backend in list(_LIVE_BACKENDS):
        backend._forget_clients()


# Checked once per fork rather than with a getpid() call on every command.
in_forked_child(_after_fork_in_child)


class RedisBackend(Backend):
    """Bytes in a Redis server (``redis://``, ``rediss://`` or ``unix://``)."""

    name = "redis"

    def __init__(
        self,
        url: str,
        *,
        connect_timeout: float = 1.0,
        operation_timeout: float = 0.5,
        max_connections: int = 50,
        use_tls: bool | None = None,
        ssl_ca_certs: str | None = None,
        ssl_certfile: str | None = None,
        ssl_keyfile: str | None = None,
        breaker: CircuitBreaker | None = None,
        clock: Clock = time.monotonic,
        client_factory: Callable[[], aioredis.Redis] | None = None,
    ) -> None:
        check_redis_url(url)
        for arg, value in (
            ("connect_timeout", connect_timeout),
            ("operation_timeout", operation_timeout),
        ):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"{arg}={value!r}: seconds, more than 0")
        if not isinstance(max_connections, int) or max_connections < 1:
            raise ConfigError(f"max_connections={max_connections!r}: an int of at least 1")
        parts = urlsplit(url)
        if use_tls and parts.scheme == "redis":
            url = urlunsplit(("rediss", *parts[1:]))
        self._url = url
        self.masked_url = mask_url(url)
        self._password = parts.password
        self.connect_timeout = float(connect_timeout)
        self.operation_timeout = float(operation_timeout)
        self.max_connections = max_connections
        self.tls = urlsplit(url).scheme == "rediss"
        self._ssl: dict[str, Any] = {}
        if self.tls:
            self._ssl = {
                k: v
                for k, v in (
                    ("ssl_ca_certs", ssl_ca_certs),
                    ("ssl_certfile", ssl_certfile),
                    ("ssl_keyfile", ssl_keyfile),
                )
                if v is not None
            }
        self.breaker = breaker or CircuitBreaker(clock=clock)
        self._clock = clock
        self.latency = LatencyWindow()
        self.connected = False
        # Writes are announced on this channel (with this backend's origin, so that its
        # own memory tier can skip them) when ``announce`` is on; see invalidation.py.
        self.origin = new_origin()
        self.invalidation_channel = f"memo:invalidations:{_database_of(url)}"
        self.announce = False
        self._scripts = True  # until the server refuses EVALSHA
        # Builds the client of one event loop; the default reads the URL. The seam where
        # Sentinel and Cluster clients (and fakeredis in unit tests) come in.
        self._client_factory = client_factory or self._client_from_url
        self._pid = os.getpid()
        _LIVE_BACKENDS.add(self)
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aioredis.Redis] = (
            weakref.WeakKeyDictionary()
        )
        self._batches: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _ReadBatch] = (
            weakref.WeakKeyDictionary()
        )
        self._watchdogs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, DeadlineWatchdog] = (
            weakref.WeakKeyDictionary()
        )

    # ------------------------------------------------------------------ plumbing

    def _forget_clients(self) -> None:
        """In a forked child: never write to the parent's sockets, nor drop them (see
        memo._fork); make new ones."""
        for per_loop in (self._clients, self._batches, self._watchdogs):
            keep_from_parent(per_loop.values())
        self._pid = os.getpid()
        # Siblings forked from one parent must not take each other's announcements
        # for their own.
        self.origin = new_origin()
        self._clients = weakref.WeakKeyDictionary()
        self._batches = weakref.WeakKeyDictionary()
        self._watchdogs = weakref.WeakKeyDictionary()

    def _client(self) -> aioredis.Redis:
        """The client of the running loop (made on first use; new after a fork)."""
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            client = self._clients[loop] = self._client_factory()
        return client

    def _client_from_url(self) -> aioredis.Redis:
        pool = aioredis.BlockingConnectionPool.from_url(
            self._url,
            max_connections=self.max_connections,
            timeout=self.operation_timeout,  # wait for a free connection, within the deadline
            socket_connect_timeout=self.connect_timeout,
            # No socket_timeout: the operation deadline already bounds every read, and a
            # second timer per command costs measurably on the hit path.
            retry=_no_retry(),
            **self._ssl,
        )
        return aioredis.Redis(connection_pool=pool, retry=_no_retry())

    def _scrub(self, text: str) -> str:
        return text.replace(self._password, "***") if self._password else text

    async def _run(
        self, what: str, command: Callable[[aioredis.Redis], Awaitable[T]], *, read: bool = False
    ) -> T:
        if not self.breaker.allow():
            raise BackendUnavailable(
                f"Redis at {self.masked_url} is not being sent commands after repeated "
                f"failures; memo probes it every {self.breaker.reset_timeout:g} s"
            )
        client = self._client()
        started = self._clock()
        try:
            if sys.version_info >= (3, 11):
                result = await self._watched_attempt(command, client, read)
            else:  # pragma: no cover - Python 3.10
                result = await run_with_deadline(
                    self._attempt(command, client, read), self.operation_timeout, f"Redis {what}"
                )
        except TimeoutError as exc:  # asyncio.timeout's; BackendTimeout is not a TimeoutError
            self._failed()
            raise BackendTimeout(
                f"Redis {what} did not finish within {self.operation_timeout:g} s: the server "
                f"is slow or unreachable; raise operation_timeout if it is merely slow"
            ) from exc
        except BackendTimeout:
            self._failed()
            raise
        except RedisTimeoutError as exc:
            self._failed()
            raise BackendTimeout(
                f"Redis {what} at {self.masked_url} timed out: {self._scrub(str(exc))}"
            ) from exc
        except (RedisConnectionError, OSError) as exc:
            self._failed()
            raise BackendUnavailable(
                f"Redis at {self.masked_url} is unreachable ({type(exc).__name__}: "
                f"{self._scrub(str(exc))}); check that it runs and that redis_url is right"
            ) from exc
        except RedisError as exc:
            # The server answered, with an error: not an outage, so the breaker stays shut.
            self.breaker.record_success()
            raise BackendError(
                f"Redis {what} failed: {type(exc).__name__}: {self._scrub(str(exc))}"
            ) from exc
        finally:
            # Timed-out and failed commands count too: they are what an operator sees.
            self.latency.record(self._clock() - started)
        self.breaker.record_success()
        self.connected = True
        return result

    async def _watched_attempt(
        self, command: Callable[[aioredis.Redis], Awaitable[T]], client: aioredis.Redis, read: bool
    ) -> T:
        """``_attempt`` under the operation deadline, kept by the loop's watchdog."""
        task = asyncio.current_task()
        assert task is not None
        loop = task.get_loop()
        watchdog = self._watchdogs.get(loop)
        if watchdog is None:
            watchdog = self._watchdogs[loop] = DeadlineWatchdog(loop)
        watchdog.watch(task, self.operation_timeout)
        try:
            try:
                return await self._attempt(command, client, read)
            finally:
                watchdog.unwatch(task)
        except asyncio.CancelledError:
            if watchdog.expired(task):
                raise TimeoutError from None
            raise

    @staticmethod
    async def _attempt(
        command: Callable[[aioredis.Redis], Awaitable[T]], client: aioredis.Redis, read: bool
    ) -> T:
        try:
            return await command(client)
        except (RedisConnectionError, OSError):
            if not read:
                raise
        return await command(client)  # reads get one retry, inside the same deadline

    def _failed(self) -> None:
        self.breaker.record_failure()
        self.connected = False

    # ------------------------------------------------------------------ commands

    async def get(self, key: str) -> bytes | None:
        """GET when the backend is idle; while a command is in flight, join the next MGET.

        Concurrent readers (a burst of cache misses, a fan-out) then cost one round trip
        per loop tick instead of one each, and a lone reader waits for nothing.
        """
        loop = asyncio.get_running_loop()
        batch = self._batches.get(loop)
        if batch is None:
            batch = self._batches[loop] = _ReadBatch()
        if batch.in_flight == 0 and not batch.waiting:
            batch.in_flight += 1
            try:
                data: Any = await self._run("GET", lambda c: c.get(key), read=True)
                return data  # type: ignore[no-any-return]
            finally:
                batch.in_flight -= 1
        future: asyncio.Future[bytes | None] = loop.create_future()
        batch.waiting.setdefault(key, []).append(future)
        if not batch.scheduled:
            batch.scheduled = True
            loop.call_soon(self._send_batch, loop, batch)
        return await future

    def _send_batch(self, loop: asyncio.AbstractEventLoop, batch: _ReadBatch) -> None:
        waiting, batch.waiting = batch.waiting, {}
        batch.scheduled = False
        batch.in_flight += 1
        task = loop.create_task(self._mget_for(waiting, batch))
        batch.tasks.add(task)
        task.add_done_callback(batch.tasks.discard)

    async def _mget_for(
        self, waiting: dict[str, list[asyncio.Future[bytes | None]]], batch: _ReadBatch
    ) -> None:
        keys = list(waiting)
        try:
            values = await self.get_many(keys)
        except BaseException as exc:
            for futures in waiting.values():
                for future in futures:
                    if not future.done():
                        future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
        else:
            for key, value in zip(keys, values, strict=True):
                for future in waiting[key]:
                    if not future.done():  # a cancelled reader has gone
                        future.set_result(value)
        finally:
            batch.in_flight -= 1

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []
        found: Any = await self._run("MGET", lambda c: c.mget(list(keys)), read=True)
        return found  # type: ignore[no-any-return]

    async def get_with_ttl(self, key: str) -> tuple[bytes | None, int | None]:
        """The value and its remaining milliseconds, in one round trip."""

        async def both(c: aioredis.Redis) -> list[Any]:
            async with c.pipeline(transaction=False) as pipe:
                pipe.get(key)
                pipe.pttl(key)
                return await pipe.execute()

        data, pttl = await self._run("GET+PTTL", both, read=True)
        return data, (pttl if pttl is not None and pttl > 0 else None)

    async def set(self, key: str, value: bytes, ttl_ms: int) -> None:
        if ttl_ms <= 0:
            raise ValueError(f"ttl_ms must be positive, got {ttl_ms}")
        if not self.announce:
            await self._run("SET", lambda c: c.set(key, value, px=ttl_ms))
            return

        await self._run(
            "SET+PUBLISH",
            lambda c: self._write_and_announce(
                c, _SET_AND_ANNOUNCE, [key], (value, ttl_ms), lambda p: p.set(key, value, px=ttl_ms)
            ),
        )

    async def set_many(self, items: Mapping[str, bytes], ttl_ms: int) -> None:
        if ttl_ms <= 0:
            raise ValueError(f"ttl_ms must be positive, got {ttl_ms}")
        if not items:
            return

        async def pipeline(c: aioredis.Redis) -> None:
            async with c.pipeline(transaction=False) as pipe:
                for key, value in items.items():
                    pipe.set(key, value, px=ttl_ms)
                if not self.announce:
                    await pipe.execute()
                    return
                pipe.publish(self.invalidation_channel, encode_keys(self.origin, list(items)))
                await self._execute_announced(pipe)

        await self._run("SET (pipelined)", pipeline)

    async def delete(self, key: str) -> bool:
        return bool(await self._unlink([key], announce=self.announce))

    async def delete_many(self, keys: Sequence[str]) -> int:
        return await self._unlink(keys, announce=self.announce)

    async def _unlink(self, keys: Sequence[str], *, announce: bool) -> int:
        """UNLINK in chunks; each chunk announced in its own round trip when asked."""
        removed = 0
        for start in range(0, len(keys), _UNLINK_CHUNK):
            chunk = list(keys[start : start + _UNLINK_CHUNK])
            if not announce:
                removed += await self._run("UNLINK", lambda c, ks=chunk: c.unlink(*ks))  # type: ignore[misc]
                continue

            removed += int(
                await self._run(
                    "UNLINK+PUBLISH",
                    lambda c, ks=chunk: self._write_and_announce(  # type: ignore[misc]
                        c, _UNLINK_AND_ANNOUNCE, ks, (), lambda p: p.unlink(*ks)
                    ),
                )
            )
        return removed

    async def _write_and_announce(
        self,
        c: aioredis.Redis,
        script: str,
        keys: list[str],
        args: tuple[Any, ...],
        write: Callable[[Any], object],
    ) -> Any:
        """One write of ``keys`` and its announcement: one EVALSHA of ``script``, or,
        where scripts are refused, ``write`` and PUBLISH pipelined. The write's reply."""
        message = encode_keys(self.origin, keys)
        if self._scripts:
            reply = await self._script(c, script, keys, (*args, self.invalidation_channel, message))
            if reply is not None:
                result, status = reply
                if status not in (b"OK", "OK"):
                    self._announcing_refused(ResponseError(_text(status)))
                return result
        async with c.pipeline(transaction=False) as pipe:
            write(pipe)
            pipe.publish(self.invalidation_channel, message)
            (result,) = await self._execute_announced(pipe)
            return result

    async def _script(
        self, c: aioredis.Redis, script: str, keys: Sequence[str], args: Sequence[Any]
    ) -> Any:
        """EVALSHA (loading the script when the server lacks it); None when scripts are
        refused (an ACL without them), after which this backend pipelines instead."""
        try:
            try:
                return await c.evalsha(_SHA1[script], len(keys), *keys, *args)
            except NoScriptError:
                await c.script_load(script)  # a new or restarted server
                return await c.evalsha(_SHA1[script], len(keys), *keys, *args)
        except ResponseError as exc:
            text = str(exc).lower()
            denied = isinstance(exc, NoPermissionError) or text.startswith("noperm")
            if not denied or not any(name in text for name in ("evalsha", "script", "eval")):
                raise
            self._scripts = False
            _log.info("memo: scripts refused by Redis at %s; pipelining", self.masked_url)
            return None

    async def _execute_announced(self, pipe: Any) -> list[Any]:
        """Run a pipeline ending in PUBLISH; the writes' results. A refused PUBLISH (an
        ACL without it, say) does not fail the write: announcing stops, once, loudly."""
        results: list[Any] = await pipe.execute(raise_on_error=False)
        written, published = results[:-1], results[-1]
        for result in written:
            if isinstance(result, Exception):
                raise result
        if isinstance(published, Exception):
            self._announcing_refused(published)
        return written

    def _announcing_refused(self, exc: Exception) -> None:
        if self.announce:
            self.announce = False
            _log.warning(
                "memo: Redis at %s refused PUBLISH on %s (%s): other processes' memory "
                "tiers will not hear of this process's writes and keep their copies for "
                "up to memory_max_ttl; allow PUBLISH on that channel, or set "
                "invalidation_channel=False where memory tiers are not shared",
                self.masked_url,
                self.invalidation_channel,
                self._scrub(f"{type(exc).__name__}: {exc}"),
            )

    async def _scan(self, pattern: str) -> AsyncGenerator[list[str], None]:
        """The keys matching ``pattern``, a SCAN batch at a time (never KEYS, which
        blocks the server); each batch has its own deadline."""
        cursor = 0
        while True:
            cursor, keys = await self._run(
                "SCAN",
                lambda c, cur=cursor: c.scan(cur, match=pattern, count=_SCAN_COUNT),  # type: ignore[misc]
                read=True,
            )
            if keys:
                yield [k.decode() if isinstance(k, bytes) else k for k in keys]
            if cursor == 0:
                return

    async def delete_pattern(self, pattern: str) -> int:
        """SCAN + UNLINK, batch by batch, each batch announced with its keys (so that a
        failure half-way leaves no deleted key unannounced); then the pattern itself,
        for copies of keys Redis no longer held. That last announcement is best effort:
        every deletion is already announced, so its failure is logged, not raised."""
        removed = 0
        async for keys in self._scan(pattern):
            removed += await self._unlink(keys, announce=self.announce)
        if self.announce:
            message = encode_pattern(self.origin, pattern)
            try:
                await self._run("PUBLISH", lambda c: c.publish(self.invalidation_channel, message))
            except (BackendUnavailable, BackendTimeout) as exc:
                _log.warning("memo: could not announce pattern %r (%s)", pattern, exc)
            except BackendError as exc:  # the server answered with an error: refused
                self._announcing_refused(exc)
        return removed

    async def scan_keys(self, pattern: str, limit: int) -> list[str]:
        """SCAN until ``limit`` keys are found or the keyspace is covered."""
        found: list[str] = []
        async with aclosing(self._scan(pattern)) as batches:
            async for keys in batches:
                found.extend(keys[: limit - len(found)])
                if len(found) >= limit:
                    break
        return found

    async def clear(self) -> None:
        """Remove every memo key (``memo:*``); other keys in the database are left alone."""
        await self.delete_pattern("memo:*")

    async def flush_database(self, confirm: str) -> None:
        """FLUSHDB, only when ``confirm`` names the database (``"db0"``, ``"db15"`` …)."""
        path = urlsplit(self._url).path.strip("/")
        db = f"db{path or 0}"
        if confirm != db:
            raise ConfigError(
                f"flush_database(confirm={confirm!r}) refused: it empties the whole "
                f"database, not just memo's keys; pass confirm={db!r} if you mean it"
            )
        await self._run("FLUSHDB", lambda c: c.flushdb())

    async def ttl(self, key: str) -> int | None:
        """Remaining milliseconds; None when missing (or, never written by memo, eternal)."""
        pttl = await self._run("PTTL", lambda c: c.pttl(key), read=True)
        return pttl if pttl > 0 else None

    async def server_info(self) -> dict[str, Any]:
        """The server's ``INFO`` (every section), under the operation deadline."""
        info = await self._run("INFO", lambda c: c.info("all"), read=True)
        return dict(info)

    async def ping(self) -> bool:
        """Whether the server answers now. Never raises."""
        try:
            return bool(await self._run("PING", lambda c: c.ping(), read=True))
        except BackendError:
            return False

    async def release_loop(self) -> None:
        """Close the running loop's connections; the backend stays usable and makes new
        ones on its next command. For code that runs each job in its own event loop
        (``asyncio.run`` per task), before that loop ends."""
        client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose(close_connection_pool=True)

    async def aclose(self) -> None:
        clients = list(self._clients.items())
        self._clients = weakref.WeakKeyDictionary()
        current = asyncio.get_running_loop()
        for loop, client in clients:
            if loop is current:
                await client.aclose(close_connection_pool=True)
            # Clients of other (possibly closed) loops cannot be awaited from here;
            # their sockets close when those loops and clients are collected.

    def __repr__(self) -> str:
        return f"RedisBackend({self.masked_url!r})"
