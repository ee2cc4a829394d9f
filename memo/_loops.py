"""The event loop running in this thread, if any: memo's code runs both inside and
outside a loop (sync teardown, a thread of its own), and asks this in several places."""

from __future__ import annotations

import asyncio

__all__ = ["running_loop"]


def running_loop() -> asyncio.AbstractEventLoop | None:
    """The running loop of this thread, or None (``asyncio.get_running_loop`` raises)."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
