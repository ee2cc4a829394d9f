"""AI keys: ``ai:{operation}:v{version}:{digest}``, for ``@ai_cached`` and ``build_key``.

The digest covers the operation as given, the text (hashed when longer than
``text_hash_threshold``), the normalized options and any other argument that differs
from its default; the operation's key segment comes from ``key_segment``, so
``ai_operation_pattern`` matches exactly one operation's keys.

An ``@ai_cached`` function remembers the finished keys of its recent calls, looked up by
what identifies a call exactly and cheaply: the text itself and a type-tagged copy of a
flat options dict of plain scalars. A repeated call then skips normalizing, packing and
hashing; any other call takes the full derivation.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from operator import itemgetter
from typing import Any, Final

from memo._binder import CallBinder
from memo._canonical import (
    DEFAULT_TEXT_HASH_THRESHOLD,
    SELF_ENTRY,
    STREAM_ENTRY,
    canonical,
    check_text_hash_threshold,
    digest,
    encode,
    pack,
)
from memo._keys import key_segment
from memo._validate import check_int
from memo.exceptions import ConfigError, KeyDerivationError

__all__ = ["AIKeyBuilder", "ai_key", "ai_operation_pattern", "normalize_options"]


def ai_operation_pattern(operation: str) -> str:
    """The glob, relative to the cache's prefix, matching every AI key of ``operation``.

    It matches no key of another operation, even one ``operation`` is a prefix of
    (``"qa"`` and ``"qa2"``): a segment never holds ``:``.

    Raises:
        ConfigError: ``operation`` is not a non-empty str.
    """
    return f"ai:{key_segment(operation, 'operation')}:v*"


def _whole(what: str, value: object) -> int:
    """``value`` as an exact int >= 0: ai_key checks its settings on every call, so the
    common exact int skips the general check (whose int() also turns an IntEnum plain)."""
    if type(value) is int and value >= 0:
        return value
    return int(check_int(what, value, 0))


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
        return encode("an AI request", "options", normalize_options(options), thr)
    signature: list[Any] = [thr]
    for k, v in options.items():
        t = type(v)
        if type(k) is not str or t not in _OPTION_LEAVES:
            return encode("an AI request", "options", normalize_options(options), thr)
        signature += (k, t, v)
    fingerprint = tuple(signature)
    node = _OPTIONS_NODES.get(fingerprint)
    if node is None:
        node = encode("an AI request", "options", normalize_options(options), thr)
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
        encode("an AI request", "text", text, thr),
        "options",
        _options_node(options, thr),
    ]
    for name, node in sorted(extra, key=itemgetter(0)):
        entries += (name, node)
    material = pack(["ai", op[0], version, entries])
    return f"ai:{op[1]}:v{version}:{digest(material)}"


def ai_key(
    *,
    operation: str,
    text: str,
    options: Mapping[str, Any] | None,
    version: int = 1,
    text_hash_threshold: int = DEFAULT_TEXT_HASH_THRESHOLD,
    extra: Sequence[tuple[str, Any]] = (),
) -> str:
    """The key of an AI request: ``ai:{operation}:v{version}:{digest}``.

    ``options`` go through :func:`normalize_options`; ``extra`` holds further
    ``(name, value)`` pairs (in any order) that the response depends on.

    Raises:
        ConfigError: empty ``operation``, bad ``version`` or ``text_hash_threshold``.
        KeyDerivationError: a value with no stable encoding.
    """
    op = (operation, key_segment(operation, "operation"))
    thr = check_text_hash_threshold(text_hash_threshold)
    nodes = [(name, encode("an AI request", name, value, thr)) for name, value in extra]
    return _ai_key(op, _whole("version", version), text, options, thr, nodes)


# -- the map of recent keys of an @ai_cached function ------------------------------------

#: Calls remembered per generation; two generations are kept (see _RecentKeys).
_RECENT_CALLS: Final = 512
#: Characters of text and option strings held per generation: the map keeps them alive.
_RECENT_CHARS: Final = 1 << 22
#: Longer texts and option dicts with more entries always take the full derivation.
_RECENT_TEXT: Final = 1 << 20
_RECENT_OPTIONS: Final = 16
#: Option values a fingerprint may hold: immutable, and equal across values only as
#: 1 == 1.0 == True and 0.0 == -0.0, which the type recorded beside each value keeps
#: apart. (A NaN equals no other NaN object: it costs a derivation, never a wrong key.)
_SCALARS: Final = frozenset({str, int, bool, float, type(None)})
_PLAIN_DEFAULTS: Final = frozenset({str, int, bool, float, type(None), bytes})
_UNSEEN: Final = object()
_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
_NAMED = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
_VARIADIC = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)

#: Where a call holds its text or options: ("a", index in args), ("k", keyword) or
#: ("d", the parameter's default).
_Source = tuple[str, Any]
#: (args, kwargs) -> (text, options) for calls of one shape.
_Locator = Callable[[tuple[Any, ...], dict[str, Any]], tuple[Any, Any]]
#: args -> (text, options) for calls of one shape without keywords.
_Getter = Callable[[tuple[Any, ...]], tuple[Any, Any]]


def _pick(source: _Source, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    kind, where = source
    return args[where] if kind == "a" else kwargs[where] if kind == "k" else where


def _locator(text: _Source, options: _Source) -> _Locator:
    return lambda args, kwargs: (_pick(text, args, kwargs), _pick(options, args, kwargs))


def _getter(text: _Source, options: _Source) -> _Getter:
    if text[0] == options[0] == "a":
        return itemgetter(text[1], options[1])  # the common shape, f(self, text, options)
    return lambda args: (_pick(text, args, {}), _pick(options, args, {}))


class _RecentKeys:
    """Finished keys by call fingerprint, in two generations: a full young generation
    becomes the old one, whose entries move back into the young one when used again.

    So the map stays bounded without a wholesale clear: a recent call keeps hitting in
    whichever generation holds it. Threads may race on it; the worst outcome is a key
    derived again, as every step is one dict operation under the GIL.
    """

    def __init__(self) -> None:
        self.young: dict[Any, str] = {}
        self.old: dict[Any, str] = {}
        self._chars = 0

    def promote(self, fingerprint: tuple[Any, Any]) -> str | None:
        """The key remembered in the old generation, moved into the young one."""
        key = self.old.get(fingerprint)
        if key is not None:
            self.add(fingerprint, key)
        return key

    def add(self, fingerprint: tuple[Any, Any], key: str) -> None:
        text, options = fingerprint
        chars = len(text)
        if options:
            chars += sum(len(x) for x in options if type(x) is str)
        young = self.young
        if len(young) >= _RECENT_CALLS or self._chars + chars > _RECENT_CHARS:
            # Two threads swapping at once lose a generation's worth: keys derived again.
            self.old, self.young, self._chars = young, {}, 0
            young = self.young
        self._chars += chars
        young[fingerprint] = key


class AIKeyBuilder:
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
        text_hash_threshold: int = DEFAULT_TEXT_HASH_THRESHOLD,
        ignore: Iterable[str] = (),
        method: bool = False,
        stream: bool = False,
    ) -> None:
        self._thr = check_text_hash_threshold(text_hash_threshold)
        # A streamed function's keys hold a mark: its chunks never answer a plain call.
        self._marks: list[tuple[str, Any]] = [(STREAM_ENTRY, True)] if stream else []
        self._calls = calls = CallBinder(func, method=method, ignore=ignore)
        self._bind, self._method = calls.bind, method
        self._op = (operation, key_segment(operation, "operation"))
        self._version = _whole("version", version)
        params = [p for p in calls.params[method:] if p.name not in calls.ignore]
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
                    self._defaults[p.name] = canonical(default, text_hash_threshold=self._thr)
                except KeyDerivationError:
                    self._defaults[p.name] = None  # any value given for it joins the key
        self._keyed_types = calls.keyed_types
        self._recent = _RecentKeys()
        # Locators of the call shapes seen: by len(args) without keywords, by
        # (len(args), *keywords) with them; None where a shape takes the full derivation.
        self._by_len: dict[int, _Getter | None] = {}
        self._by_names: dict[tuple[Any, ...], _Locator | None] = {}

    def pattern(self) -> str:
        """Glob pattern matching every key of this operation and version (keys are shared
        with ``AIResponseCache.build_key``, so this reaches what either stored)."""
        return f"ai:{self._op[1]}:v{self._version}:*"

    def __call__(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        """The AI key of ``func(*args, **kwargs)``."""
        if kwargs:
            locate = self._keyword_shape(args, kwargs)
            if locate is None:
                return self._derive(args, kwargs)
            text, options = locate(args, kwargs)
        else:
            get = self._by_len.get(len(args), _UNSEEN)
            if get is _UNSEEN:
                get = self._positional_shape(len(args))
            if get is None:
                return self._derive(args, kwargs)
            text, options = get(args)  # type: ignore[operator]
        # A class of self not seen yet goes the full way once, which records whether its
        # __memo_key__() joins the key.
        if self._method and self._keyed_types.get(type(args[0]), True):
            return self._derive(args, kwargs)
        if type(text) is not str or len(text) > _RECENT_TEXT:
            return self._derive(args, kwargs)
        # The fingerprint holds each value's exact type beside it, as 1, 1.0 and True are
        # equal and hash alike. Only scalars enter: a container could be mutated after its
        # fingerprint was taken, and an entry must never describe other content.
        flat: tuple[Any, ...] | None = None
        if options is not None:
            if type(options) is not dict or len(options) > _RECENT_OPTIONS:
                return self._derive(args, kwargs)
            items: list[Any] = []
            for k, v in options.items():
                t = type(v)
                if t not in _SCALARS or type(k) is not str:
                    return self._derive(args, kwargs)
                items += (k, t, v)
            flat = tuple(items)
        fingerprint = (text, flat)
        recent = self._recent
        key = recent.young.get(fingerprint)
        if key is None:
            key = recent.promote(fingerprint)
            if key is None:
                key = self._derive(args, kwargs)
                recent.add(fingerprint, key)
        return key

    def _positional_shape(self, n: int) -> _Getter | None:
        """The getter of calls with ``n`` arguments and no keywords, found once."""
        if len(self._by_len) >= 64:
            self._by_len.clear()  # many lengths through *args: only their getters are lost
        sources = self._sources(n, ())
        get = None if sources is None else _getter(*sources)
        self._by_len[n] = get
        return get

    def _keyword_shape(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> _Locator | None:
        """The locator of calls shaped like this one, found once per shape."""
        shape = (len(args), *kwargs)
        locate = self._by_names.get(shape, _UNSEEN)
        if locate is _UNSEEN:
            if len(self._by_names) >= 64:
                self._by_names.clear()  # odd keyword sets: only their locators are lost
            sources = self._sources(len(args), tuple(kwargs))
            locate = None if sources is None else _locator(*sources)
            self._by_names[shape] = locate
        return locate  # type: ignore[return-value]

    def _sources(self, n: int, names: tuple[str, ...]) -> tuple[_Source, _Source] | None:
        """Where calls with ``n`` positional arguments and keywords ``names`` hold their
        text and options, if such a call's key depends on those alone, else None.

        That holds when Python binds the call without error, self (if any) comes first
        in ``args``, and every other parameter that is not ignored is left at a default
        of a plain immutable type. None sends the call to the full derivation, which
        also raises whatever binding it would.
        """
        params = self._calls.params
        if n > len(params) or n < self._method or len(set(names)) != len(names):
            return None
        sources: dict[str, _Source] = {}
        for i, p in enumerate(params):
            if i < n:
                if p.kind not in _POSITIONAL or p.name in names:
                    return None
                sources[p.name] = ("a", i)
            elif p.name in names:
                if p.kind not in _NAMED:
                    return None
                sources[p.name] = ("k", p.name)
            elif p.kind in _VARIADIC:
                continue  # left empty: its default
            elif p.default is p.empty:
                return None  # a missing argument: Python raises
            elif p.name in (self._text_arg, self._options_arg):
                sources[p.name] = ("d", p.default)
        text, options = self._text_arg, self._options_arg
        if not set(names) <= sources.keys() or text not in sources or options not in sources:
            return None
        for i, p in enumerate(params):
            ignored = p.name in self._calls.ignore or (i == 0 and self._method)
            if ignored or p.name in (self._text_arg, self._options_arg) or p.kind in _VARIADIC:
                continue
            if p.name in sources or type(p.default) not in _PLAIN_DEFAULTS:
                return None  # given, or a default that could change in place
        return sources[text], sources[options]

    def _derive(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        """The full derivation of the key of ``func(*args, **kwargs)``."""
        text: Any = None
        options: Any = None
        extra: list[tuple[str, Any]] = list(self._marks)
        if self._method and (own := self._calls.self_node(self._op[0], args, kwargs, self._thr)):
            extra.append((SELF_ENTRY, own))
        for name, value in self._bind(*args, **kwargs):
            if name == self._text_arg:
                text = value
            elif name == self._options_arg:
                options = value
            else:
                node = encode(self._op[0], name, value, self._thr)
                default = self._defaults.get(name)
                if default is None or pack(node) != default:
                    extra.append((name, node))
        return _ai_key(self._op, self._version, text, options, self._thr, extra)
