"""Which listener keeps a memory tier in front of Redis coherent.

``options.coherence`` chooses: ``"tracking"`` (``_tracking.py``: the server tells the
tier of changes to the keys it read, and only those) or ``"channel"``
(``invalidation.py``: writes are announced on pub/sub and every tier hears every one).
Tracking needs memo's own connection, so a client made by a ``client_factory``
(Sentinel, Cluster, fakeredis) gets the channel; a server that refuses tracking gets it
too, from the tracking listener itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from memo.backends._tracking import TrackingListener, TrackingSource
from memo.backends.invalidation import ChannelSource, InvalidationListener

__all__ = ["listener_for"]


class _Source(TrackingSource, ChannelSource, Protocol):
    """A backend both listeners can use (``RedisBackend``)."""


def listener_for(
    redis: _Source,
    *,
    own_client: bool,
    on_keys: Callable[[list[str]], None],
    on_pattern: Callable[[str], None],
    on_flush: Callable[[], None],
    on_trust: Callable[[bool], None],
    heartbeat: float,
    on_key: Callable[[str], None] | None = None,
) -> InvalidationListener | TrackingListener | None:
    """The listener ``redis.options`` asks for, or None when coherence is off."""
    if not redis.options.invalidation_channel:
        return None

    def channel() -> InvalidationListener:
        return InvalidationListener(
            redis,
            on_keys=on_keys,
            on_pattern=on_pattern,
            on_flush=on_flush,
            on_trust=on_trust,
            heartbeat=heartbeat,
        )

    if redis.options.coherence != "tracking" or not own_client:
        return channel()
    return TrackingListener(
        redis,
        on_keys=on_keys,
        on_flush=on_flush,
        on_trust=on_trust,
        fallback=channel,
        heartbeat=heartbeat,
        on_key=on_key,
    )
