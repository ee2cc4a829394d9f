"""Options objects, one per boundary: the codec and the memory tier.

Each knob has one name (the one users pass, as the usage guide spells it), one default
and one validator, here. Caches, the factory and ``CacheConfig`` build these objects and
hand them down; the layers below read them and check nothing again. The Redis
connection's options live in ``memo._redis_options``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from memo._ttl import MAX_TTL_SECONDS
from memo._validate import check_int, check_seconds
from memo.exceptions import ConfigError

__all__ = ["DEFAULT_MAX_VALUE_SIZE", "REDIS_MEMORY_MAX_TTL", "CodecOptions", "MemoryOptions"]

#: Largest encoded value, in bytes, unless configured otherwise.
DEFAULT_MAX_VALUE_SIZE = 1024 * 1024

#: Seconds a memory-tier copy of a Redis entry lives at most, unless configured
#: otherwise: a copy is trusted that long without Redis's word on it.
REDIS_MEMORY_MAX_TTL = 60


@dataclass(frozen=True)
class CodecOptions:
    """How values become bytes.

    Args:
        compression_threshold: lz4-compress encodings larger than this many bytes.
        compression_level: 1-6 lz4 fast mode, 7-9 high-compression mode.
        max_value_size: largest encoded value, in bytes; larger ones are not stored.
        signing_key: when set, values are HMAC-SHA256 signed and unsigned ones refused.
    """

    compression_threshold: int = 1000
    compression_level: int = 6
    max_value_size: int = DEFAULT_MAX_VALUE_SIZE
    signing_key: bytes | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        check_int("compression_threshold", self.compression_threshold, 0, 2**31)
        check_int("compression_level", self.compression_level, 1, 9)
        check_int("max_value_size", self.max_value_size, 1, 2**32 - 1)
        key = self.signing_key
        if isinstance(key, str):
            object.__setattr__(self, "signing_key", key.encode())
        elif key is not None and not isinstance(key, bytes):
            raise ConfigError(
                f"signing_key: a {type(key).__name__} was given; pass the secret as bytes "
                f"or a str, or None for unsigned values"
            )
        if self.signing_key is not None and not self.signing_key:
            raise ConfigError("signing_key is empty: pass a secret (bytes or str), or None")


@dataclass(frozen=True)
class MemoryOptions:
    """The in-process memory tier.

    Args:
        memory_cache_size: most entries kept; when full, one-off keys go first, then the
            entries longest without a hit (``memo/backends/_eviction.py``).
        memory_max_bytes: most bytes kept, counting keys and encoded values.
        memory_max_ttl: seconds a copy may live at most, or None for the entry's own TTL
            (a tier in front of Redis is bounded so that it never serves a value for long
            without Redis's word on it).
    """

    memory_cache_size: int = 1000
    memory_max_bytes: int = 64 * 1024 * 1024
    memory_max_ttl: float | None = None

    def __post_init__(self) -> None:
        check_int("memory_cache_size", self.memory_cache_size, 1, 10**8)
        check_int("memory_max_bytes", self.memory_max_bytes, 1, 2**40)
        if self.memory_max_ttl is not None:
            seconds = check_seconds("memory_max_ttl", self.memory_max_ttl, MAX_TTL_SECONDS)
            object.__setattr__(self, "memory_max_ttl", seconds)

    @property
    def max_ttl_ms(self) -> int | None:
        """``memory_max_ttl`` in whole milliseconds (at least 1), or None."""
        if self.memory_max_ttl is None:
            return None
        return max(1, round(self.memory_max_ttl * 1000))
