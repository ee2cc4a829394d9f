"""Cache keys: stable, type-tagged, the same in every process.

Function key ``[{namespace}:]{module.qualname}:v{version}:{label}{digest}``; AI key
``ai:{operation}:v{version}:{digest}``. The digest alone makes a key unique: xxh3-128 over
canonical msgpack of the function's identity and bound arguments. The label (up to three
small ints, bools and short plain strings, each followed by ``:``) is for humans reading
Redis and is never parsed.

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
import inspect
import keyword
import re
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from decimal import Decimal
from operator import itemgetter
from typing import Any, Literal

import msgpack
import xxhash

from memo.exceptions import ConfigError, KeyDerivationError

__all__ = [
    "AIKeyBuilder",
    "KeyBuilder",
    "ai_key",
    "canonical",
    "digest",
    "make_binder",
    "normalize_options",
]

Binder = Callable[[tuple[Any, ...], dict[str, Any]], tuple[tuple[str, Any], ...]]

# Node tags are inside every stored key's digest: never renumber, only append.
_LIST, _TUPLE, _DICT, _SET, _FROZENSET, _BIGINT, _NAN, _TEXT, _BYTEARRAY = range(1, 10)
_DATETIME, _DATE, _TIME, _TIMEDELTA, _UUID, _DECIMAL, _ENUM, _MEMO_KEY, _DATACLASS = range(10, 19)
# Reserved entry names: not identifiers, so no parameter can collide with them.
_SELF, _KEY = "<self>", "<key>"

_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
_LABEL_INT, _LABEL_ITEMS, _LABEL_LEN = 10**6, 3, 32
_LABEL_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")
_FAST_MAP_SIZE, _FAST_STR_LEN = 4096, 64
_FAST_TYPES = frozenset({int, str, bool, type(None)})
_IMMUTABLE: tuple[type, ...] = (bool, int, float, str, bytes, Decimal, uuid.UUID, enum.Enum)
_IMMUTABLE += (dt.date, dt.time, dt.timedelta)
_ID_UNSAFE, _NS_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]"), re.compile(r"[^A-Za-z0-9_.:-]")

# Shared packers save allocating a 256 KiB buffer per key. pack() is never re-entered: the
# material holds exact builtin types only, so it never calls back into Python and runs
# under the GIL as one step. The strict one is faster; lone surrogates need the other.
_pack_strict: Callable[[Any], bytes] = msgpack.Packer().pack
_pack_lenient: Callable[[Any], bytes] = msgpack.Packer(unicode_errors="surrogatepass").pack


def _pack(material: Any) -> bytes:
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
        if _INT64_MIN <= v <= _INT64_MAX:
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
            pairs.append(_pack([kn, _node(item, thr)]))
        except _Unencodable as exc:
            plain = type(k) in (int, str) and len(repr(k)) < 40
            exc.path.append(f"key {k!r}" if plain else "a value")
            raise
    return [_DICT, *sorted(pairs)]


def _set_node(tag: int, v: Any, thr: int) -> list[Any]:
    try:
        return [tag, *sorted(_pack(_node(item, thr)) for item in v)]
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
    special = {_SELF: "the __memo_key__() of self", _KEY: "the key= result"}
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


def _encode(owner: str, name: str, value: Any, thr: int) -> Any:
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
    return _pack(_encode("a value", "value", value, text_hash_threshold))


def digest(material: bytes) -> str:
    """xxh3-128 of ``material`` as 32 lowercase hex characters."""
    return xxhash.xxh3_128_hexdigest(material)


# -- binding ----------------------------------------------------------------------------


def _compile_binder(
    func: Callable[..., Any], skip_first: bool, ignore: frozenset[str]
) -> tuple[Callable[..., tuple[tuple[str, Any], ...]], list[inspect.Parameter]]:
    """Compile a function with ``func``'s parameters that returns ((name, value), ...).

    Python then binds every call itself (defaults, keyword-only, ``*args``, the TypeErrors):
    exact by construction and several times faster than ``Signature.bind``.
    """
    qualname = getattr(func, "__qualname__", repr(func))
    try:
        params = list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"cannot read the signature of {qualname}: {exc}") from exc
    unknown = sorted(ignore - {p.name for p in params})
    if unknown:
        raise ConfigError(
            f"ignore= names {', '.join(map(repr, unknown))}, which {qualname} does not have; "
            f"its parameters are: {', '.join(p.name for p in params) or '(none)'}"
        )
    if skip_first and not params:
        raise ConfigError(f"{qualname} is used as a method but takes no self/cls parameter")
    defaults: dict[str, Any] = {}
    spec, returned = [], []
    star_done = False
    for i, p in enumerate(params):
        if p.kind is p.KEYWORD_ONLY and not star_done:
            spec.append("*")
        star_done = star_done or p.kind in (p.VAR_POSITIONAL, p.KEYWORD_ONLY)
        if p.kind is p.VAR_POSITIONAL:
            spec.append(f"*{p.name}")
        elif p.kind is p.VAR_KEYWORD:
            spec.append(f"**{p.name}")
        elif p.default is p.empty:
            spec.append(p.name)
        else:  # defaults are looked up in the globals, where parameter names cannot shadow
            defaults[f"_d{i}"] = p.default
            spec.append(f"{p.name}=_d{i}")
        if p.kind is p.POSITIONAL_ONLY and (
            i + 1 == len(params) or params[i + 1].kind is not p.POSITIONAL_ONLY
        ):
            spec.append("/")
        if p.name in ignore:
            continue
        if i == 0 and skip_first:
            if p.kind is p.VAR_POSITIONAL:  # self arrives as the first of *args
                returned.append(f"({p.name!r}, {p.name}[1:]),")
            continue
        returned.append(f"({p.name!r}, {p.name}),")
    name = getattr(func, "__name__", "")
    if not name.isidentifier() or keyword.iskeyword(name):
        name = "bind"
    exec(f"def {name}({', '.join(spec)}):\n    return ({' '.join(returned)})", defaults)
    gen = defaults[name]
    gen.__qualname__ = qualname  # so a bad call raises Python's own message, word for word
    return gen, params


def make_binder(
    func: Callable[..., Any], *, skip_first: bool = False, ignore: Iterable[str] = ()
) -> Binder:
    """Build, once, a function mapping ``(args, kwargs)`` to ``((name, value), ...)``.

    Defaults are applied and parameters come in signature order; ``*args`` is one entry
    holding a tuple, ``**kwargs`` one holding a dict. ``skip_first`` drops self/cls and
    ``ignore`` the named parameters. A call Python would reject raises the same TypeError.

    Raises:
        ConfigError: ``ignore`` names a parameter that ``func`` does not have.
    """
    gen = _compile_binder(func, skip_first, _names(ignore))[0]

    def binder(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
        return gen(*args, **kwargs)

    return binder


# -- shared by both builders -------------------------------------------------------------


def _names(ignore: Iterable[str]) -> frozenset[str]:
    if isinstance(ignore, str):  # ignore="db" would otherwise mean ignore=("d", "b")
        raise ConfigError(f"ignore= takes a collection of names, e.g. ignore=({ignore!r},)")
    return frozenset(ignore)


def _check_int(what: str, value: object) -> int:
    if type(value) is not int or value < 0:
        raise ConfigError(f"{what} must be an int >= 0, got {value!r}")
    return value


def _check_name(what: str, value: object, unsafe: re.Pattern[str]) -> str:
    """Validate a namespace/operation/function name and return its key-safe form."""
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{what} must be a non-empty str, got {value!r}")
    return unsafe.sub("_", value.replace("<", "").replace(">", "")) or "_"


def _label(values: Sequence[Any]) -> str:
    out, n = "", 0
    for v in values:
        t = type(v)
        if t is int:
            if -_LABEL_INT < v < _LABEL_INT:
                out, n = f"{out}{v}:", n + 1
        elif t is str:
            if 0 < len(v) <= _LABEL_LEN and _LABEL_CHARS.issuperset(v):
                out, n = f"{out}{v}:", n + 1
        elif t is bool:
            out, n = f"{out}{v}:", n + 1
        if n == _LABEL_ITEMS:
            break
    return out


def _is_immutable(v: Any) -> bool:
    if isinstance(v, (tuple, frozenset)):
        return all(map(_is_immutable, v))
    return v is None or isinstance(v, _IMMUTABLE)


class _Builder:
    """Binding plus self/cls handling, common to function and AI keys."""

    def __init__(
        self, func: Callable[..., Any], thr: int, ignore: Iterable[str], method: bool
    ) -> None:
        self._thr = _check_int("text_hash_threshold", thr)
        self._ignore = _names(ignore)
        self._bind, self._params = _compile_binder(func, method, self._ignore)
        self._method = method
        self._keyed_types: dict[type, bool] = {}

    def _self_keyed(self, obj: Any) -> bool:
        """Does self's class define __memo_key__? Cached per class: asked on every call."""
        known = self._keyed_types.get(type(obj))
        if known is None:
            if len(self._keyed_types) >= 256:
                self._keyed_types.clear()
            known = getattr(type(obj), "__memo_key__", None) is not None
            self._keyed_types[type(obj)] = known
        return known

    def _self_material(
        self, owner: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[Any, list[Any]] | None:
        """(``__memo_key__()`` of self, its node), or None when self stays out of the key."""
        obj: Any = args[0] if args else kwargs.get(self._params[0].name)
        if not self._self_keyed(obj):
            return None
        value = obj.__memo_key__()
        return value, [_MEMO_KEY, _type_name(type(obj)), _encode(owner, _SELF, value, self._thr)]


# -- function keys ------------------------------------------------------------------------


class KeyBuilder(_Builder):
    """Derive the relative cache keys of one decorated function; built at decoration time.

    ``method=True``: the first argument is self/cls and stays out of the key, unless its
    class defines ``__memo_key__()``, whose result then joins the key. ``key=``: a callable
    taking the function's arguments (after self) whose result is keyed instead of them.

    Raises:
        ConfigError: bad ``namespace``, ``version``, ``text_hash_threshold`` or ``ignore``.
    """

    def __init__(
        self,
        func: Callable[..., Any],
        *,
        namespace: str | None = None,
        version: int = 1,
        ignore: Iterable[str] = (),
        key: Callable[..., Any] | None = None,
        text_hash_threshold: int = 1000,
        method: bool = False,
    ) -> None:
        super().__init__(func, text_hash_threshold, ignore, method)
        _check_int("version", version)
        ns = "" if namespace is None else _check_name("namespace", namespace, _NS_UNSAFE) + ":"
        qualname = getattr(func, "__qualname__", None) or type(func).__qualname__
        raw_id = f"{getattr(func, '__module__', None) or 'unknown'}.{qualname}"
        self._function_id = _check_name("function name", raw_id, _ID_UNSAFE)
        # The raw names go into the digest, so two names that sanitize alike still differ.
        self._head = [raw_id, version, namespace]
        self._prefix = f"{ns}{self._function_id}:v{version}:"
        self._key = key
        var = [p.name for p in self._params if p.kind is p.VAR_POSITIONAL]
        self._star = var[0] if var else None
        # The fast map assumes one call shape always yields one key: not so when key= may
        # read outside state, or when a default could be mutated in place.
        kept = [p for p in self._params[method:] if p.name not in self._ignore]
        frozen = all(p.default is p.empty or _is_immutable(p.default) for p in kept)
        self._fast: dict[tuple[Any, ...], str] | None = {} if key is None and frozen else None
        self._shapes: dict[tuple[type, ...], tuple[int, ...] | Literal[False]] = {}

    @property
    def function_id(self) -> str:
        """``module.qualname`` of the function, made key-safe."""
        return self._function_id

    def pattern(self) -> str:
        """Glob pattern matching every key of this function and version."""
        return self._prefix + "*"

    def __call__(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        """The key of ``func(*args, **kwargs)``, relative to the cache's prefix."""
        fast = self._fast
        if fast is None or kwargs:
            return self._derive(args, kwargs)
        rest = args
        if self._method:
            # A class not seen yet goes the slow way once, which records whether it is keyed.
            if not args or self._keyed_types.get(type(args[0]), True):
                return self._derive(args, kwargs)
            rest = args[1:]  # self is not part of the key: never hold it in the map
        # The types are part of the map key, as 1, 1.0 and True are equal and hash alike;
        # floats never enter (0.0 == -0.0). One argument, the common case, is inlined.
        mk: tuple[Any, ...]
        if len(rest) == 1:
            a = rest[0]
            t = type(a)
            if t is int or t is bool or a is None or (t is str and len(a) <= _FAST_STR_LEN):
                mk = (t, a)
            else:
                return self._derive(args, kwargs)
        else:
            # Spelled-out type() calls are several times faster than map(type, ...).
            n2 = len(rest) == 2
            types = (type(rest[0]), type(rest[1])) if n2 else tuple(map(type, rest))
            strs = self._shapes.get(types)
            if strs is None:
                strs = self._shape(types)
            if strs is False:
                return self._derive(args, kwargs)
            for i in strs:
                if len(rest[i]) > _FAST_STR_LEN:
                    return self._derive(args, kwargs)
            mk = (types, rest)
        found = fast.get(mk)
        if found is None:
            found = self._derive(args, kwargs)
            if len(fast) >= _FAST_MAP_SIZE:
                fast.clear()
            fast[mk] = found
        return found

    def _shape(self, types: tuple[type, ...]) -> tuple[int, ...] | Literal[False]:
        """Positions of the strs if all these types may use the fast map, else False."""
        strs: tuple[int, ...] | Literal[False] = False
        if _FAST_TYPES.issuperset(types):
            strs = tuple(i for i, t in enumerate(types) if t is str)
        if len(self._shapes) >= 256:
            self._shapes.clear()
        self._shapes[types] = strs
        return strs

    def _derive(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        owner, thr = self._function_id, self._thr
        entries: list[Any] = []
        labels: list[Any] = []
        if self._method and (found := self._self_material(owner, args, kwargs)) is not None:
            labels.append(found[0])
            entries += (_SELF, found[1])
        if self._key is not None:
            value = self._key(*args[self._method :], **kwargs)
            labels += value if type(value) in (tuple, list) else (value,)
            entries += (_KEY, _encode(owner, _KEY, value, thr))
        else:
            for name, value in self._bind(*args, **kwargs):
                if name == self._star:
                    labels += value
                else:
                    labels.append(value)
                t = type(value)
                # Plain scalars are their own node (as in _node): two calls fewer per argument.
                plain = (t is str and len(value) <= thr) or t is bool or value is None
                if plain or (t is int and _INT64_MIN <= value <= _INT64_MAX):
                    entries += (name, value)
                else:
                    entries += (name, _encode(owner, name, value, thr))
        material = _pack([*self._head, entries])
        return f"{self._prefix}{_label(labels)}{xxhash.xxh3_128_hexdigest(material)}"


# -- AI keys --------------------------------------------------------------------------------


def normalize_options(options: Any) -> Any:
    """Normalize AI options so that equivalent requests share a key.

    At every depth: mapping keys sorted, entries whose value is None dropped, integral
    floats made ints (``100.0`` -> ``100``; bools stay bools, NaN and inf stay floats) and
    tuples made lists. ``None`` means no options, as ``{}`` does.
    """
    return {} if options is None else _normalize(options)


_PLAIN = frozenset({str, int, bool, type(None), bytes})


def _normalize(v: Any) -> Any:
    t = type(v)
    if t in _PLAIN:  # the common leaves, before any (slow) abstract-class check
        return v
    if t is float:
        return int(v) if v.is_integer() else v
    if t is dict or isinstance(v, Mapping):
        items = [(_normalize(k), _normalize(x)) for k, x in v.items() if x is not None]
        try:
            items.sort(key=itemgetter(0))
        except TypeError:  # keys of mixed types: any fixed order will do
            items.sort(key=lambda kv: canonical(kv[0], text_hash_threshold=1 << 62))
        return dict(items)
    if t is list or t is tuple or isinstance(v, (list, tuple)):
        return [_normalize(x) for x in v]
    if isinstance(v, (set, frozenset)):
        return type(v)(map(_normalize, v))
    return v


#: Flat option dicts seen recently -> their encoded node (see _options_node).
_OPTIONS_NODES: dict[tuple[Any, ...], Any] = {}
_OPTIONS_NODES_SIZE, _OPTIONS_FAST_ITEMS = 1024, 16
_OPTION_LEAVES = frozenset({str, int, bool, float, type(None)})


def _options_node(options: Any, thr: int) -> Any:
    """The encoded node of normalized ``options``, remembered for flat dicts.

    Most AI calls pass a small flat dict of scalars, the same few over and over;
    normalizing and encoding one costs microseconds, a lookup far less. The map's key
    holds each value's exact type next to it, so ``1``, ``1.0`` and ``True`` never share
    an entry (``0.0`` and ``-0.0`` may: both normalize to ``0``), and the threshold,
    which decides how long strings encode.
    """
    if type(options) is not dict or len(options) > _OPTIONS_FAST_ITEMS:
        return _encode("an AI request", "options", normalize_options(options), thr)
    signature: list[Any] = [thr]
    for k, v in options.items():
        t = type(v)
        if type(k) is not str or t not in _OPTION_LEAVES:
            return _encode("an AI request", "options", normalize_options(options), thr)
        signature += (k, t, v)
    fingerprint = tuple(signature)
    node = _OPTIONS_NODES.get(fingerprint)
    if node is None:
        node = _encode("an AI request", "options", normalize_options(options), thr)
        if len(_OPTIONS_NODES) >= _OPTIONS_NODES_SIZE:
            _OPTIONS_NODES.clear()
        _OPTIONS_NODES[fingerprint] = node
    return node


def _ai_key(
    op: tuple[str, str], version: int, text: Any, options: Any, thr: int, extra: list[Any]
) -> str:
    """``op`` is (as given, key-safe); ``extra`` holds (name, node) pairs, already encoded."""
    entries = [
        "text",
        _encode("an AI request", "text", text, thr),
        "options",
        _options_node(options, thr),
    ]
    for name, node in sorted(extra, key=itemgetter(0)):
        entries += (name, node)
    material = _pack(["ai", op[0], version, entries])
    return f"ai:{op[1]}:v{version}:{digest(material)}"


def ai_key(
    *,
    operation: str,
    text: str,
    options: Mapping[str, Any] | None,
    version: int = 1,
    text_hash_threshold: int = 1000,
    extra: Sequence[tuple[str, Any]] = (),
) -> str:
    """The key of an AI request: ``ai:{operation}:v{version}:{digest}``.

    ``options`` go through :func:`normalize_options`; ``extra`` holds further
    ``(name, value)`` pairs (in any order) that the response depends on.

    Raises:
        ConfigError: empty ``operation``, bad ``version`` or ``text_hash_threshold``.
        KeyDerivationError: a value with no stable encoding.
    """
    op = (operation, _check_name("operation", operation, _ID_UNSAFE))
    thr = _check_int("text_hash_threshold", text_hash_threshold)
    nodes = [(name, _encode("an AI request", name, value, thr)) for name, value in extra]
    return _ai_key(op, _check_int("version", version), text, options, thr, nodes)


class AIKeyBuilder(_Builder):
    """Derive AI keys for an ``@ai_cached`` function, agreeing with :func:`ai_key`.

    ``text_arg`` and ``options_arg`` name the text and options parameters. Any other
    argument joins the key only when it differs from its default, compared by canonical
    bytes (so ``1`` does not pass for a default of ``True``): at defaults the key is exactly
    ``ai_key(operation=..., text=..., options=...)``.

    Raises:
        ConfigError: an argument name that ``func`` does not have, or bad settings.
    """

    def __init__(
        self,
        func: Callable[..., Any],
        *,
        operation: str,
        text_arg: str = "text",
        options_arg: str = "options",
        version: int = 1,
        text_hash_threshold: int = 1000,
        ignore: Iterable[str] = (),
        method: bool = False,
    ) -> None:
        super().__init__(func, text_hash_threshold, ignore, method)
        self._op = (operation, _check_name("operation", operation, _ID_UNSAFE))
        self._version = _check_int("version", version)
        params = [p for p in self._params[method:] if p.name not in self._ignore]
        names = [p.name for p in params]
        for what, arg in (("text_arg", text_arg), ("options_arg", options_arg)):
            if arg not in names:
                raise ConfigError(
                    f"{what}={arg!r} is not a parameter of {getattr(func, '__qualname__', func)}"
                    f" (ignored ones excluded); its parameters are: {', '.join(names)}"
                )
        if text_arg == options_arg:
            raise ConfigError(f"text_arg and options_arg both name {text_arg!r}")
        self._text_arg, self._options_arg = text_arg, options_arg
        # Canonical bytes of each other parameter's default (None: it has none).
        self._defaults: dict[str, bytes | None] = {}
        for p in params:
            default = p.default
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                default = () if p.kind is p.VAR_POSITIONAL else {}
            if default is not p.empty:
                try:
                    self._defaults[p.name] = _pack(_node(default, self._thr))
                except (_Unencodable, RecursionError):
                    self._defaults[p.name] = None  # any value given for it joins the key

    def __call__(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        """The AI key of ``func(*args, **kwargs)``."""
        text: Any = None
        options: Any = None
        extra: list[tuple[str, Any]] = []
        if self._method and (found := self._self_material(self._op[0], args, kwargs)) is not None:
            extra.append((_SELF, found[1]))
        for name, value in self._bind(*args, **kwargs):
            if name == self._text_arg:
                text = value
            elif name == self._options_arg:
                options = value
            else:
                node = _encode(self._op[0], name, value, self._thr)
                default = self._defaults.get(name)
                if default is None or _pack(node) != default:
                    extra.append((name, node))
        return _ai_key(self._op, self._version, text, options, self._thr, extra)
