"""The primary a Sentinel set names, as a redis-py client (``redis+sentinel://``).

redis-py's ``Sentinel.master_for`` asks the sentinels where the primary is before each
new connection and drops connections to an old primary after a failover, so a failover
is followed without restarting the process. memo gives it the same pool rules as any
Redis connection: callers wait (within the operation deadline) for a free connection
rather than fail, and redis-py's own retries are off.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool

from memo._redis_options import RedisOptions

__all__ = ["sentinel_primary"]


class _WaitingSentinelPool(SentinelConnectionPool, aioredis.BlockingConnectionPool):
    """A Sentinel pool that waits for a free connection instead of raising."""


class _SentinelPrimary(aioredis.Redis):
    """The primary's client; closing it closes the connections to the sentinels too
    (redis-py's ``Sentinel`` keeps a client per sentinel that nothing else closes)."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        manager = getattr(self.connection_pool, "sentinel_manager", None)
        for sentinel in getattr(manager, "sentinels", ()):
            await sentinel.aclose()


def sentinel_primary(options: RedisOptions, retry: Any) -> aioredis.Redis:
    """A client of the primary ``options.url`` names through its sentinels."""
    url = options.connection_url
    assert url.service is not None  # a URL with sentinels always names its service
    timeouts = {
        "socket_connect_timeout": options.connect_timeout,
        "socket_timeout": options.operation_timeout,
    }
    sentinels = Sentinel(  # type: ignore[no-untyped-call]
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
    )
    return client
