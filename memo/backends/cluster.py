"""``RedisClusterBackend``: memo's Redis backend over a Redis Cluster (``redis+cluster://``).

redis-py's ``RedisCluster`` knows the slot map, routes each command by its key and
follows ``MOVED`` and ``ASK``; memo builds on it and adds what a cache needs:

* **Lanes.** Work is split by the primary serving each key, as redis-py's slot map says.
  Each primary has its own batches (concurrent reads of its keys share one round trip,
  one pipeline of per-slot ``MGET``s; writes share one pipeline of per-slot scripts) and
  its own circuit breaker, so a node lost is an outage of the keys it serves, not of the
  cache. Commands that span the cluster (pattern deletes, tag invalidation, reports) run
  under the backend's own breaker.
* **A lease beside its entry.** A lease lives at ``{key}#lease``, which hashes to the
  key's own slot, so the lease and store scripts touch one slot (a key carrying its own
  ``{tag}`` keeps ``key#lease``). Nothing else shares a slot on purpose: a function's
  keys and a tag's members spread over every primary. Tag sets: ``_cluster_tags.py``.
* **Pattern deletes and key listings** SCAN every primary.
* **Coherence by the channel.** Memory tiers hear writes on the invalidation channel:
  a cluster delivers a classic ``PUBLISH`` to subscribers on every node, so a tier
  subscribes on any one primary (another when that one fails), and each write's
  announcement is made by the same script as the write. Server-assisted tracking would
  need a connection per primary and reads routed through them by hand, and sharded
  pub/sub a subscription per shard re-made after every reshard; both are left out.
* **Nothing redis-py raises escapes untranslated.** Mid-reshard or mid-failover its
  cluster client has raised ``AttributeError`` and ``KeyError`` from inside; whatever it
  raises becomes a ``BackendError`` (an outage, for the breaker), and the client's first
  use in a loop waits for its slot map before anything is sent (``_cluster_client.py``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from functools import partial
from typing import Any, TypeVar, cast

from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisClusterException, RedisError

from memo._clock import Clock
from memo._redis_options import RedisOptions
from memo.backends._cluster_client import ClusterClient, guarded, nothing, passed_on, sum_node_info
from memo.backends._cluster_keys import cluster_lease_key, slot_of
from memo.backends._cluster_tags import ClusterTagSets
from memo.backends._leases import LeaseCommands
from memo.backends._patterns import SCAN_COUNT
from memo.backends._read_batch import ReadBatcher, get_with_ttl
from memo.backends._write_batch import WriteBatcher
from memo.backends.base import LEASE_SUFFIX
from memo.backends.redis import RedisBackend
from memo.exceptions import BackendError, ConfigError
from memo.resilience import CircuitBreaker

__all__ = ["RedisClusterBackend", "cluster_lease_key", "slot_of"]

T = TypeVar("T")

#: Groups of keys per UNLINK round trip.
_UNLINK_GROUPS = 500


async def _get_each(c: Any, keys: Sequence[str]) -> list[bytes | None]:
    """One GET per key, pipelined: a round trip per node. Not MGET per slot: while a
    slot migrates, a multi-key read of keys split between the nodes is refused
    (TRYAGAIN), where a single key is simply redirected (ASK)."""
    async with c.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.execute_command("GET", key)
        return list(await pipe.execute())


async def _set_one(c: Any, key: str, value: bytes, ttl_ms: int) -> None:
    await c.set(key, value, px=ttl_ms)


class _Lane:
    """One primary's share of the work: its breaker, its reads, writes and leases."""

    def __init__(self, backend: RedisClusterBackend, name: str) -> None:
        self.name = name
        self.breaker = CircuitBreaker(
            failure_threshold=backend.breaker.failure_threshold,
            reset_timeout=backend.breaker.reset_timeout,
            clock=backend.lane_clock,
        )
        run = self.run = partial(backend.run_on, self.breaker, scope=name)
        self.reads: ReadBatcher[bytes | None] = ReadBatcher(
            lambda key: run("GET", lambda c: c.get(key), read=True),
            lambda keys: run("GET (pipelined)", lambda c: _get_each(c, keys), read=True),
            alone_first=False,
        )
        self.reads_with_ttl: ReadBatcher[tuple[bytes | None, int | None]] = ReadBatcher(
            self._read_one_with_ttl,
            lambda keys: run("GET+PTTL", lambda c: get_with_ttl(c, keys), read=True),
            alone_first=False,
        )
        self.writes = WriteBatcher(
            backend.announcer,
            run,
            set_one=_set_one,
            where=backend.masked_url,
            scrub=backend.scrub,
            timeout=backend.operation_timeout,
            slot_of=slot_of,
        )
        self.leases = LeaseCommands(backend.announcer, run, lease_key=cluster_lease_key)

    async def _read_one_with_ttl(self, key: str) -> tuple[bytes | None, int | None]:
        (found,) = await self.run("GET+PTTL", lambda c: get_with_ttl(c, [key]), read=True)
        return found

    def forget_after_fork(self) -> None:
        for part in (self.reads, self.reads_with_ttl, self.writes, self.leases):
            part.forget_after_fork()


class RedisClusterBackend(RedisBackend):
    """Bytes in a Redis Cluster, found from the nodes of a ``redis+cluster://`` URL.

    Args:
        options: the connection (``RedisOptions.from_url("redis+cluster://...")``);
            ``max_connections`` bounds each node's pool.
        breaker: the breaker of commands spanning the cluster; each primary gets its own
            (same threshold and probe interval) for the commands of its keys.
        clock: monotonic seconds, for the breakers and latency figures.
    """

    name = "redis-cluster"
    fails_in_parts = True

    def __init__(
        self,
        options: RedisOptions,
        *,
        breaker: CircuitBreaker | None = None,
        clock: Clock = time.monotonic,
        client_factory: Callable[[], Any] | None = None,
    ) -> None:
        if not isinstance(options, RedisOptions) or not options.url.cluster_nodes:
            shown = options.url.masked if isinstance(options, RedisOptions) else repr(options)
            raise ConfigError(
                f"RedisClusterBackend takes the options of a redis+cluster:// URL, not "
                f"{shown}; use RedisBackend for one server or a Sentinel set"
            )
        if client_factory is not None:
            raise ConfigError("RedisClusterBackend builds its own client: drop client_factory")
        super().__init__(options, breaker=breaker, clock=clock, client_factory=self._make_client)
        self.lane_clock = clock
        self._lanes: dict[str, _Lane] = {}
        self._tags = ClusterTagSets(self.announcer, self._across, self._unlink)

    def _make_client(self) -> Any:
        url = self.options.url
        passed = passed_on(url.options)
        return ClusterClient(
            subscriber=dict(
                username=url.username,
                password=url.password,
                socket_connect_timeout=self.connect_timeout,
                retry=Retry(NoBackoff(), 0),
                **passed,
            ),
            startup_nodes=[ClusterNode(host, port) for host, port in url.cluster_nodes],
            username=url.username,
            password=url.password,
            # A lost node must not stop the others' slots being served.
            require_full_coverage=False,
            max_connections=self.max_connections,
            socket_connect_timeout=self.connect_timeout,
            socket_timeout=None,  # the operation deadline bounds every command
            retry=Retry(NoBackoff(), 0),
            **passed,
        )

    # ------------------------------------------------------------------ plumbing

    async def run_on(
        self,
        breaker: CircuitBreaker,
        what: str,
        command: Callable[[Any], Awaitable[T]],
        *,
        read: bool = False,
        scope: str = "",
    ) -> T:
        """``command`` under the deadline, ``breaker`` and error translation; its error
        names ``scope`` (a node) as the part of the cluster that failed."""
        try:
            return await self._run_on(breaker, what, command, read=read)
        except BackendError as exc:
            exc.scope = scope
            raise

    async def _run_on(
        self,
        breaker: CircuitBreaker,
        what: str,
        command: Callable[[Any], Awaitable[T]],
        *,
        read: bool = False,
    ) -> T:
        return await super()._run_on(breaker, what, partial(guarded, command), read=read)

    async def _across(
        self, what: str, command: Callable[[Any], Awaitable[T]], *, read: bool = False
    ) -> T:
        """A command spanning the cluster, under the backend's own breaker."""
        return await self._run_on(self.breaker, what, command, read=read)

    async def _ready_client(self) -> ClusterClient:
        """The loop's client, its slot map read. A burst of first calls shares one read
        (and one failure, for the breaker), which each waits for within its deadline."""
        client = cast(ClusterClient, self.client())
        if client.ready:
            return client
        if client.starting is None:
            client.starting = asyncio.ensure_future(self._start(client))
        await asyncio.shield(client.starting)
        return client

    async def _start(self, client: ClusterClient) -> None:
        try:
            await self._across("CLUSTER SLOTS", nothing, read=True)
        finally:
            client.starting = None  # read, or failed: the next call asks again

    async def _lane(self, key: str) -> _Lane:
        """The lane of the primary serving ``key`` now (redis-py's slot map)."""
        client = await self._ready_client()
        try:
            node = client.get_node_from_key(key)
            name = node.name if node is not None else "?"
        except (RedisClusterException, RedisError):
            name = "?"  # slot not served: its commands fail in their own lane
        lane = self._lanes.get(name)
        if lane is None:
            lane = self._lanes[name] = _Lane(self, name)
        return lane

    def outage_scope(self, key: str) -> str:
        """The node serving ``key`` now: its lane's name (see _outage.py)."""
        client = cast(ClusterClient, self.client())
        if not client.ready:
            return ""
        try:
            node = client.get_node_from_key(key)
        except (RedisClusterException, RedisError):
            return ""
        return node.name if node is not None else ""

    def serves(self, scope: str) -> bool:
        client = cast(ClusterClient, self.client())
        return not client.ready or any(n.name == scope for n in client.get_primaries())

    def lanes(self) -> dict[str, str]:
        """Each primary this process has sent to, and its breaker's state."""
        return {name: lane.breaker.state for name, lane in sorted(self._lanes.items())}

    def forget_after_fork(self) -> None:
        super().forget_after_fork()
        for lane in self._lanes.values():
            lane.forget_after_fork()
        self._lanes = {}
        self._tags.forget_after_fork()

    # ------------------------------------------------------------------ keys

    async def get(self, key: str) -> bytes | None:
        return await (await self._lane(key)).reads.get(key)

    async def get_with_ttl(self, key: str) -> tuple[bytes | None, int | None]:
        return await (await self._lane(key)).reads_with_ttl.get(key)

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []
        found = await asyncio.gather(*(self.get(key) for key in keys))
        return list(found)

    async def set(self, key: str, value: bytes, ttl_ms: int) -> None:
        if ttl_ms <= 0:
            raise ValueError(f"ttl_ms must be positive, got {ttl_ms}")
        await (await self._lane(key)).writes.set(key, value, ttl_ms)

    async def set_many(self, items: Mapping[str, bytes], ttl_ms: int) -> None:
        """Each write joins its primary's batch (one script per slot, with its
        announcement); every write is sent even when one fails, and the first failure
        is raised."""
        if ttl_ms <= 0:
            raise ValueError(f"ttl_ms must be positive, got {ttl_ms}")
        results = await asyncio.gather(
            *(self.set(key, value, ttl_ms) for key, value in items.items()),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _unlink(self, keys: Sequence[str]) -> int:
        """UNLINK grouped by slot, each entry with its lease, each group's announcement
        in the same script; how many of ``keys`` were there."""
        groups: dict[int, tuple[list[str], list[str]]] = {}
        for key in keys:
            groups.setdefault(slot_of(key), ([], []))[0].append(key)
            lease = cluster_lease_key(key)
            groups.setdefault(slot_of(lease), ([], []))[1].append(lease)
        ordered = list(groups.values())
        announcer = self.announcer
        removed = 0
        for start in range(0, len(ordered), _UNLINK_GROUPS):
            chunk = ordered[start : start + _UNLINK_GROUPS]
            removed += await self._across(
                "UNLINK",
                lambda c, part=chunk: announcer.unlink_groups(c, part),  # type: ignore[misc]
            )
        return removed

    def _cold_leases(self, pattern: str) -> str | None:
        # Leases are {key}#lease here: the pattern itself never reaches them.
        return "{" + pattern + "}" + LEASE_SUFFIX

    async def _scan(self, pattern: str) -> Any:
        """The keys matching ``pattern`` on every primary, a SCAN batch at a time."""
        client = await self._ready_client()
        for node in client.get_primaries():
            cursor = 0
            while True:
                cursor, keys = await self._across(
                    "SCAN",
                    partial(_scan_step, node, cursor, pattern),
                    read=True,
                )
                if keys:
                    yield [k.decode() if isinstance(k, bytes) else k for k in keys]
                if cursor == 0:
                    break

    # ------------------------------------------------------------------ leases, tags

    async def acquire_lease(
        self,
        key: str,
        token: str,
        lease_ms: int,
        tag_sets: Sequence[str],
        expect: tuple[int, bytes] | None,
    ) -> int:
        if tag_sets:  # the lease enters its tags' sets first: an invalidation voids it
            await self._tags.enter(tag_sets, cluster_lease_key(key), lease_ms)
        return await (await self._lane(key)).leases.acquire(key, token, lease_ms, (), expect)

    async def renew_lease(
        self, key: str, token: str, lease_ms: int, tag_sets: Sequence[str]
    ) -> bool:
        renewed = await (await self._lane(key)).leases.renew(key, token, lease_ms, ())
        if renewed and tag_sets:
            await self._tags.enter(tag_sets, cluster_lease_key(key), lease_ms, renew=True)
        return renewed

    async def release_lease(self, key: str, token: str) -> None:
        await (await self._lane(key)).leases.release(key, token)

    async def store_leased(
        self,
        key: str,
        value: bytes,
        ttl_ms: int,
        token: str,
        expect: tuple[int, bytes],
        tag_sets: Sequence[str],
    ) -> bool:
        if tag_sets:  # membership first: an invalidation from now on reaches the entry
            await self._tags.record(tag_sets, key, cluster_lease_key(key), ttl_ms)
        lane = await self._lane(key)
        return await lane.leases.store(key, value, ttl_ms, token, expect, ())

    async def invalidate_tag(self, tag_set: str) -> tuple[int, list[str]]:
        return await self._tags.invalidate(tag_set)

    async def server_info(self) -> dict[str, Any]:
        """``INFO`` of every primary: the first one's text fields, the others' counters
        added in (memory, keys, hits, clients...), and ``cluster_primaries``."""
        await self._ready_client()
        primaries = RedisCluster.PRIMARIES
        replies = await self._across(
            "INFO", lambda c: c.info("all", target_nodes=primaries), read=True
        )
        return sum_node_info(list(replies.values()) if isinstance(replies, dict) else [replies])

    def __repr__(self) -> str:
        return f"RedisClusterBackend({self.masked_url!r})"


async def _scan_step(node: ClusterNode, cursor: int, pattern: str, c: Any) -> tuple[int, list[Any]]:
    cursors, keys = await c.scan(cursor, match=pattern, count=SCAN_COUNT, target_nodes=node)
    return int(next(iter(cursors.values()))), keys
