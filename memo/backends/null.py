"""A backend that keeps nothing: the storage behind ``NullCache`` (the ``disabled`` preset)."""

from __future__ import annotations

from memo.backends.base import Backend

__all__ = ["NullBackend"]


class NullBackend(Backend):
    """Every read misses, every write is dropped."""

    name = "null"
    local_only = True

    async def get(self, key: str) -> bytes | None:
        return None

    def get_local(self, key: str) -> bytes | None:
        return None

    async def set(self, key: str, value: bytes, ttl_ms: int) -> None:
        if ttl_ms <= 0:
            raise ValueError(f"ttl_ms must be positive, got {ttl_ms}")

    async def delete(self, key: str) -> bool:
        return False

    async def delete_pattern(self, pattern: str) -> int:
        return 0

    async def scan_keys(self, pattern: str, limit: int) -> list[str]:
        return []

    async def clear(self) -> None:
        return None

    async def ttl(self, key: str) -> int | None:
        return None

    def __repr__(self) -> str:
        return "NullBackend()"
