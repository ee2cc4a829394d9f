"""FillGuard: which Redis replies may still be copied into a memory tier."""

from __future__ import annotations

from memo.backends._fill_guard import FillGuard


def test_a_change_heard_while_a_read_is_in_flight_keeps_its_reply_out() -> None:
    guard = FillGuard()
    asked = guard.asked()
    guard.heard_one("k")
    assert not guard.may_fill("k", asked)
    assert guard.may_fill("other", asked)
    guard.answered(asked)
    assert guard.may_fill("k", guard.asked())  # asked after the change: carries it


def test_several_keys_heard_at_once_are_marked_alike() -> None:
    guard = FillGuard()
    asked = guard.asked()
    guard.heard(["a", "b"])
    assert not guard.may_fill("a", asked) and not guard.may_fill("b", asked)


def test_with_nothing_in_flight_a_change_leaves_no_mark_to_keep() -> None:
    guard = FillGuard()
    for i in range(20_000):
        guard.heard_one(f"k{i}")
    guard.heard([f"j{i}" for i in range(100)])
    assert {} == guard.invalidated  # nothing remembered, nothing to forget later
    asked = guard.asked()
    assert guard.may_fill("k1", asked)


def test_a_read_in_flight_stays_guarded_until_it_is_answered() -> None:
    guard = FillGuard()
    first, second = guard.asked(), guard.asked()
    guard.answered(first)
    guard.heard_one("k")  # the second read is still on its way
    assert not guard.may_fill("k", second)


def test_a_change_heard_during_a_write_keeps_the_write_from_filling_memory() -> None:
    guard = FillGuard()
    begun = guard.begin_write(["k", "quiet"])
    guard.heard_one("k")
    assert {"quiet"} == guard.end_write(["k", "quiet"], begun, fills=True)
    assert {} == guard.writing
