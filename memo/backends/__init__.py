"""Storage backends: bytes in, bytes out."""

from memo.backends.base import Backend, LocalReads
from memo.backends.memory import MemoryBackend
from memo.backends.redis import RedisBackend
from memo.backends.tiered import TieredBackend

__all__ = ["Backend", "LocalReads", "MemoryBackend", "RedisBackend", "TieredBackend"]
