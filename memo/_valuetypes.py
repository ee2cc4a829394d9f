"""The body of an envelope: msgpack, with ext types for what msgpack would blur or refuse.

Round trips keep value and exact type, except that a ``bytearray`` comes back as
``bytes`` (msgpack stores both as bin) and an aware datetime or time keeps only its UTC
offset: a ``zoneinfo`` zone comes back as a fixed ``datetime.timezone``, and a time
whose tzinfo gives no offset comes back naive. Subclasses of built-in types (IntEnum,
OrderedDict, namedtuple...) are refused unless registered. Nothing here ever unpickles:
a class is only ever rebuilt from a name registered in this process.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any, TypeVar, overload

import msgpack

from memo.exceptions import ConfigError, DecodeError, EncodeError

__all__ = ["DEFAULT_REGISTRY", "BodyCodec", "TypeRegistry", "register_type", "unpack_body"]

_POOL_SIZE, _POOL_BUFFER = 8, 1 << 16  # pooled packers, and the output size that retires one

# Ext type codes are part of the stored format: never renumber, only append.
_TUPLE, _SET, _FROZENSET, _DATETIME, _DATE, _TIME = 1, 2, 3, 4, 5, 6
_TIMEDELTA, _UUID, _DECIMAL, _BIGINT, _REGISTERED = 7, 8, 9, 10, 11

# Bound once: bodies are unpacked on every cache hit, where each attribute lookup shows.
_unpackb = msgpack.unpackb

T = TypeVar("T")
_Fn = Callable[[Any], Any]


class _Unreadable(Exception):
    """A registered type this process cannot rebuild (raised inside the ext hook)."""


class TypeRegistry:
    """Types beyond the built-in set that values may contain, by stable name.

    Decoding instantiates only types registered here, looked up by name: stored bytes
    can never name an arbitrary class to construct.
    """

    def __init__(self) -> None:
        self._by_type: dict[type, tuple[str, _Fn]] = {}
        self._by_name: dict[str, tuple[type, _Fn]] = {}

    def register(
        self,
        cls: type,
        *,
        name: str | None = None,
        encode: _Fn | None = None,
        decode: _Fn | None = None,
    ) -> None:
        """Allow instances of ``cls`` in cached values, stored under ``name``.

        Dataclasses and pydantic models need no callables; other classes pass ``encode``
        (instance to encodable state) and ``decode`` (state to instance).

        Raises:
            ConfigError: callables missing for a plain class, or ``name`` already taken.
        """
        if not isinstance(cls, type):
            raise ConfigError(f"cls={cls!r}: register_type() takes a class")
        if name is None:
            name = f"{cls.__module__}.{cls.__qualname__}"
        elif not isinstance(name, str) or not name:
            raise ConfigError(f"name={name!r}: pass a non-empty string, stable across releases")
        if encode is None or decode is None:
            if dataclasses.is_dataclass(cls):
                fields = [f.name for f in dataclasses.fields(cls)]

                def state_of(obj: Any) -> Any:
                    # Shallow on purpose: nested values go through the codec themselves
                    # and keep their exact types (dataclasses.asdict would flatten them).
                    return {f: getattr(obj, f) for f in fields}

                encode = encode or state_of
                decode = decode or (lambda state: cls(**state))
            elif hasattr(cls, "model_dump") and hasattr(cls, "model_validate"):
                encode = encode or (lambda obj: obj.model_dump(mode="python"))
                decode = decode or cls.model_validate
            else:
                raise ConfigError(
                    f"register_type({cls.__qualname__}): pass encode= and decode= "
                    f"(instance to msgpack-able state and back); only dataclasses and "
                    f"pydantic models work without them"
                )
        other = self._by_name.get(name)
        if other is not None and other[0] is not cls:
            raise ConfigError(
                f"name={name!r} is already registered for {other[0].__qualname__}: "
                f"give {cls.__qualname__} another name="
            )
        self._by_type[cls] = (name, encode)
        self._by_name[name] = (cls, decode)

    def encoder(self, cls: type) -> tuple[str, _Fn] | None:
        """The stored name and state function of ``cls``, if registered."""
        return self._by_type.get(cls)

    def decoder(self, name: str) -> _Fn | None:
        """The function rebuilding an instance stored as ``name``, if registered."""
        found = self._by_name.get(name)
        return None if found is None else found[1]


DEFAULT_REGISTRY = TypeRegistry()


@overload
def register_type(
    cls: type[T], *, name: str | None = None, encode: _Fn | None = None, decode: _Fn | None = None
) -> type[T]: ...
@overload
def register_type(
    cls: None = None,
    *,
    name: str | None = None,
    encode: _Fn | None = None,
    decode: _Fn | None = None,
) -> Callable[[type[T]], type[T]]: ...
def register_type(
    cls: type[T] | None = None,
    *,
    name: str | None = None,
    encode: _Fn | None = None,
    decode: _Fn | None = None,
) -> type[T] | Callable[[type[T]], type[T]]:
    """Allow a dataclass, pydantic model or other class in cached values.

    Usable as ``register_type(Point)``, ``register_type(Point, name="geo.Point")`` or as
    a class decorator, with or without arguments; returns the class. The name is what is
    stored: keep it stable across releases.
    """

    def apply(c: type[T]) -> type[T]:
        DEFAULT_REGISTRY.register(c, name=name, encode=encode, decode=decode)
        return c

    return apply if cls is None else apply(cls)


def _offset_seconds(value: dt.datetime | dt.time) -> float | None:
    off = value.utcoffset()
    return None if off is None else off.total_seconds()


def _tz(offset: float | None) -> dt.tzinfo | None:
    return None if offset is None else dt.timezone(dt.timedelta(seconds=offset))


def unpack_body(body: bytes, ext_hook: Callable[[int, bytes], Any]) -> Any:
    """The value of a msgpack body, ext types read by ``ext_hook`` (``BodyCodec.ext_hook``).

    A module function rather than only a method: it is called on every cache hit, and a
    function found in the module is the quickest call there is from another module.

    Raises:
        DecodeError: ``corrupt=False`` for a registered type this process cannot
            rebuild; ``corrupt=True`` for anything else that does not decode.
    """
    try:
        # use_list=True and raw=False are msgpack's defaults: passing fewer keyword
        # arguments is measurably cheaper on this per-hit call.
        return _unpackb(body, ext_hook=ext_hook, strict_map_key=False)
    except _Unreadable as exc:
        raise DecodeError(str(exc), corrupt=False) from None
    except Exception as exc:  # msgpack raises many types for malformed input
        raise DecodeError(f"malformed body ({type(exc).__name__})", corrupt=True) from None


class BodyCodec:
    """Values to msgpack bodies, and the ext hook that reads them back (``unpack_body``),
    with memo's ext types and a registry's classes.

    Args:
        registry: types allowed besides the built-ins.
    """

    def __init__(self, registry: TypeRegistry) -> None:
        self._registry = registry
        # Packers are reused, as building one costs more than packing a small dict, but
        # never shared: a nested pack from _default, or another thread, takes another.
        self._packers: list[Any] = []
        #: msgpack's ext hook for bodies of this codec: one bound method, not one per decode.
        self.ext_hook: Callable[[int, bytes], Any] = self._ext_hook

    def pack(self, value: Any) -> bytes:
        """The msgpack body of ``value``.

        Raises:
            EncodeError: a type memo cannot store, or a value nested too deeply.
        """
        pool = self._packers
        try:
            packer = pool.pop()
        except IndexError:
            packer = msgpack.Packer(
                default=self._default, strict_types=True, use_bin_type=True, buf_size=4096
            )
        try:
            packed: bytes = packer.pack(value)
        except EncodeError:
            raise
        except (TypeError, ValueError, OverflowError, RecursionError) as exc:
            raise EncodeError(f"the value cannot be encoded: {exc}") from exc
        # Only a packer that finished cleanly goes back (its buffer is known empty), and
        # not one whose buffer grew for a large value, which it would otherwise keep.
        if len(packed) <= _POOL_BUFFER and len(pool) < _POOL_SIZE:
            pool.append(packer)
        return packed

    def _default(self, obj: Any) -> Any:
        """msgpack's hook for every type it does not pack itself (strict_types=True)."""
        t = type(obj)
        if t is tuple:
            return msgpack.ExtType(_TUPLE, self.pack(list(obj)))
        if t is set:
            return msgpack.ExtType(_SET, self.pack(list(obj)))
        if t is frozenset:
            return msgpack.ExtType(_FROZENSET, self.pack(list(obj)))
        if t is int:  # outside msgpack's 64-bit range: two's complement, big-endian
            size = (obj.bit_length() + 8) // 8
            return msgpack.ExtType(_BIGINT, obj.to_bytes(size, "big", signed=True))
        if t is dt.datetime:
            fields = [obj.year, obj.month, obj.day, obj.hour, obj.minute, obj.second]
            fields += [obj.microsecond, _offset_seconds(obj), obj.fold]
            return msgpack.ExtType(_DATETIME, self.pack(fields))
        if t is dt.date:
            return msgpack.ExtType(_DATE, self.pack([obj.year, obj.month, obj.day]))
        if t is dt.time:
            fields = [obj.hour, obj.minute, obj.second, obj.microsecond, _offset_seconds(obj)]
            return msgpack.ExtType(_TIME, self.pack([*fields, obj.fold]))
        if t is dt.timedelta:
            fields = [obj.days, obj.seconds, obj.microseconds]
            return msgpack.ExtType(_TIMEDELTA, self.pack(fields))
        if t is uuid.UUID:
            return msgpack.ExtType(_UUID, obj.bytes)
        if t is Decimal:
            return msgpack.ExtType(_DECIMAL, str(obj).encode())
        registered = self._registry.encoder(t)
        if registered is not None:
            name, state_of = registered
            try:
                state = state_of(obj)
            except Exception as exc:
                raise EncodeError(
                    f"the encode function registered as {name!r} failed "
                    f"({type(exc).__name__}): fix it, or cache something else"
                ) from exc
            return msgpack.ExtType(_REGISTERED, self.pack([name, state]))
        raise EncodeError(
            f"a value of type {t.__module__}.{t.__qualname__} cannot be cached: convert it "
            f"to built-in types (a dict, say), or register it with "
            f"memo.register_type({t.__qualname__})"
        )

    def _ext_hook(self, code: int, payload: bytes) -> Any:
        unpack = self._unpack_nested
        if code == _TUPLE:
            return tuple(unpack(payload))  # hashable: usable as a dict key or set member
        if code == _SET:
            return set(unpack(payload))
        if code == _FROZENSET:
            return frozenset(unpack(payload))
        if code == _BIGINT:
            return int.from_bytes(payload, "big", signed=True)
        if code == _DATETIME:
            y, mo, d, h, mi, s, us, off, fold = unpack(payload)
            return dt.datetime(y, mo, d, h, mi, s, us, tzinfo=_tz(off), fold=fold)
        if code == _DATE:
            return dt.date(*unpack(payload))
        if code == _TIME:
            h, mi, s, us, off, fold = unpack(payload)
            return dt.time(h, mi, s, us, tzinfo=_tz(off), fold=fold)
        if code == _TIMEDELTA:
            days, seconds, micros = unpack(payload)
            return dt.timedelta(days=days, seconds=seconds, microseconds=micros)
        if code == _UUID:
            return uuid.UUID(bytes=payload)
        if code == _DECIMAL:
            return Decimal(payload.decode())
        if code == _REGISTERED:
            name, state = unpack(payload)
            rebuild = self._registry.decoder(name)
            if rebuild is None:
                raise _Unreadable(f"type {name!r} is not registered in this process")
            try:
                return rebuild(state)
            except Exception as exc:
                # The bytes passed the checksum: the class changed between releases,
                # and a process still running the other release may read them.
                raise _Unreadable(
                    f"type {name!r} does not accept the stored state ({type(exc).__name__})"
                ) from None
        raise ValueError(f"unknown ext type {code}")

    def _unpack_nested(self, payload: bytes) -> Any:
        return _unpackb(payload, ext_hook=self.ext_hook, strict_map_key=False)
