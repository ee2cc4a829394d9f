"""What a forked child does with what it inherited from its parent.

A child must not use its parent's sockets, locks or tasks, and must not drop them either:
collected in the child while its own loop runs, a connection closes its transport,
which removes the socket from the epoll set parent and child share across the fork and
leaves the parent waiting forever for that socket's replies. So the child makes new ones
and keeps the old ones here, unused, for as long as it lives.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["in_forked_child", "keep_from_parent"]

_KEPT_FROM_PARENT: list[Any] = []


def in_forked_child(callback: Callable[[], None]) -> None:
    """Run ``callback`` in every child this process forks (where fork exists)."""
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=callback)


def keep_from_parent(objects: Iterable[Any]) -> None:
    """In a forked child: keep the parent's ``objects`` alive and never use them."""
    _KEPT_FROM_PARENT.extend(objects)
