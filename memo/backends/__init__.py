"""Storage backends: bytes in, bytes out.

``RedisBackend`` is imported on first use, so that ``import memo.backends`` (and a
memory-only application) does not load redis-py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from memo.backends.base import Backend, LocalReads
from memo.backends.memory import MemoryBackend
from memo.backends.tiered import TieredBackend

if TYPE_CHECKING:
    from memo.backends.redis import RedisBackend

__all__ = ["Backend", "LocalReads", "MemoryBackend", "RedisBackend", "TieredBackend"]


def __getattr__(name: str) -> Any:
    if name == "RedisBackend":
        from memo.backends.redis import RedisBackend

        return RedisBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
