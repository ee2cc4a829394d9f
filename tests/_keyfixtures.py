"""Module-level functions and classes whose keys the key tests pin.

They live at module level so that their qualified names are stable, and so that a second
Python process can import them and derive the same keys (``derive_all``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import uuid
from decimal import Decimal
from typing import Any

from memo._aikeys import AIKeyBuilder, ai_key
from memo._keys import KeyBuilder


async def get_user(user_id: int) -> dict[str, Any]:
    return {"id": user_id}


async def search(query: str, flag: bool = False, *filters: Any, **extra: Any) -> list[Any]:
    return []


async def anything(*args: Any, **kwargs: Any) -> None:
    return None


async def one(value: Any) -> None:
    return None


class Color(enum.Enum):
    RED = 1
    GREEN = "green"


class Level(enum.IntEnum):
    LOW = 1


@dataclasses.dataclass(frozen=True)
class Point:
    x: int
    y: int
    note: str = dataclasses.field(default="", compare=False)


@dataclasses.dataclass
class MutablePoint:
    x: int


class Account:
    """An entity: its methods' results depend on which account it is."""

    def __init__(self, account_id: int) -> None:
        self.account_id = account_id

    def __memo_key__(self) -> int:
        return self.account_id

    async def balance(self, currency: str = "EUR") -> int:
        return 0


class UserService:
    """A service object: which instance runs the method does not change the result."""

    async def load(self, user_id: int) -> dict[str, Any]:
        return {}


class OrderService:
    async def load(self, user_id: int) -> dict[str, Any]:
        return {}


class Summarizer:
    async def summarize(
        self, text: str, options: dict[str, Any] | None = None, model: str = "small", n: int = 1
    ) -> str:
        return ""


SAMPLES: list[Any] = [
    0,
    -1,
    42,
    2**63 - 1,
    2**63,
    -(2**63) - 1,
    10**40,
    -(10**40),
    1.5,
    0.0,
    -0.0,
    float("nan"),
    float("inf"),
    True,
    None,
    "",
    "plain",
    "héllo wörld ✓ :*{}\\",
    "x" * 5000,
    b"\x00\xff",
    bytearray(b"ab"),
    [1, "a", None],
    (1, "a", None),
    {"b": 1, "a": [1, 2], 3: (4,)},
    {"tags", "are", "a", "set", "of", "strings"},
    frozenset({1, 2, 3}),
    dt.datetime(2024, 5, 6, 7, 8, 9, 10),
    dt.datetime(2024, 5, 6, 7, 8, 9, 10, tzinfo=dt.timezone(dt.timedelta(hours=2))),
    dt.date(2024, 5, 6),
    dt.time(7, 8, 9, tzinfo=dt.timezone.utc),
    dt.timedelta(days=1, seconds=2, microseconds=3),
    uuid.UUID("12345678-1234-5678-1234-567812345678"),
    Decimal("1.10"),
    Color.RED,
    Color.GREEN,
    Level.LOW,
    Point(1, 2),
    Account(7),
]


def derive_all() -> list[str]:
    """Keys of a fixed set of calls; equal in every process that runs this."""
    keys = [KeyBuilder(one)((value,), {}) for value in SAMPLES]
    keys.append(KeyBuilder(get_user)((42,), {}))
    keys.append(KeyBuilder(get_user, namespace="users", version=2)((42,), {}))
    keys.append(KeyBuilder(search)(("q", True, "a", "b"), {"page": 2, "size": 10}))
    keys.append(KeyBuilder(Account.balance, method=True)((Account(3),), {}))
    keys.append(KeyBuilder(UserService.load, method=True)((UserService(), 5), {}))
    options = {"temperature": 0.5, "max_tokens": 100.0, "stop": None, "tags": {"x", "y", "z"}}
    keys.append(ai_key(operation="summarize", text="some text", options=options))
    builder = AIKeyBuilder(Summarizer.summarize, operation="summarize", method=True)
    keys.append(builder((Summarizer(), "some text", options), {"model": "large"}))
    return keys
