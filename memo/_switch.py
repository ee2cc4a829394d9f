"""The process-wide switch and the per-context bypass.

The decorator's hit path reads one attribute (``SWITCH.quiet``) to learn that nothing
unusual is going on; only when it is False does it look at the context variable, which
costs more.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

__all__ = ["bypass", "disable", "enable", "is_bypassed"]

_bypassed: ContextVar[bool] = ContextVar("memo_bypassed", default=False)


class _Switch:
    __slots__ = ("bypass_scopes", "disabled", "quiet")

    def __init__(self) -> None:
        self.disabled = False
        self.bypass_scopes = 0  # open bypass() blocks in any context
        self.quiet = True

    def update(self) -> None:
        self.quiet = not self.disabled and self.bypass_scopes == 0


SWITCH = _Switch()


def is_bypassed() -> bool:
    """True when caching is off for the current call: ``disable()`` or inside ``bypass()``."""
    return not SWITCH.quiet and (SWITCH.disabled or _bypassed.get())


def disable() -> None:
    """Turn caching off process-wide: decorated calls run the function, reads and writes skip.

    For tests and incidents. Explicit cache methods (``cache.get`` …) still work.
    """
    SWITCH.disabled = True
    SWITCH.update()


def enable() -> None:
    """Undo ``disable()``."""
    SWITCH.disabled = False
    SWITCH.update()


@contextlib.contextmanager
def bypass() -> Iterator[None]:
    """Run decorated calls inside this block uncached (no cache reads, no writes).

    Scoped to the current context, so concurrent tasks outside the block still cache.
    """
    token = _bypassed.set(True)
    SWITCH.bypass_scopes += 1
    SWITCH.update()
    try:
        yield
    finally:
        SWITCH.bypass_scopes -= 1
        SWITCH.update()
        _bypassed.reset(token)
