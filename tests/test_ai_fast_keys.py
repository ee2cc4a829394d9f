"""The recent-keys map of ``@ai_cached``: a repeated call skips the derivation, and its
key is always the one the full derivation gives."""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import memo._aikeys as aikeys
from memo._aikeys import AIKeyBuilder, ai_key, normalize_options
from memo._canonical import canonical

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests import _keyfixtures as fx  # noqa: E402

THRESHOLD = 8  # small, so that short generated texts cross it both ways


async def summarize(text: str, options: dict[str, Any] | None = None, model: str = "m") -> str:
    return ""


class Keyed:
    """A service whose results depend on its region: self joins the key."""

    def __init__(self, region: str) -> None:
        self.region = region

    def __memo_key__(self) -> str:
        return self.region

    async def summarize(self, text: str, options: dict[str, Any] | None = None) -> str:
        return ""


def builder(**settings: Any) -> AIKeyBuilder:
    return AIKeyBuilder(summarize, operation="summarize", **settings)


def full(keys: AIKeyBuilder, args: tuple[Any, ...], kwargs: dict[str, Any] | None = None) -> str:
    return keys._derive(args, kwargs or {})


def remembered(keys: AIKeyBuilder) -> int:
    return len(keys._recent.young) + len(keys._recent.old)


def material(text: str, options: Any, thr: int = THRESHOLD) -> bytes:
    return canonical((text, normalize_options(options)), text_hash_threshold=thr)


_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-2, 2),
    st.sampled_from([0.0, -0.0, 1.0, 2.0, 0.5, float("inf"), float("nan")]),
    st.floats(),
    st.sampled_from(["", "1", "news", "x" * 20]),
)
_names = st.sampled_from(["a", "b", "model", "temperature", "n"])
_flat = st.dictionaries(_names, _scalars, max_size=5)
_nested = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.tuples(inner, inner),
        st.dictionaries(_names, inner, max_size=3),
    ),
    max_leaves=8,
)
_options = st.one_of(st.none(), _flat, st.dictionaries(_names, _nested, max_size=4))
_texts = st.one_of(st.sampled_from(["", "t", "hello", "hello world!"]), st.text(max_size=20))


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(_texts, _options), min_size=1, max_size=8))
def test_remembered_keys_are_the_full_derivation_and_apart_exactly_when_the_material_is(
    calls: list[tuple[str, Any]],
) -> None:
    keys = builder(text_hash_threshold=THRESHOLD)
    cold = builder(text_hash_threshold=THRESHOLD)
    found = []
    for _ in range(2):  # the second pass hits the map
        found = [keys((text, options), {}) for text, options in calls]
        assert found == [full(cold, (text, options)) for text, options in calls]
    for (text_a, opts_a), key_a in zip(calls, found, strict=True):
        for (text_b, opts_b), key_b in zip(calls, found, strict=True):
            same = material(text_a, opts_a) == material(text_b, opts_b)
            assert same == (key_a == key_b)


def test_equal_values_of_other_types_keep_their_canonical_keys() -> None:
    keys = builder()
    variants: list[Any] = [
        {"n": 1}, {"n": 1.0}, {"n": True}, {"n": "1"}, {"n": 0}, {"n": 0.0}, {"n": -0.0},
        {"n": False}, {"n": None}, {}, None, {"n": 1.5}, {"n": [1]}, {"n": (1,)},
    ]  # fmt: skip
    for _ in range(3):
        for options in variants:
            assert keys(("t", options), {}) == full(keys, ("t", options)), options
    key = {repr(v): keys(("t", v), {}) for v in variants}
    assert key["{'n': 1}"] == key["{'n': 1.0}"]  # integral floats are ints in AI options
    assert key["{'n': 0}"] == key["{'n': 0.0}"] == key["{'n': -0.0}"]
    assert key["{'n': None}"] == key["{}"] == key["None"]  # None values are dropped
    assert key["{'n': [1]}"] == key["{'n': (1,)}"]  # tuples are lists in AI options
    apart = ["{'n': 1}", "{'n': True}", "{'n': '1'}", "{'n': 0}", "{'n': False}", "{'n': 1.5}"]
    assert len({key[v] for v in apart}) == len(apart)


def test_the_golden_key_comes_from_the_map_too() -> None:
    keys = builder()
    golden = "ai:summarize:v1:8ae4faaee8af50f870af58cca29c62fd"
    assert ai_key(operation="summarize", text="hello", options={"n": 1.0}) == golden
    assert [keys(("hello", {"n": 1.0}), {}) for _ in range(3)] == [golden] * 3
    assert keys(("hello", {"n": 1}), {}) == golden


def test_options_changed_in_place_are_never_served_a_stale_key() -> None:
    keys = builder()
    options: dict[str, Any] = {"model": "a", "n": 1}
    before = keys(("t", options), {})
    options["model"] = "b"
    assert keys(("t", options), {}) == full(keys, ("t", options)) != before
    options["model"] = "a"
    assert keys(("t", options), {}) == before
    nested: dict[str, Any] = {"stop": ["x"], "n": 1}
    first = keys(("t", nested), {})
    nested["stop"].append("y")
    assert keys(("t", nested), {}) == full(keys, ("t", nested)) != first


def test_texts_are_compared_by_value() -> None:
    keys = builder(text_hash_threshold=100)
    long_text = "word " * 400
    for text in ("short", long_text):
        copy = "".join(list(text))
        assert copy is not text
        first = keys((text, {"n": 1}), {})
        size = remembered(keys)
        assert keys((copy, {"n": 1}), {}) == first
        assert remembered(keys) == size  # the equal copy hit the remembered entry
        changed = text[:-1] + "!"
        assert keys((changed, {"n": 1}), {}) == full(keys, (changed, {"n": 1})) != first


def test_the_map_is_bounded_and_keeps_the_recent_calls() -> None:
    keys = builder()
    size = aikeys._RECENT_CALLS
    for i in range(3 * size + 7):
        keys((f"t{i}", {"i": i}), {})
    assert remembered(keys) <= 2 * size
    # The calls just before a generation turned over are still remembered.
    recent = range(3 * size + 7 - size // 2, 3 * size + 7)
    assert all(
        (f"t{i}", ("i", int, i)) in keys._recent.young
        or (f"t{i}", ("i", int, i)) in keys._recent.old
        for i in recent
    )
    for i in recent:
        assert keys((f"t{i}", {"i": i}), {}) == full(keys, (f"t{i}", {"i": i}))


def test_the_map_holds_a_bounded_amount_of_text() -> None:
    keys = builder()
    text = "x" * (aikeys._RECENT_TEXT // 2)
    for i in range(3 * aikeys._RECENT_CHARS // len(text)):
        keys((f"{i}{text}", None), {})
    held = sum(len(t) for t, _ in [*keys._recent.young, *keys._recent.old])
    assert held <= 2 * aikeys._RECENT_CHARS
    huge = "y" * (aikeys._RECENT_TEXT + 1)
    assert keys((huge, None), {}) == full(keys, (huge, None))
    assert all(t is not huge for t, _ in keys._recent.young)


def test_keyword_positional_and_default_spellings_agree() -> None:
    keys = builder()
    expected = ai_key(operation="summarize", text="t", options={"n": 1})
    for _ in range(2):
        assert keys(("t", {"n": 1}), {}) == expected
        assert keys(("t",), {"options": {"n": 1}}) == expected
        assert keys((), {"options": {"n": 1}, "text": "t"}) == expected
        assert keys(("t", {"n": 1}, "m"), {}) == expected  # model at its default
        assert keys(("t",), {}) == ai_key(operation="summarize", text="t", options=None)


def test_other_arguments_off_their_defaults_join_the_key() -> None:
    keys = builder()
    base = keys(("t", {"n": 1}), {})
    for args, kwargs in [(("t", {"n": 1}, "large"), {}), (("t", {"n": 1}), {"model": "large"})]:
        for _ in range(2):
            assert keys(args, kwargs) == full(keys, args, kwargs) != base


def test_a_mutable_default_of_another_argument_is_read_at_each_call() -> None:
    async def f(text: str, options: Any = None, stop: list[str] = []) -> str:  # noqa: B006
        return ""

    keys = AIKeyBuilder(f, operation="s")
    before = keys(("t", None), {})
    f.__defaults__[1].append("x")  # type: ignore[index]
    assert keys(("t", None), {}) == full(keys, ("t", None)) != before


def test_a_keyed_self_keeps_its_instances_apart() -> None:
    keys = AIKeyBuilder(Keyed.summarize, operation="s", method=True)
    eu = [keys((Keyed("eu"), "t", {"n": 1}), {}) for _ in range(3)]
    us = [keys((Keyed("us"), "t", {"n": 1}), {}) for _ in range(3)]
    assert len(set(eu)) == len(set(us)) == 1
    assert eu[0] != us[0]
    plain = AIKeyBuilder(fx.Summarizer.summarize, operation="s", method=True)
    shared = {plain((fx.Summarizer(), "t", {"n": 1}), {}) for _ in range(3)}
    assert shared == {ai_key(operation="s", text="t", options={"n": 1})}


def test_calls_python_rejects_still_raise_after_a_hit() -> None:
    keys = builder()
    keys(("t", {"n": 1}), {})
    with pytest.raises(TypeError):
        keys(("t", {"n": 1}), {"text": "t"})
    with pytest.raises(TypeError):
        keys(("t", {"n": 1}), {"colour": "red"})
    with pytest.raises(TypeError):
        keys((), {"options": {"n": 1}})
    with pytest.raises(TypeError):
        keys(("t", {"n": 1}, "m", "extra"), {})


def test_threads_racing_on_the_map_get_the_full_derivation() -> None:
    keys = builder()
    cold = builder()
    calls = [(f"t{i % 700}", {"n": i % 3, "x": 1.0}) for i in range(2000)]
    expected = [full(cold, call) for call in calls]
    errors: list[BaseException] = []

    def work(shift: int) -> None:
        try:
            order = calls[shift:] + calls[:shift]
            wanted = expected[shift:] + expected[:shift]
            for call, key in zip(order, wanted, strict=True):
                assert keys(call, {}) == key
        except BaseException as exc:  # reported below: a thread's error is otherwise lost
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(s * 250,)) for s in range(8)]
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(previous)
    assert errors == []
