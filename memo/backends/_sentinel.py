"""The primary a Sentinel set names, as a redis-py client (``redis+sentinel://``).

redis-py's ``Sentinel.master_for`` asks the sentinels where the primary is before each
new connection. memo adds what a cache needs around it:

- callers wait (within the operation deadline) for a free connection rather than fail,
  and redis-py's own retries are off, as on any Redis connection;
- the primary's address is asked again at most every ``RECHECK_SECONDS`` when a
  connection is taken, and a connection to an earlier primary is dropped: after a
  graceful failover the old primary keeps accepting writes for seconds, and every write
  it takes then is lost when it turns replica;
- when no sentinel answers, the last primary they named is used, not nothing (the data
  node may well be up while the sentinels restart);
- a listed address that answers but is no sentinel (an error reply) is skipped like one
  that does not answer, instead of ending the search.
"""

from __future__ import annotations

import time
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.sentinel import MasterNotFoundError, Sentinel, SentinelConnectionPool
from redis.exceptions import RedisError

from memo._redis_options import RedisOptions

__all__ = ["RECHECK_SECONDS", "sentinel_primary"]

#: Seconds between two questions to the sentinels about where the primary is.
RECHECK_SECONDS = 1.0


class _Sentinels(Sentinel):
    async def discover_master(self, service_name: str) -> Any:
        problems = []
        for sentinel in list(self.sentinels):
            try:
                masters: Any = await sentinel.sentinel_masters()
                state = masters.get(service_name)
            except RedisError as exc:  # unreachable, or not a sentinel at all
                where = sentinel.connection_pool.connection_kwargs
                problems.append(f"{where.get('host')}:{where.get('port')} {type(exc).__name__}")
                continue
            if state and self.check_master_state(state, service_name):
                return state["ip"], int(state["port"])
        raise MasterNotFoundError(
            f"No master found for {service_name!r}" + (f" ({'; '.join(problems)})" * bool(problems))
        )


class _WaitingSentinelPool(SentinelConnectionPool, aioredis.BlockingConnectionPool):
    """A Sentinel pool that waits for a free connection instead of raising, and follows
    the primary between connections (see the module)."""

    _asked_at = float("-inf")

    async def get_master_address(self) -> Any:
        try:
            return await super().get_master_address()  # type: ignore[no-untyped-call]
        except MasterNotFoundError:
            if self.master_address is None:
                raise
            return self.master_address  # the sentinels are away: the last one they named

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        now = time.monotonic()
        if self.is_master and now - self._asked_at >= RECHECK_SECONDS:
            self._asked_at = now
            await self.get_master_address()  # drops idle connections when it moved
        connection = await super().get_connection(*args, **kwargs)  # type: ignore[no-untyped-call]
        address = self.master_address
        elsewhere = address is not None and (connection.host, connection.port) != (
            address[0],
            int(address[1]),
        )
        if elsewhere and connection.is_connected:
            await connection.disconnect()  # it reconnects to the primary when used
        return connection


class _SentinelPrimary(aioredis.Redis):
    """The primary's client; closing it closes the connections to the sentinels too
    (redis-py's ``Sentinel`` keeps a client per sentinel that nothing else closes)."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        manager = getattr(self.connection_pool, "sentinel_manager", None)
        for sentinel in getattr(manager, "sentinels", ()):
            await sentinel.aclose()


def _url_options(options: RedisOptions) -> dict[str, Any]:
    """The URL's query options as redis-py's keyword arguments (``?client_name=``…)."""
    out: dict[str, Any] = {}
    for name, value in options.url.options:
        if name == "health_check_interval":
            out[name] = int(value)
        elif name == "socket_keepalive":
            out[name] = value == "true"
        else:
            out[name] = value
    return out


def sentinel_primary(options: RedisOptions, retry: Any) -> aioredis.Redis:
    """A client of the primary ``options.url`` names through its sentinels."""
    url = options.connection_url
    assert url.service is not None  # a URL with sentinels always names its service
    timeouts = {
        "socket_connect_timeout": options.connect_timeout,
        "socket_timeout": options.operation_timeout,
    }
    sentinels = _Sentinels(  # type: ignore[no-untyped-call]
        list(url.sentinels),
        # The sentinels themselves are asked with the same bounds as any command.
        sentinel_kwargs={**timeouts, "retry": retry},
    )
    client: aioredis.Redis = sentinels.master_for(
        url.service,
        redis_class=_SentinelPrimary,
        connection_pool_class=_WaitingSentinelPool,
        db=url.database,
        username=url.username,
        password=url.password,
        max_connections=options.max_connections,
        timeout=options.operation_timeout,  # the wait for a free connection
        socket_connect_timeout=options.connect_timeout,
        retry=retry,
        **_url_options(options),
    )
    return client
