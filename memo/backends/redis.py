"""``RedisBackend``: bytes in Redis, every command bounded by one deadline.

What each command is guaranteed:

* One deadline (``operation_timeout``) covers waiting for a pooled connection, the one
  retry reads may get, and the I/O; when it runs out the caller gets ``BackendTimeout``.
* The pool waits for a free connection (within that deadline) instead of raising "too
  many connections" as redis-py's default pool does, and redis-py's own retries are off
  (``Redis(...)`` retries with backoff by default), so no hidden waits add up.
* A circuit breaker stops sending to a server that keeps failing, probing now and then;
  while it is open commands fail at once with ``BackendUnavailable``.
* Clients and pools belong to one event loop (each loop gets its own); a forked process
  makes new ones.
* Errors are translated here, most specific first, and never carry the password.

Reads are coalesced in _read_batch.py, writes in _write_batch.py; lone ones skip
redis-py (_direct.py); leases and tag sets are scripts in _leases.py; Sentinel:
_sentinel.py; a Redis Cluster: cluster.py, a subclass.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from functools import partial
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from memo._clock import Clock
from memo._fork import keep_from_parent
from memo._redis_options import RedisOptions
from memo.backends._announce import WriteAnnouncer
from memo.backends._attempts import Attempts
from memo.backends._counts import HashCommands
from memo.backends._direct import DirectCommands
from memo.backends._leases import LeaseCommands
from memo.backends._listeners import listener_for
from memo.backends._patterns import PatternCommands
from memo.backends._read_batch import ReadBatcher, get_with_ttl
from memo.backends._redis_errors import TRANSLATED, translate_error
from memo.backends._registry import register
from memo.backends._sentinel import sentinel_primary
from memo.backends._tracking import TrackingListener
from memo.backends._write_batch import WriteBatcher
from memo.backends.base import LEASE_SUFFIX, Backend
from memo.backends.invalidation import InvalidationListener
from memo.exceptions import BackendError, BackendTimeout, BackendUnavailable, ConfigError
from memo.resilience import CircuitBreaker
from memo.stats import LatencyWindow

__all__ = ["RedisBackend"]

_log = logging.getLogger("memo")

T = TypeVar("T")

_UNLINK_CHUNK = 500

# redis-py's own retries off: memo's one deadline (and one retry for reads) rules.
_no_retry = partial(Retry, NoBackoff(), 0)


class RedisBackend(PatternCommands, Backend):
    """Bytes in a Redis server (``redis://``, ``rediss://``, ``unix://``, or the primary
    a Sentinel set names, ``redis+sentinel://``).

    Args:
        options: the connection (``RedisOptions.from_url(url, ...)`` builds them).
        breaker: the circuit breaker; a new one by default.
        clock: monotonic seconds, for the breaker and latency figures.
        client_factory: builds the client of one event loop instead of ``options``
            (the seam for Sentinel and Cluster clients, and fakeredis in tests).
    """

    name = "redis"

    def __init__(
        self,
        options: RedisOptions,
        *,
        breaker: CircuitBreaker | None = None,
        clock: Clock = time.monotonic,
        client_factory: Callable[[], aioredis.Redis] | None = None,
    ) -> None:
        if not isinstance(options, RedisOptions):
            kind = type(options).__name__
            raise ConfigError(f"RedisBackend takes RedisOptions.from_url(url), not a {kind}")
        if options.url.cluster_nodes and type(self) is RedisBackend:
            raise ConfigError(
                f"{options.url.masked!r} is a Redis Cluster: build its backend with "
                f"memo.backends.cluster.RedisClusterBackend.from_url(url), or pass the URL "
                f"to GenericRedisCache or CacheFactory, which choose it"
            )
        self.options = options
        url = options.connection_url
        # memo's own connections (lone GETs and SETs, tracking) need one known server.
        own = client_factory is None and not url.sentinels
        self.masked_url = url.masked
        self._password = url.password
        self.connect_timeout = options.connect_timeout
        self.operation_timeout = options.operation_timeout
        self.max_connections = options.max_connections
        self.tls = url.tls
        self.breaker = breaker or CircuitBreaker(clock=clock)
        self._clock = clock
        self.latency = LatencyWindow()
        self.connected = False
        # The channel this database's writes are announced on (see invalidation.py).
        self.invalidation_channel = f"memo:invalidations:{url.database}"
        self.announcer = WriteAnnouncer(
            self.invalidation_channel,
            enabled=options.invalidation_channel,
            masked_url=self.masked_url,
            scrub=self.scrub,
            # Where memory tiers are told by the server, a write is announced only
            # while somebody listens on the channel (a tier the server refused
            # tracking, or one configured for the channel).
            count_listeners=self._count_channel_listeners
            if options.coherence == "tracking" and own
            else None,
        )
        self._leases = LeaseCommands(self.announcer, self._run)
        self.hashes = HashCommands(self._run)  # the SharedHashes capability
        self._direct = DirectCommands(options, scrub=self.scrub, enabled=own)
        self._writes = WriteBatcher(
            self.announcer,
            self._run,
            set_one=self._direct.set,
            where=self.masked_url,
            scrub=self.scrub,
            timeout=self.operation_timeout,
        )
        self._reads = ReadBatcher(self._get_one, self.get_many)
        self._reads_with_ttl = ReadBatcher(self._get_one_with_ttl, self._get_many_with_ttl)
        # Builds the client of one event loop; the default reads the options.
        self._client_factory = client_factory or self._client_from_options
        self._own_client = own
        register(self)
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aioredis.Redis] = (
            weakref.WeakKeyDictionary()
        )
        self._attempts = Attempts()

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        breaker: CircuitBreaker | None = None,
        clock: Clock = time.monotonic,
        client_factory: Callable[[], aioredis.Redis] | None = None,
        **options: Any,
    ) -> RedisBackend:
        """``RedisBackend(RedisOptions.from_url(url, **options), ...)``.

        Raises:
            ConfigError: a bad URL or option, named.
        """
        parsed = RedisOptions.from_url(url, **options)
        return cls(parsed, breaker=breaker, clock=clock, client_factory=client_factory)

    @property
    def announce(self) -> bool:
        """Whether writes are announced: ``options.invalidation_channel``, until the
        server refuses PUBLISH."""
        return self.announcer.enabled

    @property
    def origin(self) -> str:
        """This backend's id in announcements (new in a forked child)."""
        return self.announcer.origin

    def invalidation_listener(
        self,
        *,
        on_keys: Callable[[list[str]], None],
        on_pattern: Callable[[str], None],
        on_flush: Callable[[], None],
        on_trust: Callable[[bool], None],
        heartbeat: float = 1.0,
        on_key: Callable[[str], None] | None = None,
    ) -> InvalidationListener | TrackingListener | None:
        """A listener for a memory tier in front of this backend (see _listeners.py);
        None when ``options.invalidation_channel`` is off."""
        return listener_for(
            self,
            own_client=self._own_client,
            on_keys=on_keys,
            on_pattern=on_pattern,
            on_flush=on_flush,
            on_trust=on_trust,
            heartbeat=heartbeat,
            on_key=on_key,
        )

    async def _count_channel_listeners(self) -> int:
        """How many connections are subscribed to the invalidation channel."""
        reply = await self._run(
            "PUBSUB NUMSUB", lambda c: c.pubsub_numsub(self.invalidation_channel), read=True
        )
        return int(reply[0][1]) if reply else 0

    # ------------------------------------------------------------------ plumbing
    def forget_after_fork(self) -> None:
        """In a forked child: never write to the parent's sockets, nor drop them (see
        memo._fork); make new ones."""
        keep_from_parent(self._clients.values())
        self._attempts.forget_after_fork()
        self._reads.forget_after_fork()
        self._leases.forget_after_fork()
        self._writes.forget_after_fork()
        self._reads_with_ttl.forget_after_fork()
        self.announcer.new_origin()
        self._direct.forget_after_fork()
        self._clients = weakref.WeakKeyDictionary()

    def client(self) -> aioredis.Redis:
        """The redis-py client of the running loop (made on first use; new after a fork).

        Commands sent through it bypass the deadline, the breaker and error translation.
        """
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            client = self._clients[loop] = self._client_factory()
        return client

    def _client_from_options(self) -> aioredis.Redis:
        if self.options.url.sentinels:  # the primary the Sentinels name, followed on failover
            return sentinel_primary(self.options, _no_retry())
        pool = aioredis.BlockingConnectionPool.from_url(
            self.options.connection_url.client_url,
            max_connections=self.max_connections,
            timeout=self.operation_timeout,  # wait for a free connection, within the deadline
            socket_connect_timeout=self.connect_timeout,
            # No socket_timeout: the operation deadline already bounds every read, and a
            # second timer per command costs measurably on the hit path.
            retry=_no_retry(),
            **self.options.ssl_arguments(),
        )
        return aioredis.Redis(connection_pool=pool, retry=_no_retry())

    def scrub(self, text: str) -> str:
        """``text`` with the connection's password replaced by ``***``."""
        return text.replace(self._password, "***") if self._password else text

    def _run(
        self, what: str, command: Callable[[aioredis.Redis], Awaitable[T]], *, read: bool = False
    ) -> Coroutine[Any, Any, T]:
        # Not a coroutine itself: no second frame on the hit path.
        return self._run_on(self.breaker, what, command, read=read)

    async def _run_on(
        self,
        breaker: CircuitBreaker,
        what: str,
        command: Callable[[aioredis.Redis], Awaitable[T]],
        *,
        read: bool = False,
    ) -> T:
        """``command`` under the deadline, ``breaker`` (a cluster's node has its own)
        and error translation."""
        if not breaker.allow():
            raise BackendUnavailable(
                f"Redis at {self.masked_url} is not being sent commands after repeated "
                f"failures; memo probes it every {breaker.reset_timeout:g} s"
            )
        client = self.client()
        started = self._clock()
        try:
            result = await self._attempts.run(
                command, client, read=read, seconds=self.operation_timeout, what=f"Redis {what}"
            )
        except BackendTimeout:
            self._failed(breaker)
            raise
        except TRANSLATED as exc:
            error, outage = translate_error(
                exc,
                what=what,
                where=self.masked_url,
                scrub=self.scrub,
                timeout=self.operation_timeout,
            )
            if outage:
                self._failed(breaker)
            else:  # the server answered, with an error: the breaker stays shut
                breaker.record_success()
            raise error from exc
        finally:
            # Timed-out and failed commands count too: they are what an operator sees.
            self.latency.record(self._clock() - started)
        breaker.record_success()
        self.connected = True
        return result

    def _failed(self, breaker: CircuitBreaker) -> None:
        breaker.record_failure()
        self.connected = False

    # ------------------------------------------------------------------ commands

    async def get(self, key: str) -> bytes | None:
        """GET when the backend is idle; while a command is in flight, join the next MGET
        (see _read_batch.py)."""
        return await self._reads.get(key)

    async def _get_one(self, key: str) -> bytes | None:
        direct = self._direct
        return await self._run("GET", lambda c: direct.get(c, key), read=True)

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []
        found: Any = await self._run("MGET", lambda c: c.mget(list(keys)), read=True)
        return found  # type: ignore[no-any-return]

    async def get_with_ttl(self, key: str) -> tuple[bytes | None, int | None]:
        """The value and its remaining milliseconds, in one round trip; concurrent
        readers share it (one pipeline of GET and PTTL per distinct key)."""
        return await self._reads_with_ttl.get(key)

    async def _get_many_with_ttl(
        self, keys: Sequence[str]
    ) -> list[tuple[bytes | None, int | None]]:
        return await self._run("GET+PTTL", lambda c: get_with_ttl(c, keys), read=True)

    async def _get_one_with_ttl(self, key: str) -> tuple[bytes | None, int | None]:
        (found,) = await self._get_many_with_ttl([key])
        return found

    async def set(self, key: str, value: bytes, ttl_ms: int) -> None:
        """SET (announced when announcing) when no write is in flight; while one is,
        join the next pipeline of writes (see _write_batch.py)."""
        if ttl_ms <= 0:
            raise ValueError(f"ttl_ms must be positive, got {ttl_ms}")
        await self._writes.set(key, value, ttl_ms)

    async def set_many(self, items: Mapping[str, bytes], ttl_ms: int) -> None:
        if ttl_ms <= 0:
            raise ValueError(f"ttl_ms must be positive, got {ttl_ms}")
        if not items:
            return
        announcer = self.announcer
        await self._run("SET (pipelined)", lambda c: announcer.set_many(c, items, ttl_ms))

    async def delete(self, key: str) -> bool:
        return bool(await self._unlink([key]))

    async def delete_many(self, keys: Sequence[str]) -> int:
        return await self._unlink(keys)

    async def _unlink(self, keys: Sequence[str]) -> int:
        """UNLINK in chunks, each key's lease with it (a computation of a key deleted
        meanwhile must not store); each chunk announced in its own round trip when
        announcing. How many of ``keys`` were there."""
        announcer = self.announcer
        removed = 0
        for start in range(0, len(keys), _UNLINK_CHUNK):
            chunk = list(keys[start : start + _UNLINK_CHUNK])
            leases = [self._leases.lease_key(key) for key in chunk]
            removed += await self._run(
                "UNLINK",
                lambda c, ks=chunk, ls=leases: announcer.unlink(c, ks, ls),  # type: ignore[misc]
            )
        return removed

    # ------------------------------------------------------------------ leases, tag sets

    @property
    def shares_leases(self) -> bool:
        """Leases and tag sets need scripts; True until the server refuses them."""
        return self.announcer.scripts_allowed

    async def acquire_lease(
        self,
        key: str,
        token: str,
        lease_ms: int,
        tag_sets: Sequence[str],
        expect: tuple[int, bytes] | None,
    ) -> int:
        return await self._leases.acquire(key, token, lease_ms, tag_sets, expect)

    async def renew_lease(
        self, key: str, token: str, lease_ms: int, tag_sets: Sequence[str]
    ) -> bool:
        return await self._leases.renew(key, token, lease_ms, tag_sets)

    async def release_lease(self, key: str, token: str) -> None:
        await self._leases.release(key, token)

    async def store_leased(
        self,
        key: str,
        value: bytes,
        ttl_ms: int,
        token: str,
        expect: tuple[int, bytes],
        tag_sets: Sequence[str],
    ) -> bool:
        return await self._leases.store(key, value, ttl_ms, token, expect, tag_sets)

    async def invalidate_tag(self, tag_set: str) -> tuple[int, list[str]]:
        return await self._leases.invalidate_tag(tag_set)

    async def tag_members(self, tag_set: str) -> list[str]:
        """The entries ``tag_set`` names (leases of computations left out)."""
        found = await self._run("ZRANGE", lambda c: c.zrange(tag_set, 0, -1), read=True)
        names = [k.decode() if isinstance(k, bytes) else str(k) for k in found]
        return [name for name in names if not name.endswith(LEASE_SUFFIX)]

    async def flush_database(self, confirm: str) -> None:
        """FLUSHDB, only when ``confirm`` names the database (``"db0"``, ``"db15"`` …)."""
        db = f"db{self.options.url.database}"
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
            await self.check()
        except BackendError:
            return False
        return True

    async def check(self) -> None:
        """PING; the ``BackendError`` saying why when the server cannot be used."""
        await self._run("PING", lambda c: c.ping(), read=True)

    async def release_loop(self) -> None:
        """Close the running loop's connections; the backend stays usable and makes new
        ones on its next command. For code that runs each job in its own event loop
        (``asyncio.run`` per task), before that loop ends."""
        await self._direct.release_loop()
        client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose(close_connection_pool=True)

    async def aclose(self) -> None:
        await self._direct.release_loop()
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
