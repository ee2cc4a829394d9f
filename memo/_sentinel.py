"""The MISSING sentinel: "no value", where None is a legitimate value."""

from __future__ import annotations

import enum
from typing import Final, Literal

__all__ = ["MISSING", "MissingType"]


class MissingType(enum.Enum):
    """Type of ``MISSING``; an enum so that type checkers can narrow on ``is MISSING``."""

    MISSING = "MISSING"

    def __repr__(self) -> str:
        return "memo.MISSING"

    def __bool__(self) -> Literal[False]:
        return False


MISSING: Final = MissingType.MISSING
