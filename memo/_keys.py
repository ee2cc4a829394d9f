"""Function keys: ``[{namespace}:]{module.qualname}:v{version}:{label}{digest}``.

The digest (see ``memo._canonical``) alone makes a key unique: xxh3-128 over canonical
msgpack of the function's identity and bound arguments. The label (up to three small ints,
bools and short plain strings, each followed by ``:``) is for humans reading Redis and is
never parsed. It is read from the canonical material, not from the arguments, so the key
is a function of the material alone: a ``str`` subclass labels as the ``str`` it keys as,
an ``IntEnum`` member not at all, as its material is not an int.

``key_segment`` turns user-given names (a decorator's namespace, an AI operation) into key
segments, one name to one segment.
"""

from __future__ import annotations

import datetime as dt
import enum
import re
import uuid
from collections.abc import Callable, Iterable, Sequence
from decimal import Decimal
from typing import Any, Literal

import xxhash

from memo._binder import CallBinder
from memo._canonical import (
    DEFAULT_TEXT_HASH_THRESHOLD,
    INT64_MAX,
    INT64_MIN,
    KEY_ENTRY,
    SELF_ENTRY,
    SEQUENCE_TAGS,
    check_text_hash_threshold,
    encode,
    pack,
)
from memo._validate import check_int
from memo.exceptions import ConfigError

__all__ = ["FAST_STR_LEN", "KeyBuilder", "key_segment", "namespace_segment"]

_LABEL_INT, _LABEL_ITEMS, _LABEL_LEN = 10**6, 3, 32
_SEGMENT_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-"
_LABEL_CHARS = frozenset(_SEGMENT_CHARS)
_SAFE_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_ID_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
#: Longest str argument the fast map (and a hot path, see KeyBuilder.plain) keys by value.
FAST_STR_LEN = 64
#: Calls remembered per generation of the fast map; two generations are kept, so at most
#: twice this many (see KeyBuilder.__call__).
_FAST_GENERATION = 2048
#: Calls with more positional arguments than this (through *args) always derive: an entry
#: holds its arguments, and its size must stay bounded with the count of entries.
_FAST_ARGS = 16
_FAST_TYPES = frozenset({int, str, bool, type(None)})
_IMMUTABLE: tuple[type, ...] = (bool, int, float, str, bytes, Decimal, uuid.UUID, enum.Enum)
_IMMUTABLE += (dt.date, dt.time, dt.timedelta)


def _escape(char: str) -> str:
    return "".join(f"%{b:02X}" for b in char.encode("utf-8", "surrogatepass"))


def key_segment(name: object, what: str = "name") -> str:
    """The key segment of a user-given name (a decorator's namespace, an AI operation).

    A name of ``A-Z a-z 0-9 _ . -`` only is its own segment; in any other, each other
    character becomes ``%XX`` per byte of its UTF-8 (``%`` included). So two names never
    share a segment (``"a b"``, ``"a*b"`` and ``"a_b"`` stay apart), and a segment is
    ASCII, never holds ``:``, a space or a glob character, and can head a pattern as is.

    Raises:
        ConfigError: ``name`` is not a non-empty str; ``what`` names it in the message.
    """
    if type(name) is str and _SAFE_NAME.fullmatch(name):
        return name
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{what} must be a non-empty str, got {name!r}")
    return "".join(c if c in _LABEL_CHARS else _escape(c) for c in name)


def namespace_segment(namespace: object) -> str:
    """The key segment of a decorator's namespace: ``key_segment`` of each ``:``-separated
    level, the colons kept, so ``"users:admin"`` stays a level of ``"users"`` (reached by
    ``invalidate_pattern("users:*")``) while ``"a b"`` and ``"a*b"`` stay apart."""
    if not isinstance(namespace, str) or not namespace:
        raise ConfigError(f"namespace must be a non-empty str, got {namespace!r}")
    return ":".join(key_segment(part, "namespace") if part else "" for part in namespace.split(":"))


def _function_id(raw_id: str) -> str:
    # Lossy, for people reading keys: the raw id enters the digest, so keys stay unique.
    return _ID_UNSAFE.sub("_", raw_id.replace("<", "").replace(">", "")) or "_"


def _label(nodes: Sequence[Any]) -> str:
    """The label of canonical nodes: exact builtins, so a value labels as it keys."""
    out, n = "", 0
    for v in nodes:
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


class KeyBuilder:
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
        text_hash_threshold: int = DEFAULT_TEXT_HASH_THRESHOLD,
        method: bool = False,
    ) -> None:
        self._thr = check_text_hash_threshold(text_hash_threshold)
        self._calls = calls = CallBinder(func, method=method, ignore=ignore)
        self._bind, self._keyed_types, self._method = calls.bind, calls.keyed_types, method
        version = int(check_int("version", version, 0))
        ns = "" if namespace is None else namespace_segment(namespace) + ":"
        qualname = getattr(func, "__qualname__", None) or type(func).__qualname__
        raw_id = f"{getattr(func, '__module__', None) or 'unknown'}.{qualname}"
        self._function_id = _function_id(raw_id)
        # The raw names go into the digest, so two names that sanitize alike still differ.
        self._head = [raw_id, version, namespace]
        self._prefix = f"{ns}{self._function_id}:v{version}:"
        self._key = key
        var = [p.name for p in calls.params if p.kind is p.VAR_POSITIONAL]
        self._star = var[0] if var else None
        # The fast map assumes one call shape always yields one key: not so when key= may
        # read outside state, or when a default could be mutated in place.
        kept = [p for p in calls.params[method:] if p.name not in calls.ignore]
        frozen = all(p.default is p.empty or _is_immutable(p.default) for p in kept)
        # The young generation of the fast map (None: no fast map), then the old one.
        self._fast: dict[tuple[Any, ...], str] | None = {} if key is None and frozen else None
        self._old: dict[tuple[Any, ...], str] = {}
        self._shapes: dict[tuple[type, ...], tuple[int, ...] | Literal[False]] = {}
        # A function of one keyed parameter, called with one plain value: its material is
        # this constant and the value's own bytes (a msgpack array is its items in a
        # row), which saves most of a derivation for every miss and first hit.
        self._one_head: bytes | None = None
        if key is None and not method:
            probe = object()
            try:
                bound = self._bind(probe)
            except TypeError:  # takes more than one positional argument
                bound = ()
            if len(bound) == 1 and bound[0][1] is probe:
                self._one_head = pack([*self._head, [bound[0][0], None]])[:-1]  # None: 1 byte

    @property
    def plain(self) -> bool:
        """Whether ``map_key`` of a call with one positional argument and no keywords
        is ``(type(a), a)`` for an int, bool, None or str of up to ``FAST_STR_LEN``
        characters, and None otherwise (no ``self`` to leave out, no ``key=``, no
        mutable default): what a hot path may compute without calling ``map_key``."""
        return self._fast is not None and not self._method

    @property
    def function_id(self) -> str:
        """``module.qualname`` of the function, made key-safe."""
        return self._function_id

    def pattern(self) -> str:
        """Glob pattern matching every key of this function and version."""
        return self._prefix + "*"

    def map_key(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...] | None:
        """What identifies this call's key in memory, without deriving it: the exact
        types and values of its arguments (self left out), or None where only the full
        derivation can say (keyword arguments, floats, long strings, other types, ``key=``,
        mutable defaults, a ``self`` with ``__memo_key__``)."""
        if self._fast is None or kwargs:
            return None
        rest = args
        if self._method:
            # A class not seen yet goes the slow way once, which records whether it is keyed.
            if not args or self._keyed_types.get(type(args[0]), True):
                return None
            rest = args[1:]  # self is not part of the key: never hold it in the map
        # The types are part of the map key, as 1, 1.0 and True are equal and hash alike;
        # floats never enter (0.0 == -0.0), nor subclasses (their nodes are built).
        # One argument, the common case, is inlined.
        if len(rest) == 1:
            a = rest[0]
            t = type(a)
            if t is int or t is bool or a is None or (t is str and len(a) <= FAST_STR_LEN):
                return (t, a)
            return None
        # Spelled-out type() calls are several times faster than map(type, ...).
        n2 = len(rest) == 2
        types = (type(rest[0]), type(rest[1])) if n2 else tuple(map(type, rest))
        strs = self._shapes.get(types)
        if strs is None:
            strs = self._shape(types)
        if strs is False:
            return None
        for i in strs:
            if len(rest[i]) > FAST_STR_LEN:
                return None
        return (types, rest)

    def __call__(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        """The key of ``func(*args, **kwargs)``, relative to the cache's prefix."""
        return self.key_by_map(self.map_key(args, kwargs), args, kwargs)

    def key_by_map(
        self, mk: tuple[Any, ...] | None, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> str:
        """The key of the call whose ``map_key`` is ``mk`` (None: derive it in full)."""
        fast = self._fast
        if mk is None or fast is None:
            return self._derive(args, kwargs)
        found = fast.get(mk)
        if found is None:
            # Two generations bound the map without a wholesale clear: a full young one
            # becomes the old one (the previous old one dropped), and a call found there
            # moves back. So a call made again within a generation's worth of other calls
            # keeps its key, however many one-off calls pass. Threads may race here; each
            # step is one dict operation under the GIL, and the worst outcome is a
            # generation lost: keys derived again, never a wrong one.
            found = self._old.get(mk)
            if found is None:
                found = self._derive(args, kwargs)
            if len(fast) >= _FAST_GENERATION:
                self._old, self._fast = fast, {}
                fast = self._fast
            fast[mk] = found
        return found

    def _shape(self, types: tuple[type, ...]) -> tuple[int, ...] | Literal[False]:
        """Positions of the strs if all these types may use the fast map, else False."""
        if len(types) > _FAST_ARGS:
            return False  # not recorded: such shapes could be many, and large
        strs: tuple[int, ...] | Literal[False] = False
        if _FAST_TYPES.issuperset(types):
            strs = tuple(i for i, t in enumerate(types) if t is str)
        if len(self._shapes) >= 256:
            self._shapes.clear()
        self._shapes[types] = strs
        return strs

    def _derive(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        head = self._one_head
        if head is not None and len(args) == 1 and not kwargs:
            value = args[0]
            t = type(value)
            # The values _derive_all keys as themselves (see there), and nothing else;
            # an int, the commonest, labelled here as _label would.
            if t is int and INT64_MIN <= value <= INT64_MAX:
                label = f"{value}:" if -_LABEL_INT < value < _LABEL_INT else ""
            elif (t is str and len(value) <= self._thr) or t is bool or value is None:
                label = _label((value,))
            else:
                return self._derive_all(args, kwargs)
            return f"{self._prefix}{label}{xxhash.xxh3_128_hexdigest(head + pack(value))}"
        return self._derive_all(args, kwargs)

    def _derive_all(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        owner, thr = self._function_id, self._thr
        entries: list[Any] = []
        # Nodes, never raw values: the label must treat a value exactly as the digest does.
        labels: list[Any] = []
        if self._method and (own := self._calls.self_node(owner, args, kwargs, thr)) is not None:
            labels.append(own[-1])
            entries += (SELF_ENTRY, own)
        if self._key is not None:
            node = encode(owner, KEY_ENTRY, self._key(*args[self._method :], **kwargs), thr)
            seq = type(node) is list and node[0] in SEQUENCE_TAGS
            labels += node[1:] if seq else (node,)
            entries += (KEY_ENTRY, node)
        else:
            for name, value in self._bind(*args, **kwargs):
                t = type(value)
                # Plain scalars are their own node: two calls fewer per argument.
                plain = (t is str and len(value) <= thr) or t is bool or value is None
                if plain or (t is int and INT64_MIN <= value <= INT64_MAX):
                    labels.append(value)
                    entries += (name, value)
                else:
                    node = encode(owner, name, value, thr)
                    if name == self._star:  # *args: a tuple, whose node is [tag, *items]
                        labels += node[1:]
                    else:
                        labels.append(node)
                    entries += (name, node)
        material = pack([*self._head, entries])
        return f"{self._prefix}{_label(labels)}{xxhash.xxh3_128_hexdigest(material)}"
