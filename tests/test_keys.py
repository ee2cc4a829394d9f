"""Key derivation: stable, type-exact, unique, safe, and fast to repeat."""

from __future__ import annotations

import collections
import datetime as dt
import enum
import inspect
import json
import math
import os
import re
import subprocess
import sys
import uuid
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memo._aikeys import AIKeyBuilder, ai_key, normalize_options
from memo._binder import make_binder
from memo._canonical import canonical, digest
from memo._keys import KeyBuilder
from memo.exceptions import ConfigError, KeyDerivationError

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # import the fixtures as tests._keyfixtures, as the child does
    sys.path.insert(0, str(ROOT))

from tests import _keyfixtures as fx  # noqa: E402

SAFE_KEY = re.compile(r"[A-Za-z0-9_.:%-]+")  # % only escapes characters of odd names
DIGEST = r"[0-9a-f]{32}"


def one_key(value: Any, **options: Any) -> str:
    return KeyBuilder(fx.one, **options)((value,), {})


# -- same call, same key ---------------------------------------------------------------


def test_positional_keyword_and_default_spellings_share_a_key() -> None:
    async def f(x: int, flag: bool = False) -> None: ...

    builder = KeyBuilder(f)
    assert builder((1,), {}) == builder((), {"x": 1}) == builder((1,), {"flag": False})
    assert builder((1,), {}) != builder((1,), {"flag": True})


def test_reordered_dict_argument_gives_one_key() -> None:
    assert one_key({"a": 1, "b": [2, 3], 4: None}) == one_key({4: None, "b": [2, 3], "a": 1})


def test_reordered_set_arguments_give_one_key() -> None:
    words = [f"w{i}" for i in range(50)]
    assert one_key(set(words)) == one_key(set(reversed(words)))
    assert one_key(frozenset(words)) == one_key(frozenset(reversed(words)))
    assert one_key({(1, "a"), (2, "b")}) == one_key({(2, "b"), (1, "a")})


def test_nan_is_one_key_whatever_its_bits() -> None:
    assert one_key(float("nan")) == one_key(-math.nan) == one_key(float("inf") - float("inf"))


# -- types are part of the key ---------------------------------------------------------


def test_one_float_bool_and_string_one_are_four_keys() -> None:
    assert len({one_key(1), one_key(1.0), one_key(True), one_key("1")}) == 4


def test_list_of_strings_differs_from_joined_string() -> None:
    assert one_key(["a", "b"]) != one_key("a:b")


def test_star_args_with_a_space_differ_from_two_args() -> None:
    builder = KeyBuilder(fx.anything)
    assert builder(("a b",), {}) != builder(("a", "b"), {})


def test_none_differs_from_the_string_none() -> None:
    assert one_key(None) != one_key("None")


def test_other_type_distinctions() -> None:
    assert one_key(0.0) != one_key(-0.0)
    assert one_key(b"a") != one_key("a")
    assert one_key([1, 2]) != one_key((1, 2))  # list and tuple are distinct types
    assert one_key({1, 2}) != one_key(frozenset({1, 2}))
    assert one_key(2**64) != one_key(str(2**64))
    assert one_key(2**64) != one_key(float(2**64))
    assert one_key(fx.Level.LOW) != one_key(1)
    assert one_key(fx.Color.RED) != one_key(1)
    assert len({one_key(x) for x in fx.SAMPLES if x == x}) == len([x for x in fx.SAMPLES if x == x])


def test_supported_value_types_key_by_value() -> None:
    utc2 = dt.timezone(dt.timedelta(hours=2))
    assert one_key(dt.datetime(2024, 1, 1, tzinfo=utc2)) == one_key(
        dt.datetime(2024, 1, 1, tzinfo=dt.timezone(dt.timedelta(minutes=120)))
    )
    assert one_key(dt.datetime(2024, 1, 1)) != one_key(dt.datetime(2024, 1, 1, tzinfo=utc2))
    assert one_key(uuid.UUID(int=5)) == one_key(uuid.UUID(int=5))
    assert one_key(Decimal("1.0")) != one_key(Decimal("1.00"))
    assert one_key(fx.Point(1, 2, note="a")) == one_key(fx.Point(1, 2, note="b"))
    assert one_key(fx.Point(1, 2)) != one_key(fx.Point(2, 1))
    assert one_key(10**5000) != one_key(10**5000 + 1)  # beyond int-to-str digit limits


# -- subclasses of builtins -------------------------------------------------------------


class Name(str):
    """A str subclass, as a validated-id type or a pydantic constrained str may be."""


class Count(int):
    pass


class Word(str, enum.Enum):  # what enum.StrEnum is, on Python 3.10 too
    ABC = "abc"


def test_a_str_subclass_argument_has_the_key_of_the_str_it_keys_as() -> None:
    """Its digest is the str's, so its whole key must be: invalidate(Name("abc")) must
    reach what f("abc") stored."""
    assert one_key("abc") == one_key(Name("abc"))
    warm = KeyBuilder(fx.one)
    for _ in range(2):  # the fast map, keyed on exact types, holds "abc" once warm
        assert warm(("abc",), {}) == warm((Name("abc"),), {}) == one_key("abc")
    pair = KeyBuilder(fx.anything)
    assert pair(("abc", 1), {}) == pair((Name("abc"), Count(1)), {})


def test_an_int_subclass_argument_has_the_key_of_the_int_it_keys_as() -> None:
    assert one_key(7) == one_key(Count(7))
    assert one_key(2**70) == one_key(Count(2**70))


def test_enum_members_and_bools_keep_keys_of_their_own() -> None:
    assert one_key(fx.Level.LOW) != one_key(1)
    assert one_key(Word.ABC) != one_key("abc")
    assert one_key(True) != one_key(1)
    assert len({one_key(v) for v in (fx.Level.LOW, 1, True, Count(1))}) == 3
    assert one_key(True).split(":")[2] == "True"
    assert one_key(fx.Level.LOW).count(":") == 2  # no label: an enum keys as a tagged node


def test_subclasses_inside_star_args_key_and_self_and_key_callables_label_alike() -> None:
    star = KeyBuilder(fx.anything)
    assert star(("abc", 5), {}) == star((Name("abc"), Count(5)), {})
    keyed = KeyBuilder(fx.one, key=lambda value: value)
    assert keyed((Name("abc"),), {}) == keyed(("abc",), {})
    assert keyed(((Name("abc"), 1),), {}) == keyed((("abc", 1),), {})
    point = collections.namedtuple("point", "x y")  # keys as the tuple it is
    assert keyed((point("abc", 1),), {}) == keyed((("abc", 1),), {})
    method = KeyBuilder(fx.Account.balance, method=True)
    assert method((fx.Account(Count(3)), Name("EUR")), {}) == method((fx.Account(3),), {})


# -- methods, instances and __memo_key__ -----------------------------------------------


def test_two_classes_with_a_same_named_method_differ() -> None:
    user = KeyBuilder(fx.UserService.load, method=True)
    order = KeyBuilder(fx.OrderService.load, method=True)
    assert user((fx.UserService(), 1), {}) != order((fx.OrderService(), 1), {})
    assert user.pattern() != order.pattern()


def test_two_instances_of_a_service_class_share_a_key() -> None:
    builder = KeyBuilder(fx.UserService.load, method=True)
    assert builder((fx.UserService(), 1), {}) == builder((fx.UserService(), 1), {})
    assert builder((fx.UserService(), 1), {}) != builder((fx.UserService(), 2), {})


def test_two_instances_with_different_memo_keys_do_not_share_a_key() -> None:
    builder = KeyBuilder(fx.Account.balance, method=True)
    for _ in range(3):  # repeated, so that any fast map is warm
        assert builder((fx.Account(1),), {}) != builder((fx.Account(2),), {})
    assert builder((fx.Account(1),), {}) == builder((fx.Account(1),), {"currency": "EUR"})


def test_key_callable_replaces_the_arguments() -> None:
    async def load(user_id: int, db: object) -> None: ...

    builder = KeyBuilder(load, key=lambda user_id, db: user_id)
    assert builder((5, object()), {}) == builder((5, object()), {})
    assert builder((5, None), {}).split(":")[2] == "5"


# -- long text -------------------------------------------------------------------------


def test_long_text_is_not_in_its_key_and_one_changed_character_changes_it() -> None:
    text = "".join(chr(ord("a") + i % 26) for i in range(10_000))
    changed = text[:5000] + "!" + text[5001:]
    key = one_key(text)
    assert len(key) < 100 and text[:40] not in key
    assert key != one_key(changed)
    assert key == one_key(text[:]) and key != one_key(text + "a")
    ai = ai_key(operation="summarize", text=text, options=None)
    assert len(ai) < 100
    assert ai != ai_key(operation="summarize", text=changed, options=None)


# -- AI options and keys ---------------------------------------------------------------


def ai(options: Any) -> str:
    return ai_key(operation="summarize", text="t", options=options)


def test_ai_options_none_values_are_dropped() -> None:
    assert ai({"b": 1, "a": None}) == ai({"b": 1})
    assert ai(None) == ai({})


def test_ai_options_integral_floats_equal_ints() -> None:
    assert ai({"n": 100.0}) == ai({"n": 100})
    assert ai({"n": 0.5}) != ai({"n": 0})


def test_ai_options_string_number_differs_from_number() -> None:
    assert ai({"n": "100"}) != ai({"n": 100})


def test_ai_options_bool_differs_from_int() -> None:
    assert ai({"n": True}) != ai({"n": 1})
    assert ai({"n": 1.0}) != ai({"n": True})


def test_ai_options_are_normalized_at_every_depth() -> None:
    nested = {"z": [{"b": None, "a": 2.0}], "y": {"k": {"drop": None, "n": 3.0}}}
    assert normalize_options(nested) == {"y": {"k": {"n": 3}}, "z": [{"a": 2}]}
    assert list(normalize_options({"b": 1, "a": 2})) == ["a", "b"]
    assert ai(nested) == ai({"y": {"k": {"n": 3}}, "z": [{"a": 2}]})
    assert math.isnan(normalize_options({"x": math.nan})["x"])
    assert normalize_options({"x": math.inf}) == {"x": math.inf}


def test_ai_key_builder_agrees_with_ai_key_at_defaults() -> None:
    builder = AIKeyBuilder(fx.Summarizer.summarize, operation="summarize", method=True)
    expected = ai_key(operation="summarize", text="t", options={"n": 1})
    service = fx.Summarizer()
    assert builder((service, "t", {"n": 1.0}), {}) == expected
    assert builder((service,), {"text": "t", "options": {"n": 1}, "model": "small"}) == expected


def test_ai_key_builder_differs_when_other_args_are_not_at_defaults() -> None:
    builder = AIKeyBuilder(fx.Summarizer.summarize, operation="summarize", method=True)
    base = ai_key(operation="summarize", text="t", options=None)
    service = fx.Summarizer()
    assert builder((service, "t"), {"model": "large"}) != base
    assert builder((service, "t"), {"n": True}) != base  # equal to the default 1, other type
    assert builder((service, "t"), {"model": "large"}) == ai_key(
        operation="summarize", text="t", options=None, extra=[("model", "large")]
    )


def test_ai_key_builder_rejects_unknown_argument_names() -> None:
    with pytest.raises(ConfigError, match="text_arg='prompt'"):
        AIKeyBuilder(fx.Summarizer.summarize, operation="s", text_arg="prompt", method=True)
    with pytest.raises(ConfigError, match="options_arg='opts'"):
        AIKeyBuilder(fx.Summarizer.summarize, operation="s", options_arg="opts", method=True)


# -- golden keys -----------------------------------------------------------------------


def test_golden_keys() -> None:
    """Exact keys: changing them strands every stored entry, so it must be deliberate."""
    assert KeyBuilder(fx.get_user)((42,), {}) == (
        "tests._keyfixtures.get_user:v1:42:0f2bb50197226da41f855553d5f67923"
    )
    assert KeyBuilder(fx.get_user, namespace="users", version=2)((42,), {}) == (
        "users:tests._keyfixtures.get_user:v2:42:577e8e076c7d3474bfb410b21273872e"
    )
    assert KeyBuilder(fx.Account.balance, method=True)((fx.Account(3),), {}) == (
        "tests._keyfixtures.Account.balance:v1:3:EUR:40c69cf24f1a20b9031bfa02fcd9939e"
    )
    assert ai_key(operation="summarize", text="hello", options={"n": 1.0}) == (
        "ai:summarize:v1:8ae4faaee8af50f870af58cca29c62fd"
    )
    assert KeyBuilder(fx.search)(("q",), {}) == (
        "tests._keyfixtures.search:v1:q:False:37ba99cee96ea7803178719a2a242c35"
    )
    assert canonical([1, "a", (2.5, None), {"k": b"v"}, {3}], text_hash_threshold=9).hex() == (
        "960101a1619302cb4004000000000000c09203c40692a16bc401769204c40103"
    )


def test_key_shapes_and_patterns() -> None:
    builder = KeyBuilder(fx.get_user, namespace="users")
    assert re.fullmatch(rf"users:tests\._keyfixtures\.get_user:v1:42:{DIGEST}", builder((42,), {}))
    assert builder.function_id == "tests._keyfixtures.get_user"
    assert builder.pattern() == "users:tests._keyfixtures.get_user:v1:*"
    assert re.fullmatch(rf"tests\._keyfixtures\.one:v1:{DIGEST}", one_key([1]))
    assert one_key("not a label!").count(":") == 2
    assert one_key(10**6).count(":") == 2
    assert len(digest(b"")) == 32


@pytest.mark.slow
def test_same_calls_give_same_keys_in_other_processes() -> None:
    here = fx.derive_all()  # includes a set of strings, whose iteration order the seed moves
    code = "import json, tests._keyfixtures as f; print(json.dumps(f.derive_all()))"
    for seed in {"1", "4242"} - {os.environ.get("PYTHONHASHSEED")}:
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout) == here


# -- errors and configuration ----------------------------------------------------------


def test_key_derivation_error_names_the_argument() -> None:
    async def f(user_id: int, filters: list[Any]) -> None: ...

    with pytest.raises(KeyDerivationError) as info:
        KeyBuilder(f)((1, ["a", "b", object()]), {})
    message = str(info.value)
    assert "argument 'filters' (item 2)" in message
    assert "ignore=('filters',)" in message and "key=" in message and "__memo_key__" in message
    assert isinstance(info.value, TypeError)
    with pytest.raises(KeyDerivationError, match=r"argument 'filters' \(key 'a', item 0\)"):
        KeyBuilder(f)((1, {"a": [lambda: 0]}), {})
    with pytest.raises(KeyDerivationError, match="not frozen"):
        one_key(fx.MutablePoint(1))
    nested: list[Any] = []
    nested.append(nested)
    with pytest.raises(KeyDerivationError, match="contains itself"):
        one_key(nested)


def test_ignore_of_an_unknown_name_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"'nope'.*parameters are: user_id"):
        KeyBuilder(fx.get_user, ignore=("nope",))
    with pytest.raises(ConfigError):
        make_binder(fx.get_user, ignore=("nope",))
    with pytest.raises(ConfigError, match=r"ignore=\('user_id',\)"):
        KeyBuilder(fx.get_user, ignore="user_id")


def test_ignored_arguments_leave_the_key() -> None:
    async def load(user_id: int, db: object) -> None: ...

    builder = KeyBuilder(load, ignore=("db",))
    assert builder((1, object()), {}) == builder((1, object()), {})
    assert KeyBuilder(load, ignore=(n for n in ["db"]))((1, object()), {}) == builder((1, 2), {})


def test_bad_settings_are_config_errors() -> None:
    for bad in (-1, 1.0, "1", True):
        with pytest.raises(ConfigError, match="version"):
            KeyBuilder(fx.get_user, version=bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="namespace"):
        KeyBuilder(fx.get_user, namespace="")
    with pytest.raises(ConfigError, match="operation"):
        ai_key(operation="", text="t", options=None)
    with pytest.raises(ConfigError, match="text_hash_threshold"):
        KeyBuilder(fx.get_user, text_hash_threshold=-1)


def test_odd_names_become_safe_key_segments() -> None:
    def outer() -> Any:
        return lambda x: x

    builder = KeyBuilder(outer(), namespace="my space/ü")
    assert builder.function_id.endswith("outer.locals.lambda")
    assert SAFE_KEY.fullmatch(builder((1,), {}))
    assert builder((1,), {}).startswith("my%20space%2F%C3%BC:")
    assert ai_key(operation="qa <v2>*", text="t", options=None).startswith(
        "ai:qa%20%3Cv2%3E%2A:v1:"
    )


# -- property tests --------------------------------------------------------------------

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**63 - 3, max_value=2**66)
    | st.integers(min_value=-(2**66), max_value=-(2**63) + 3)
    | st.sampled_from([0.0, -0.0, math.nan, -math.nan, math.inf, 1.0, 1.5])
    | st.floats()
    | st.text(st.characters() | st.sampled_from(":*{}\\ ?[]"), max_size=12)
    | st.binary(max_size=8)
)
HASHABLE = st.recursive(
    SCALARS, lambda inner: st.tuples(inner, inner) | st.frozensets(inner, max_size=3), max_leaves=5
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.lists(inner, max_size=3).map(tuple)
        | st.dictionaries(HASHABLE, inner, max_size=3)
        | st.sets(HASHABLE, max_size=3)
        | st.frozensets(HASHABLE, max_size=3)
    ),
    max_leaves=8,
)


def structure(value: Any) -> Any:
    """What makes two arguments the same: type and value; nan equals nan, -0.0 is not 0.0."""
    t = type(value)
    if t is float:
        return ("float", "nan" if math.isnan(value) else value.hex())
    if t in (list, tuple):
        return (t.__name__, tuple(map(structure, value)))
    if t is dict:
        pairs = Counter((structure(k), structure(v)) for k, v in value.items())
        return ("dict", frozenset(pairs.items()))
    if t in (set, frozenset):
        return (t.__name__, frozenset(Counter(map(structure, value)).items()))
    return (t.__name__, bytes(value) if t is bytearray else value)


def twins(value: Any) -> list[Any]:
    """Values that a careless encoding would confuse with ``value`` (one level down too)."""
    t = type(value)
    out: list[Any] = []
    if t is bool:
        out += [int(value), float(value), str(value)]
    elif t is int:
        out += [str(value), -value, value + 2**64, (value % 2**64).to_bytes(8, "big")]
        out += [float(value)] if abs(value) < 2**1000 else []
        out += [bool(value)] if value in (0, 1) else []
    elif t is float:
        out += [-value, str(value), math.nan]
        out += [int(value)] if math.isfinite(value) and value.is_integer() else []
    elif t is str:
        out += [value.encode("utf-8", "surrogatepass"), value.split(" "), value.split(":")]
        out += [value[:-1], value + "\x00"]
    elif t is bytes:
        out += [value.decode("latin-1"), bytearray(value)]
    elif value is None:
        out += ["None", b"", 0, False]
    elif t in (list, tuple):
        other = tuple if t is list else list
        out += [other(value), t([value]), t(value[:-1])]
        out += [t([twin, *value[1:]]) for twin in twins(value[0])] if value else [None]
    elif t is dict:
        out += [list(value.items()), set(value), list(value.values())]
        for k in list(value)[:1]:
            out += [{**value, k: twin} for twin in twins(value[k])]
    elif t in (set, frozenset):
        out += [(frozenset if t is set else set)(value), sorted(value, key=repr), tuple(value)]
    return out


@pytest.mark.slow
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(VALUES, max_size=3).map(tuple), min_size=1, max_size=6))
def test_distinct_arguments_never_share_a_key(calls: list[tuple[Any, ...]]) -> None:
    candidates = list(calls)
    for args in calls:
        candidates.append(tuple(" ".join(map(str, args)).split(" ")))
        for i, arg in enumerate(args):
            candidates += [(*args[:i], twin, *args[i + 1 :]) for twin in twins(arg)]
    for builder in (KeyBuilder(fx.anything), KeyBuilder(fx.anything, text_hash_threshold=4)):
        seen: dict[str, Any] = {}
        for args in candidates:
            key = builder(args, {})
            assert SAFE_KEY.fullmatch(key)
            assert seen.setdefault(key, structure(args)) == structure(args), args


@pytest.mark.slow
@settings(max_examples=150, deadline=None)
@given(
    name=st.text(min_size=1, max_size=20),
    args=st.lists(st.text(max_size=40) | st.integers() | st.booleans(), max_size=4),
)
def test_keys_never_contain_unsafe_characters(name: str, args: list[Any]) -> None:
    async def f(*a: Any) -> None: ...

    f.__qualname__ = f.__module__ = name
    for key in (
        KeyBuilder(f, namespace=name)(tuple(args), {}),
        KeyBuilder(f)(tuple(args), {}),
        ai_key(operation=name, text=str(args), options={"a": args}),
    ):
        assert SAFE_KEY.fullmatch(key) and key.isascii()


# -- the binder ------------------------------------------------------------------------


def sig_plain(a, b=2, *args, c, d=4, **kw): ...  # type: ignore[no-untyped-def]
def sig_posonly(a, /, b, *, c=3): ...  # type: ignore[no-untyped-def]
def sig_star(*args, **kwargs): ...  # type: ignore[no-untyped-def]
def sig_empty(): ...  # type: ignore[no-untyped-def]
def sig_defaults(a, b=None, /, c=[], *args): ...  # type: ignore[no-untyped-def]  # noqa: B006
def sig_shadow(x, /, **kw): ...  # type: ignore[no-untyped-def]
def sig_kwonly(*, k, _d0=1): ...  # type: ignore[no-untyped-def]
def sig_method(self, a, b=1, *rest): ...  # type: ignore[no-untyped-def]


SIGNATURES = [sig_plain, sig_posonly, sig_star, sig_empty, sig_defaults, sig_shadow, sig_kwonly]
NAMES = ["a", "b", "c", "d", "k", "x", "kw", "args", "kwargs", "self", "rest", "_d0", "zz"]


def python_binding(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    bound = inspect.signature(func).bind(*args, **kwargs)
    bound.apply_defaults()
    return tuple(bound.arguments.items())


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(
    func=st.sampled_from([*SIGNATURES, sig_method]),
    args=st.lists(st.integers(0, 9), max_size=5).map(tuple),
    kwargs=st.dictionaries(st.sampled_from(NAMES), st.integers(0, 9), max_size=3),
)
def test_binder_matches_signature_bind(func: Any, args: Any, kwargs: dict[str, Any]) -> None:
    binder = make_binder(func)
    # The call itself says whether it binds (the signatures' bodies do nothing):
    # Signature.bind is not the judge, as Python 3.13.0's binds f(x=0) for
    # f(x, /, **kw) into kw and reports no missing x, where the call raises.
    try:
        func(*args, **kwargs)
    except TypeError as python:
        with pytest.raises(TypeError) as info:
            binder(args, kwargs)
        assert str(info.value) == str(python)
        return
    expected = python_binding(func, args, kwargs)
    assert binder(args, kwargs) == expected
    assert make_binder(func, ignore=("a",) if "a" in dict(expected) else ())(args, kwargs) == (
        tuple(item for item in expected if item[0] != "a")
    )
    if expected:
        skipped = make_binder(func, skip_first=True)(args, kwargs)
        first, value = expected[0]
        if first in ("args", "rest") and func is not sig_method:
            assert skipped[0] == (first, value[1:])
        else:
            assert skipped == expected[1:]


def test_binder_copes_with_defaults_and_odd_signatures() -> None:
    marker: list[Any] = []

    def f(a, b=marker, *, c=None): ...  # type: ignore[no-untyped-def]

    binder = make_binder(f)
    assert binder((1,), {})[1][1] is marker
    assert make_binder(sig_shadow)((1,), {"x": 2}) == (("x", 1), ("kw", {"x": 2}))
    # A positional-only name given as a keyword goes to **kw, leaving x missing.
    with pytest.raises(TypeError, match="missing 1 required positional argument: 'x'"):
        make_binder(sig_shadow)((), {"x": 0})
    assert make_binder(sig_method, skip_first=True)((None, 1), {}) == (
        ("a", 1),
        ("b", 1),
        ("rest", ()),
    )


# -- the fast map ----------------------------------------------------------------------


def test_warm_fast_map_never_confuses_equal_values_of_other_types() -> None:
    async def f(x: Any, y: Any = "y") -> None: ...

    cold = KeyBuilder(f)
    cold._fast = None
    warm = KeyBuilder(f)
    calls: list[tuple[Any, ...]] = [
        (1,), (True,), (1.0,), (0,), (False,), (0.0,), (-0.0,), (None,), ("1",),
        (1, "a"), (True, "a"), (1.0, "a"), (1, True), (1, 1), (0.0, 0), (-0.0, 0),
        ("x" * 100,), ("x" * 100, 1),
    ]  # fmt: skip
    for _ in range(3):
        for args in calls:
            assert warm(args, {}) == cold(args, {}), args
    assert len({warm(args, {}) for args in calls}) == len(calls)


def test_warm_fast_map_for_methods_matches_the_slow_path() -> None:
    warm = KeyBuilder(fx.UserService.load, method=True)
    cold = KeyBuilder(fx.UserService.load, method=True)
    cold._fast = None
    for _ in range(3):
        for value in (1, True, "1", None):
            assert warm((fx.UserService(), value), {}) == cold((fx.UserService(), value), {})


def test_fast_map_is_bounded() -> None:
    builder = KeyBuilder(fx.get_user)
    for i in range(20_000):
        builder((i,), {})
    assert builder._fast is not None and len(builder._fast) + len(builder._old) <= 4096

    async def variadic(*items: int) -> None: ...

    many = KeyBuilder(variadic)
    many((*range(17),), {})  # an entry holds its arguments: too many never enter
    many((*range(16),), {})
    assert many._fast is not None and len(many._fast) + len(many._old) == 1


def _counting(builder: KeyBuilder) -> Counter[Any]:
    """Count the full derivations of ``builder``, by the arguments derived."""
    counts: Counter[Any] = Counter()
    derive = builder._derive

    def counted(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        counts[args] += 1
        return derive(args, kwargs)

    builder._derive = counted  # type: ignore[method-assign]
    return counts


def test_hot_keys_stay_in_the_fast_map_while_one_off_calls_pass() -> None:
    builder = KeyBuilder(fx.get_user)
    counts = _counting(builder)
    hot = [(i,) for i in range(200)]
    keys = {args: builder(args, {}) for args in hot}
    one_off = 10**6
    for _ in range(100):  # 20 000 one-off calls: ten young generations filled and dropped
        for args in hot:
            assert builder(args, {}) == keys[args]
            one_off += 1
            builder((one_off,), {})
    assert all(counts[args] == 1 for args in hot)  # derived once, served ever since
    assert sum(counts.values()) == len(hot) + 20_000
    assert len(builder._fast or ()) + len(builder._old) <= 4096


def test_a_call_dropped_from_both_generations_is_derived_again() -> None:
    builder = KeyBuilder(fx.get_user)
    counts = _counting(builder)
    first = builder((-1,), {})
    for i in range(5000):  # more than two generations of other calls
        builder((i,), {})
    assert builder((-1,), {}) == first
    assert counts[(-1,)] == 2


_scalars = st.one_of(
    st.sampled_from([0, 1, -1, True, False, None, 0.0, -0.0, 1.0, "", "1", "a", "x" * 65]),
    st.integers(-(2**70), 2**70),
    st.text(max_size=70),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    pool=st.lists(
        st.one_of(st.tuples(_scalars), st.tuples(_scalars, _scalars)), min_size=1, max_size=40
    ),
    order=st.lists(st.integers(0, 39), min_size=1, max_size=300),
)
def test_keys_served_after_many_refills_equal_the_full_derivation(
    pool: list[tuple[Any, ...]], order: list[int]
) -> None:
    """With generations of 4 calls, a stream of calls fills and drops them many times;
    every key served, from either generation or derived, is the full derivation's."""

    async def f(x: Any, y: Any = "y") -> None: ...

    warm, cold = KeyBuilder(f), KeyBuilder(f)
    cold._fast = None
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("memo._keys._FAST_GENERATION", 4)
        for i in order:
            args = pool[i % len(pool)]
            assert warm(args, {}) == cold(args, {}), args
            assert len(warm._fast or ()) <= 4 and len(warm._old) <= 4


@settings(max_examples=300, deadline=None)
@given(value=st.one_of(_scalars, st.floats(allow_nan=False), st.binary(max_size=8)))
def test_a_one_parameter_function_keys_a_value_as_the_full_derivation_does(value: Any) -> None:
    async def f(x: Any) -> None: ...

    builder = KeyBuilder(f, text_hash_threshold=40)
    assert builder._one_head is not None
    assert builder._derive((value,), {}) == builder._derive_all((value,), {})
    # f(v) and f(x=v) share a key: the keyword call goes the full way, the other not.
    assert builder((value,), {}) == builder((), {"x": value})


def test_only_functions_keyed_by_one_argument_take_the_one_value_derivation() -> None:
    async def two(x: int, y: int = 2) -> None: ...

    async def star(*xs: int) -> None: ...

    async def ignored(x: int, trace: str = "") -> None: ...

    class Service:
        async def get(self, x: int) -> None: ...

    assert KeyBuilder(two)._one_head is None
    assert KeyBuilder(star)._one_head is None
    assert KeyBuilder(Service.get, method=True)._one_head is None
    assert KeyBuilder(fx.get_user, key=lambda user_id: user_id)._one_head is None
    assert KeyBuilder(ignored, ignore=["trace"])._one_head is not None
    one = KeyBuilder(ignored, ignore=["trace"])
    assert one((5,), {}) == one((5, "t"), {}) == one._derive_all((5,), {})


def test_fast_map_is_off_for_key_callables_and_mutable_defaults() -> None:
    async def f(x: int, opts: list[Any] = []) -> None: ...  # noqa: B006

    assert KeyBuilder(f)._fast is None
    assert KeyBuilder(fx.get_user, key=lambda user_id: user_id)._fast is None
    assert KeyBuilder(fx.get_user)._fast is not None


_flat_options = st.dictionaries(
    st.sampled_from(["max_length", "temperature", "style", "model", "top_p", "seed"]),
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-3, 3),
        st.floats(allow_nan=False, min_value=-3, max_value=3),
        st.sampled_from(["news", "brief", "", "x" * 1200]),
    ),
    max_size=6,
)


@pytest.mark.slow
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(_flat_options, _flat_options)
def test_remembered_flat_options_give_the_keys_a_fresh_derivation_gives(
    first: dict[str, Any], second: dict[str, Any]
) -> None:
    """The fast path for flat option dicts must agree with the full derivation, whatever
    was remembered before (1, 1.0 and True; 0.0 and -0.0; orders; long strings)."""
    import memo._aikeys as keys

    for options in (first, second, dict(reversed(list(first.items()))), first):
        keys._OPTIONS_NODES.clear()
        fresh = ai_key(operation="summarize", text="t", options=options)
        for remembered in (first, second, options):
            ai_key(operation="summarize", text="t", options=remembered)
        assert fresh == ai_key(operation="summarize", text="t", options=options)

    def material(o: dict[str, Any]) -> bytes:
        return canonical(normalize_options(o), text_hash_threshold=1000)

    same = material(first) == material(second)
    assert same == (
        ai_key(operation="s", text="t", options=first)
        == ai_key(operation="s", text="t", options=second)
    )


def test_remembered_options_keep_types_apart() -> None:
    variants = [{"n": 1}, {"n": 1.0}, {"n": True}, {"n": "1"}, {"n": 1.5}]
    found = [ai_key(operation="s", text="t", options=v) for v in variants * 2]
    assert found[:5] == found[5:]
    assert found[0] == found[1]  # 1.0 normalizes to 1, as documented
    assert len(set(found[1:5])) == 4  # True, "1" and 1.5 stay apart
    assert ai_key(operation="s", text="t", options={"z": 0.0}) == ai_key(
        operation="s", text="t", options={"z": -0.0}
    )
