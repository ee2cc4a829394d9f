"""A call counter shared by the decorator tests."""

from __future__ import annotations


class Counter:
    """Counts calls of the functions under test; each call returns the running count."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> int:
        self.calls += 1
        return self.calls
