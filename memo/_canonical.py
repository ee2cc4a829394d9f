"""Canonical key material: type-tagged msgpack of values, and its xxh3-128 digest.

Canonical form: msgpack already tells nil, bool, int, float, str and bin apart, so those go
in as themselves; anything else becomes an array ``[tag, ...]`` (every array in the material
is such a node, so no value can pass for another type). Part of the persisted format:
list and tuple differ, as do set and frozenset; dicts and sets are sorted by the canonical
bytes of their entries; ints outside int64 have their own tag; every NaN is one value; a
str longer than ``text_hash_threshold`` characters enters as its xxh3-128 and length;
datetime and time keep wall-clock fields plus the UTC offset (not the tzinfo object);
Decimal keeps its exponent; Enum members key by class and value, objects with
``__memo_key__()`` by class and its result, frozen dataclasses by class and the fields that
take part in equality; other subclasses of builtins as their base type. Anything else is a
KeyDerivationError naming the argument. Never ``hash()``, ``id()`` or a default ``repr``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import msgpack
import xxhash

from memo._validate import check_int
from memo.exceptions import KeyDerivationError

__all__ = [
    "DEFAULT_TEXT_HASH_THRESHOLD",
    "check_text_hash_threshold",
    "INT64_MAX",
    "INT64_MIN",
    "KEY_ENTRY",
    "SELF_ENTRY",
    "SEQUENCE_TAGS",
    "canonical",
    "digest",
    "encode",
    "pack",
    "self_node",
]

#: Strings longer than this many characters enter keys as their digest and length,
#: unless a decorator or the cache's AI settings say otherwise.
DEFAULT_TEXT_HASH_THRESHOLD = 1000


def check_text_hash_threshold(value: object) -> int:
    """``value`` when it is a usable ``text_hash_threshold``: characters, 0 (hash every
    string) to 10**9."""
    if type(value) is int and 0 <= value <= 10**9:  # checked per AI key: the common case first
        return value
    return int(check_int("text_hash_threshold", value, 0, 10**9))


# Node tags are inside every stored key's digest: never renumber, only append.
_LIST, _TUPLE, _DICT, _SET, _FROZENSET, _BIGINT, _NAN, _TEXT, _BYTEARRAY = range(1, 10)
_DATETIME, _DATE, _TIME, _TIMEDELTA, _UUID, _DECIMAL, _ENUM, _MEMO_KEY, _DATACLASS = range(10, 19)
#: Tags of the nodes of lists and tuples, whose items a label may show.
SEQUENCE_TAGS = frozenset({_LIST, _TUPLE})
# Reserved entry names: not identifiers, so no parameter can collide with them.
SELF_ENTRY, KEY_ENTRY = "<self>", "<key>"
#: Marks the keys of a streamed function: a list of chunks never shares a key with a reply.
STREAM_ENTRY = "<stream>"

#: Ints in this range are msgpack ints; others enter as a tagged node of their bytes.
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1

# Shared packers save allocating a 256 KiB buffer per key. pack() is never re-entered: the
# material holds exact builtin types only, so it never calls back into Python and runs
# under the GIL as one step. The strict one is faster; lone surrogates need the other.
_pack_strict: Callable[[Any], bytes] = msgpack.Packer().pack
_pack_lenient: Callable[[Any], bytes] = msgpack.Packer(unicode_errors="surrogatepass").pack


def pack(material: Any) -> bytes:
    """msgpack bytes of material built from exact builtin types (lone surrogates allowed)."""
    try:
        return _pack_strict(material)
    except UnicodeEncodeError:
        return _pack_lenient(material)


class _Unencodable(Exception):
    """A value with no encoding; ``path`` grows innermost-first as the error unwinds."""

    def __init__(self, value: Any, reason: str = "") -> None:
        super().__init__()
        self.value, self.reason, self.path = value, reason, list[str]()


def _type_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _node(v: Any, thr: int) -> Any:
    """The canonical, msgpack-ready node of one value (hot: exact types tested first)."""
    t = type(v)
    if t is str:
        if len(v) <= thr:
            return v
        return [_TEXT, xxhash.xxh3_128_digest(v.encode("utf-8", "surrogatepass")), len(v)]
    if t is int:
        if INT64_MIN <= v <= INT64_MAX:
            return v
        # to_bytes, not str(): str() of huge ints is capped by sys.set_int_max_str_digits.
        return [_BIGINT, v.to_bytes(v.bit_length() // 8 + 1, "big", signed=True)]
    if t is bool or v is None or t is bytes:
        return v
    if t is float:
        return v if v == v else [_NAN]  # NaNs differ in sign and payload bits
    handler = _HANDLERS.get(t)
    return handler(v, thr) if handler is not None else _other_node(v, thr)


def _items(tag: int, v: Any, thr: int) -> list[Any]:
    out: list[Any] = [tag]
    if not v:
        return out
    for i, item in enumerate(v):
        try:
            out.append(_node(item, thr))
        except _Unencodable as exc:
            exc.path.append(f"item {i}")
            raise
    return out


def _dict_node(v: Any, thr: int) -> list[Any]:
    pairs = []
    for k, item in v.items():
        try:
            kn = _node(k, thr)
        except _Unencodable as exc:
            exc.path.append("a key")
            raise
        try:
            pairs.append(pack([kn, _node(item, thr)]))
        except _Unencodable as exc:
            plain = type(k) in (int, str) and len(repr(k)) < 40
            exc.path.append(f"key {k!r}" if plain else "a value")
            raise
    return [_DICT, *sorted(pairs)]


def _set_node(tag: int, v: Any, thr: int) -> list[Any]:
    try:
        return [tag, *sorted(pack(_node(item, thr)) for item in v)]
    except _Unencodable as exc:
        exc.path.append("an element")
        raise


def _wall(v: Any) -> list[Any]:
    off = v.utcoffset()
    off = None if off is None else off // dt.timedelta(microseconds=1)
    return [v.hour, v.minute, v.second, v.microsecond, off]


_HANDLERS: dict[type, Callable[[Any, int], Any]] = {
    list: lambda v, thr: _items(_LIST, v, thr),
    tuple: lambda v, thr: _items(_TUPLE, v, thr),
    dict: _dict_node,
    set: lambda v, thr: _set_node(_SET, v, thr),
    frozenset: lambda v, thr: _set_node(_FROZENSET, v, thr),
    bytearray: lambda v, thr: [_BYTEARRAY, bytes(v)],
    dt.datetime: lambda v, thr: [_DATETIME, v.year, v.month, v.day, *_wall(v)],
    dt.date: lambda v, thr: [_DATE, v.year, v.month, v.day],
    dt.time: lambda v, thr: [_TIME, *_wall(v)],
    dt.timedelta: lambda v, thr: [_TIMEDELTA, v.days, v.seconds, v.microseconds],
    uuid.UUID: lambda v, thr: [_UUID, v.bytes],
    Decimal: lambda v, thr: [_DECIMAL, str(v)],
}
# Subclasses of builtins key as their base (a namedtuple as a tuple, OrderedDict as dict);
# the slot methods return exact builtins. Order matters: a datetime is a date.
_BASES: list[tuple[type, Callable[[Any, int], Any]]] = [
    (str, lambda v, thr: _node(str.__str__(v), thr)),
    (int, lambda v, thr: _node(int.__int__(v), thr)),
    (float, lambda v, thr: _node(float.__float__(v), thr)),
    (bytes, lambda v, thr: bytes(memoryview(v))),
    *_HANDLERS.items(),
]


def _other_node(v: Any, thr: int) -> Any:
    cls = type(v)
    if getattr(cls, "__memo_key__", None) is not None:
        try:
            return [_MEMO_KEY, _type_name(cls), _node(v.__memo_key__(), thr)]
        except _Unencodable as exc:
            exc.path.append("its __memo_key__()")
            raise
    if isinstance(v, enum.Enum):
        return [_ENUM, _type_name(cls), _node(v.value, thr)]
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        # Only frozen ones: a mutable instance could change after its key was taken.
        if not cls.__dataclass_params__.frozen:
            raise _Unencodable(v, "a dataclass that is not frozen")
        out: list[Any] = [_DATACLASS, _type_name(cls)]
        for f in dataclasses.fields(v):
            try:
                out += (f.name, _node(getattr(v, f.name), thr)) if f.compare else ()
            except _Unencodable as exc:
                exc.path.append(f"field {f.name!r}")
                raise
        return out
    for base, handler in _BASES:
        if isinstance(v, base):
            return handler(v, thr)
    raise _Unencodable(v)


def _key_error(owner: str, name: str, exc: _Unencodable | None) -> KeyDerivationError:
    """Say which argument (and where inside it) has no encoding, and the ways out."""
    special = {SELF_ENTRY: "the __memo_key__() of self", KEY_ENTRY: "the key= result"}
    where = special.get(name, f"argument {name!r}")
    outs = f"leave it out with ignore=({name!r},), build the key yourself with key="
    if name in special:
        outs = "return plain values (ints, strs, tuples, ...)"
    if exc is None:
        return KeyDerivationError(
            f"cannot derive a cache key for {owner}: {where} is nested too deeply or "
            f"contains itself; {outs}."
        )
    if exc.path:
        where += f" ({', '.join(reversed(exc.path))})"
    cls = type(exc.value)
    what = f"{exc.reason} ({_type_name(cls)})" if exc.reason else f"a {_type_name(cls)}"
    return KeyDerivationError(
        f"cannot derive a cache key for {owner}: {where} is {what}, which has no stable key "
        f"encoding; {outs}, or give {cls.__qualname__} a __memo_key__() method returning "
        "plain values."
    )


def encode(owner: str, name: str, value: Any, thr: int) -> Any:
    """The canonical node of ``value``, argument ``name`` of ``owner``.

    Raises:
        KeyDerivationError: naming the argument, where inside it, and the ways out.
    """
    try:
        return _node(value, thr)
    except _Unencodable as exc:
        raise _key_error(owner, name, exc) from None
    except RecursionError:
        raise _key_error(owner, name, None) from None


def canonical(value: Any, *, text_hash_threshold: int) -> bytes:
    """Canonical, type-tagged msgpack bytes of one value.

    Raises:
        KeyDerivationError: ``value`` (or something inside it) has no stable encoding.
    """
    return pack(encode("a value", "value", value, text_hash_threshold))


def digest(material: bytes) -> str:
    """xxh3-128 of ``material`` as 32 lowercase hex characters."""
    return xxhash.xxh3_128_hexdigest(material)


def self_node(owner: str, obj: Any, thr: int) -> list[Any]:
    """The node of ``obj.__memo_key__()`` standing for self; its last item is the result's node.

    Raises:
        KeyDerivationError: the result has no stable encoding.
    """
    value = obj.__memo_key__()
    return [_MEMO_KEY, _type_name(type(obj)), encode(owner, SELF_ENTRY, value, thr)]
