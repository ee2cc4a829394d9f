"""HeardChanges: what a memory tier does with each change heard from Redis."""

from __future__ import annotations

from memo.backends._fill_guard import FillGuard
from memo.backends._heard import HeardChanges
from memo.backends.memory import MemoryBackend


class _Flights:
    def __init__(self) -> None:
        self.in_flight = 0


def _heard() -> tuple[HeardChanges, list[tuple[list[str] | None, str | None]], _Flights]:
    memory = MemoryBackend()
    for key in ("a", "b", "user:1", "user:2"):
        memory.set_local(key, b"v", 60_000)
    told: list[tuple[list[str] | None, str | None]] = []
    flights = _Flights()
    heard = HeardChanges(memory, FillGuard())
    heard.hook, heard.flights = (lambda keys, pattern: told.append((keys, pattern))), flights
    return heard, told, flights


def test_changes_drop_their_keys_and_are_told_only_while_computations_fly() -> None:
    heard, told, flights = _heard()
    heard.key("a")
    heard.pattern("user:*")
    assert [] == told  # nothing in flight: nothing to tell
    assert heard.memory.get_local("a") is None and heard.memory.get_local("user:1") is None
    flights.in_flight = 1
    heard.key("b")
    heard.keys(["x", "y"])
    heard.pattern("p:*")
    assert [(["b"], None), (["x", "y"], None), (None, "p:*")] == told
    assert heard.memory.get_local("b") is None


def test_a_change_heard_during_a_read_keeps_the_read_from_filling() -> None:
    heard, _, _ = _heard()
    asked = heard.guard.asked()
    heard.key("a")
    assert not heard.guard.may_fill("a", asked)


def test_a_flush_empties_memory_and_voids_every_read_under_way() -> None:
    heard, _, _ = _heard()
    asked = heard.guard.asked()
    heard.flush()
    assert heard.memory.get_local("b") is None
    assert not heard.guard.may_fill("unrelated", asked)
