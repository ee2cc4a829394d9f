"""Storage backends: bytes in, bytes out.

``RedisBackend`` and ``TieredBackend`` are imported on first use, so that
``import memo.backends`` (and a memory-only application) does not load redis-py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from memo.backends.base import Backend, LocalReads
from memo.backends.memory import MemoryBackend

if TYPE_CHECKING:
    from memo.backends.redis import RedisBackend
    from memo.backends.tiered import TieredBackend

__all__ = ["Backend", "LocalReads", "MemoryBackend", "RedisBackend", "TieredBackend"]


def __getattr__(name: str) -> Any:
    if name == "RedisBackend":
        from memo.backends.redis import RedisBackend

        return RedisBackend
    if name == "TieredBackend":
        from memo.backends.tiered import TieredBackend

        return TieredBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
