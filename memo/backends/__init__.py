"""Storage backends: bytes in, bytes out."""

from memo.backends.base import Backend, LocalReads
from memo.backends.memory import MemoryBackend

__all__ = ["Backend", "LocalReads", "MemoryBackend"]
