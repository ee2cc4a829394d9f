"""Redis URL checks, free of imports so that every layer may use them."""

from __future__ import annotations

from urllib.parse import urlsplit

from memo.exceptions import ConfigError

__all__ = ["REDIS_SCHEMES", "check_redis_url"]

REDIS_SCHEMES = ("redis", "rediss", "unix")


def check_redis_url(url: str) -> None:
    """Refuse a URL no Redis client could use, naming the accepted schemes."""
    scheme = urlsplit(url).scheme if isinstance(url, str) else ""
    if scheme not in REDIS_SCHEMES:
        shown = scheme or "none"
        raise ConfigError(
            f"redis_url: scheme {shown!r} is not a Redis URL; use redis://host:6379/0, "
            f"rediss:// (TLS) or unix:///path/to/redis.sock"
        )
