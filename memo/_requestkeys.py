"""Whole-request AI keys: ``@ai_cached(operation=..., request="request")``.

A chat-style call is keyed on everything in its request that shapes the reply: model,
messages (roles, content parts in order, tool calls and results), tools, response
format, sampling parameters, seed, provider extras. Fields that never shape the reply
(``stream``, timeouts, request and user ids, API keys, headers) are dropped, and a caller
drops more with ``request_ignore=``. A field memo does not know is *kept*: a new
provider parameter must never let two different questions share one answer.

The request is made canonical before it is encoded: pydantic models (v1 or v2, found by
duck typing, so pydantic is never imported) and dataclasses become the dicts they would
send on the wire; at every depth mapping keys are sorted, ``None`` fields dropped,
integral floats made ints (bools stay bools), tuples made lists. Long strings (message
text, image data URLs) enter as a digest, as texts do in every key.

A repeated call skips all of that: the call's arguments packed by msgpack with exact
types only (``1``, ``1.0`` and ``True`` pack apart; anything else, a model say, does not
pack and takes the full derivation) and hashed with xxh3-128 identify it exactly, and a
small map from that fingerprint to the finished key answers it.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Iterable, Mapping
from operator import itemgetter
from typing import Any, Final

import msgpack
import xxhash

from memo._aikeys import normalize_options
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

__all__ = ["NEVER_KEYED", "RequestKeyBuilder", "canonical_request", "is_nondeterministic"]

#: Request fields that never shape the reply, dropped from every request key.
NEVER_KEYED: Final = frozenset(
    {
        "stream",
        "stream_options",
        "timeout",
        "request_timeout",
        "max_retries",
        "request_id",
        "idempotency_key",
        "user",
        "user_id",
        "safety_identifier",
        "metadata",
        "store",
        "service_tier",
        "prompt_cache_key",
        "api_key",
        "api_base",
        "base_url",
        "organization",
        "project",
        "headers",
        "extra_headers",
    }
)

#: Fingerprints remembered per generation (two generations are kept).
_RECENT: Final = 1024
_UNSEEN: Final = object()
#: Packs exact builtin types only: a subclass (an IntEnum, a str enum, a namedtuple) or
#: any other object raises, and the call takes the full derivation.
_pack_exact: Callable[[Any], bytes] = msgpack.Packer(strict_types=True).pack
_NOT_EXACT = (TypeError, ValueError, OverflowError, UnicodeEncodeError)


def _wire_key(key: Any) -> Any:
    """A mapping key as JSON sends it: ``{1: 5}`` and ``{"1": 5}`` (``logit_bias``) are
    one request on the wire."""
    return str(key) if type(key) is int else key


def _plain(value: Any) -> Any:
    """``value`` as it goes on the wire: models and dataclasses become the dicts they
    stand for, bytes-like objects bytes, int mapping keys strs."""
    t = type(value)
    if t is str or t is int or t is float or t is bool or value is None or t is bytes:
        return value
    if t is dict or isinstance(value, Mapping):
        return {_wire_key(k): _plain(v) for k, v in value.items()}
    if t is bytearray or t is memoryview:
        # The fast map packs these exactly as bytes: the key must not tell them apart.
        return bytes(value)
    if t is list or t is tuple:
        return [_plain(v) for v in value]
    if callable(getattr(value, "model_dump", None)) and hasattr(t, "model_fields"):
        # pydantic v2: the fields the caller set, by their wire names, as JSON types, as an
        # OpenAI-style client sends them.
        return _plain(value.model_dump(mode="json", by_alias=True, exclude_unset=True))
    if callable(getattr(value, "dict", None)) and hasattr(value, "__fields_set__"):
        return _plain(value.dict(by_alias=True, exclude_unset=True))  # pydantic v1
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return value  # encode() keys it (enums, dates ...) or says why it cannot


def canonical_request(request: Any, ignore: Iterable[str] = ()) -> Any:
    """The canonical form of a chat-style request: what its key is derived from.

    ``ignore`` names top-level fields dropped besides :data:`NEVER_KEYED`. ``None`` is
    an empty request.
    """
    plain = _plain({} if request is None else request)
    if isinstance(plain, dict):
        dropped = NEVER_KEYED.union(ignore)
        plain = {k: v for k, v in plain.items() if k not in dropped}
    return normalize_options(plain)


def _field(request: Any, name: str) -> Any:
    if isinstance(request, Mapping):
        return request.get(name)
    return getattr(request, name, None)


def is_nondeterministic(request: Any) -> bool:
    """True for a request whose reply may differ on every call: a temperature above 0
    and no seed. A request that names no temperature gets the provider's default, which
    is above 0 for every major chat API (1.0 for OpenAI, Anthropic and Gemini)."""
    if _field(request, "seed") is not None:
        return False
    temperature = _field(request, "temperature")
    if temperature is None:
        return True
    try:
        return float(temperature) > 0
    except (TypeError, ValueError):
        return True


class RequestKeyBuilder:
    """Derive the AI keys of an ``@ai_cached(request=...)`` function.

    ``request_arg`` names the parameter holding the request (a dict, a pydantic model, a
    dataclass); when it is ``**kwargs``, the keyword arguments are the request, as in
    ``create(**request)``. Any other argument joins the key only when it differs from
    its default, as in every AI key. ``stream`` marks the keys of a streamed function.

    Raises:
        ConfigError: ``request_arg`` is not a parameter of ``func``, or bad settings.
    """

    def __init__(
        self,
        func: Callable[..., Any],
        *,
        operation: str,
        request_arg: str,
        request_ignore: Iterable[str] = (),
        version: int = 1,
        text_hash_threshold: int = DEFAULT_TEXT_HASH_THRESHOLD,
        ignore: Iterable[str] = (),
        method: bool = False,
        stream: bool = False,
    ) -> None:
        self._thr = check_text_hash_threshold(text_hash_threshold)
        self._calls = calls = CallBinder(func, method=method, ignore=ignore)
        self._bind, self._method = calls.bind, method
        self._op = (operation, key_segment(operation, "operation"))
        self._version = int(check_int("version", version, 0))
        if isinstance(request_ignore, str):
            request_ignore = (request_ignore,)
        self._request_ignore = frozenset(request_ignore)
        if not all(isinstance(name, str) for name in self._request_ignore):
            raise ConfigError(f"request_ignore={request_ignore!r}: name request fields as strs")
        self._stream = stream
        params = [p for p in calls.params[method:] if p.name not in calls.ignore]
        by_name = {p.name: p for p in params}
        if request_arg not in by_name:
            raise ConfigError(
                f"request={request_arg!r} is not a parameter of "
                f"{getattr(func, '__qualname__', func)} (ignored ones excluded); its "
                f"parameters are: {', '.join(by_name)}"
            )
        self._request_arg = request_arg
        kind = by_name[request_arg].kind
        self._request_is_kwargs = kind is inspect.Parameter.VAR_KEYWORD
        # Where a positional call holds the request (None: it is never positional).
        self._request_index: int | None = None
        if kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD):
            self._request_index = calls.params.index(by_name[request_arg])
        self._defaults: dict[str, bytes | None] = {}
        for p in params:
            if p.name == request_arg or p.default is p.empty:
                continue
            try:
                default = _plain(p.default)  # as a value passed for it is read
                self._defaults[p.name] = canonical(default, text_hash_threshold=self._thr)
            except KeyDerivationError:
                self._defaults[p.name] = None
        self._young: dict[int, str] = {}
        self._old: dict[int, str] = {}

    def pattern(self) -> str:
        """Glob pattern matching every key of this operation and version."""
        return f"ai:{self._op[1]}:v{self._version}:*"

    def request_of(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """The request a call passes (None when it passes none)."""
        if self._request_is_kwargs:
            return kwargs
        name = self._request_arg
        if name in kwargs:
            return kwargs[name]
        i = self._request_index
        return args[i] if i is not None and i < len(args) else None

    def __call__(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        """The AI key of ``func(*args, **kwargs)``."""
        method = self._method
        if method and (not args or self._calls.keyed_types.get(type(args[0]), True)):
            return self._derive(args, kwargs)  # self's class not seen yet, or keyed
        ignored = self._calls.ignore
        if ignored and kwargs:
            kwargs = {k: v for k, v in kwargs.items() if k not in ignored}
        try:  # (lists: a strict packer refuses tuples, which a request may hold as lists)
            fingerprint = xxhash.xxh3_128_intdigest(
                _pack_exact([list(args[1:] if method else args), kwargs])
            )
        except _NOT_EXACT:
            return self._derive(args, kwargs)
        key = self._young.get(fingerprint)
        if key is None:
            key = self._old.get(fingerprint)
            if key is None:
                key = self._derive(args, kwargs)
            young = self._young
            if len(young) >= _RECENT:  # the young generation becomes the old one
                self._old, self._young = young, {}
            self._young[fingerprint] = key
        return key

    def _derive(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        """The full derivation of the key of ``func(*args, **kwargs)``."""
        owner, thr = self._op[0], self._thr
        request: Any = None
        extra: list[tuple[str, Any]] = []
        if self._method and (own := self._calls.self_node(owner, args, kwargs, thr)):
            extra.append((SELF_ENTRY, own))
        for name, value in self._bind(*args, **kwargs):
            if name == self._request_arg:
                try:
                    request = canonical_request(value, self._request_ignore)
                except RecursionError:
                    raise KeyDerivationError(
                        f"cannot derive a cache key for {owner}: argument {name!r} is "
                        f"nested too deeply or contains itself; pass a plain request"
                    ) from None
            else:
                node = encode(owner, name, _plain(value), thr)
                default = self._defaults.get(name)
                if default is None or pack(node) != default:
                    extra.append((name, node))
        entries: list[Any] = ["request", encode(owner, self._request_arg, request, thr)]
        for name, node in sorted(extra, key=itemgetter(0)):
            entries += (name, node)
        if self._stream:
            entries += (STREAM_ENTRY, True)
        material = pack(["ai-request", owner, self._version, entries])
        return f"ai:{self._op[1]}:v{self._version}:{digest(material)}"
