"""The messages of the invalidation channel: who wrote, and which keys or pattern.

Messages are ASCII JSON, not msgpack: a client built with ``decode_responses=True`` (the
``client_factory`` seam allows one) decodes every pub/sub payload as UTF-8, and would
fail on binary ones. Keys are str; the origin is a hex string.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

__all__ = ["decode_message", "encode_keys", "encode_pattern", "new_origin"]

_KEYS, _PATTERN = 0, 1


def new_origin() -> str:
    """A random id for one backend in one process (made again after a fork)."""
    return os.urandom(8).hex()


def encode_keys(origin: str, keys: Sequence[str]) -> bytes:
    """The announcement that ``origin`` wrote or deleted ``keys``."""
    return json.dumps([origin, _KEYS, list(keys)], separators=(",", ":")).encode("ascii")


def encode_pattern(origin: str, pattern: str) -> bytes:
    """The announcement that ``origin`` deleted the keys matching ``pattern``."""
    return json.dumps([origin, _PATTERN, pattern], separators=(",", ":")).encode("ascii")


def decode_message(data: bytes | str) -> tuple[str, list[str] | None, str | None]:
    """(origin, keys, pattern) of a message; ValueError for anything else."""
    try:
        origin, kind, body = json.loads(data)
    except (ValueError, TypeError) as exc:  # bad JSON, bad UTF-8, or not three items
        raise ValueError(f"not a memo invalidation message ({type(exc).__name__})") from exc
    if not isinstance(origin, str):
        raise ValueError("not a memo invalidation message (origin)")
    if kind == _KEYS and isinstance(body, list) and all(isinstance(k, str) for k in body):
        return origin, body, None
    if kind == _PATTERN and isinstance(body, str):
        return origin, None, body
    raise ValueError("not a memo invalidation message (kind)")
