"""redis-py's cluster client as memo uses it: ready before use, subscriptions on plain
connections, and whatever it raises turned into redis-py's own errors."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ClusterDownError, DataError, RedisClusterException, RedisError
from redis.exceptions import ConnectionError as RedisConnectionError

__all__ = ["ClusterClient", "guarded", "nothing", "passed_on", "sum_node_info"]

T = TypeVar("T")

#: What redis-py's cluster client says when it refuses a request rather than fails to
#: reach the cluster (keys of several slots in one command, a blocked command).
REFUSED = re.compile(r"same (key )?slot|blocked|not supported", re.IGNORECASE)


class ClusterClient(RedisCluster):
    """redis-py's client, with ``ready`` (its slot map read) and subscriptions that go
    to the nodes in turn, so that a subscriber whose node failed moves on.

    A subscription is a plain connection to one node: a classic PUBLISH reaches every
    node's subscribers, and redis-py's ``ClusterPubSub`` cannot be made before the slot
    map is read (a memory tier's listener may start first)."""

    ready = False
    starting: asyncio.Future[None] | None = None  # the one slot-map read under way
    _subscriptions = 0

    def __init__(self, *, subscriber: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._subscriber = subscriber

    def pubsub(self, **kwargs: Any) -> PubSub:  # type: ignore[override]
        nodes = self.get_primaries() or list(self.nodes_manager.startup_nodes.values())
        self._subscriptions += 1
        node = nodes[self._subscriptions % len(nodes)]
        client = Redis(host=node.host, port=int(node.port), **self._subscriber)
        return client.pubsub(**kwargs)

    async def aclose(self, close_connection_pool: bool = True) -> None:
        """Close every node's connections (``close_connection_pool`` is for the
        signature memo closes single-server clients with)."""
        await super().aclose()


async def nothing(c: Any) -> None:
    """A command that sends nothing: running it makes the client read its slot map."""


async def guarded(command: Callable[[Any], Awaitable[T]], c: Any) -> T:
    """``command`` on a client whose slot map has been read, redis-py's own errors
    kept (they are translated by the runner) and anything else it raises turned into
    one: a connection error (an outage) for the unexpected, a data error for a request
    the client refused."""
    try:
        if not c.ready:
            await c.initialize()  # before anything is sent: see the module's docstring
            c.ready = True
        return await command(c)
    except ClusterDownError as exc:  # an answer, but one that says: no service here
        raise RedisConnectionError(f"the cluster is down: {exc}") from exc
    except (RedisError, OSError, TimeoutError):
        raise
    except RedisClusterException as exc:
        if REFUSED.search(str(exc)):  # a request the client will not send (a bug)
            raise DataError(f"refused by the cluster client: {exc}") from exc
        # "cannot be connected", a slot no node serves, a node it does not know yet
        raise RedisConnectionError(f"the cluster is unreachable: {exc}") from exc
    except Exception as exc:
        raise RedisConnectionError(
            f"the cluster client failed ({type(exc).__name__}: {exc})"
        ) from exc


#: INFO fields that add up over the primaries.
_ADDED = (
    "connected_clients",
    "used_memory",
    "keyspace_hits",
    "keyspace_misses",
    "evicted_keys",
    "expired_keys",
    "total_commands_processed",
)


def sum_node_info(infos: list[dict[str, Any]]) -> dict[str, Any]:
    """One INFO for the cluster: the first node's, with the counters of all added up,
    ``used_memory_human`` made again from the sum, and ``cluster_primaries``."""
    if not infos:
        return {}
    total = dict(infos[0])
    for name in _ADDED:
        if all(isinstance(info.get(name), int) for info in infos):
            total[name] = sum(int(info[name]) for info in infos)
    keys = [info.get("db0", {}).get("keys") for info in infos]
    if all(isinstance(k, int) for k in keys):
        total["db0"] = {**total.get("db0", {}), "keys": sum(keys)}
    if isinstance(total.get("used_memory"), int):
        total["used_memory_human"] = f"{total['used_memory'] / 2**20:.2f}M"
    total["cluster_primaries"] = len(infos)
    return total


def passed_on(options: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """The URL's options redis-py's cluster client takes."""
    passed: dict[str, Any] = {}
    for name, value in options:
        if name == "client_name":
            passed[name] = value
        elif name == "health_check_interval":
            passed[name] = int(value)
        elif name == "socket_keepalive":
            passed[name] = value == "true"
    return passed
