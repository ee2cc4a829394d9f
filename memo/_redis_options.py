"""How memo connects to Redis: the parsed URL and the options around it.

Nothing here imports redis-py; the URL itself is read in ``_redis_url.py``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from memo._redis_url import RedisURL
from memo._validate import check_bool, check_int, check_seconds
from memo.exceptions import ConfigError

if TYPE_CHECKING:
    import ssl

__all__ = ["COHERENCE_MODES", "RedisOptions", "RedisURL"]

COHERENCE_MODES = ("tracking", "channel")


@dataclass(frozen=True)
class RedisOptions:
    """How memo connects to Redis, validated on construction.

    Args:
        url: the parsed URL (``RedisOptions.from_url`` parses one).
        connect_timeout: seconds to open a connection.
        operation_timeout: seconds for a whole command: pool wait, retry and I/O.
        max_connections: the pool's size; callers wait (within the deadline) for a
            free connection rather than fail.
        use_tls: connect with TLS even though the URL says ``redis://``.
        ssl_ca_certs, ssl_certfile, ssl_keyfile: TLS files (used on TLS connections).
        invalidation_channel: keep memory tiers coherent with what other processes
            write (False: a memory tier trusts its TTLs alone).
        coherence: how: ``"tracking"`` (the server tells each memory tier of changes
            to the keys it read, Redis 6 and later; the channel where the server
            refuses it) or ``"channel"`` (writes announced on pub/sub, heard by all).
        invalidation_batch: seconds, at most 0.01; with tracking, while invalidations
            come less than a fifth of this apart, a memory tier reads them at most
            once per this many seconds, so that one wake-up of the event loop serves
            several (a change reaches the tier up to this much later); 0 reads each
            as it comes.
        stats_interval: seconds between two writes of this process's figures to Redis,
            where ``memo stats`` and ``memo top`` read the whole fleet's; 0 writes none.
    """

    url: RedisURL
    connect_timeout: float = 1.0
    operation_timeout: float = 0.5
    max_connections: int = 50
    use_tls: bool = False
    ssl_ca_certs: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    invalidation_channel: bool = True
    coherence: str = "tracking"
    invalidation_batch: float = 0.001
    stats_interval: float = 5.0

    def __post_init__(self) -> None:
        if not isinstance(self.url, RedisURL):
            raise ConfigError(
                f"url: a RedisURL, not a {type(self.url).__name__}; build the options "
                f"with RedisOptions.from_url(url, ...) to parse a str"
            )
        for name in ("connect_timeout", "operation_timeout"):
            object.__setattr__(self, name, check_seconds(name, getattr(self, name), 300))
        check_int("max_connections", self.max_connections, 1, 10_000)
        interval = check_seconds("stats_interval", self.stats_interval, 3600, allow_zero=True)
        object.__setattr__(self, "stats_interval", interval)
        batch = check_seconds("invalidation_batch", self.invalidation_batch, 0.01, allow_zero=True)
        object.__setattr__(self, "invalidation_batch", batch)
        check_bool("use_tls", self.use_tls)
        check_bool("invalidation_channel", self.invalidation_channel)
        if self.coherence not in COHERENCE_MODES:
            raise ConfigError(
                f"coherence={self.coherence!r}: must be 'tracking' (the server tells each "
                f"memory tier what changed) or 'channel' (writes announced on pub/sub)"
            )
        for name in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise ConfigError(f"{name}={value!r}: must be a file path (a str) or None")
        if self.use_tls:
            self.url.with_tls()  # refuses a unix socket

    @classmethod
    def from_url(cls, url: str, **fields: Any) -> RedisOptions:
        """Options for ``url`` (parsed here) with ``fields`` set.

        Raises:
            ConfigError: a bad URL, an unknown field or a bad value, each named.
        """
        known = {f.name for f in dataclasses.fields(cls)} - {"url"}
        unknown = sorted(set(fields) - known)
        if unknown:
            raise ConfigError(
                f"unknown Redis option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        return cls(RedisURL.parse(url), **fields)

    @property
    def connection_url(self) -> RedisURL:
        """The URL connected to: ``url``, over TLS when ``use_tls`` asks for it."""
        return self.url.with_tls() if self.use_tls and not self.url.tls else self.url

    @property
    def tls(self) -> bool:
        return self.connection_url.tls

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context redis-py would build from these options; None without TLS."""
        if not self.tls:
            return None
        import ssl  # only where TLS is used: it costs milliseconds to import

        context = ssl.create_default_context(cafile=self.ssl_ca_certs)
        context.check_hostname = dict(self.url.options).get("ssl_check_hostname") != "false"
        if self.ssl_certfile is not None:
            context.load_cert_chain(self.ssl_certfile, self.ssl_keyfile)
        return context

    def ssl_arguments(self) -> dict[str, str]:
        """The TLS files to hand to redis-py, when the connection is TLS."""
        if not self.tls:
            return {}
        files = {
            "ssl_ca_certs": self.ssl_ca_certs,
            "ssl_certfile": self.ssl_certfile,
            "ssl_keyfile": self.ssl_keyfile,
        }
        return {name: value for name, value in files.items() if value is not None}
