"""Values to bytes and back: envelope v1, msgpack with ext types, lz4, optional HMAC.

Envelope v1 (all integers big-endian)::

    offset size  field
    0      2     magic b"\\xa7M"
    2      1     format version (1)
    3      1     flags: bit 0 compressed, bit 1 signed, others zero
    4      8     checksum         xxh3-64 of every byte after it (offset 12 to the end)
    12     8     created_ms       epoch milliseconds when stored
    20     8     fresh_until_ms   epoch milliseconds of logical expiry
    28     4     compute_us       how long the value took to compute
    32     32    HMAC-SHA256      only when signed: over bytes 0-3, 12-31 and the body
    ..     ..    body             msgpack; when compressed: u32 size + raw lz4 block

The version is read before anything else is trusted, so that a value written by a newer
memo is reported as unreadable (and left alone) rather than as corrupt. The checksum
sits before the metadata so that it covers it: a flipped bit in an expiry is caught
without a key, like one in the body; a flipped flag bit cannot pass either (each flag
changes how the rest must parse). The signature, when configured, also stops anyone
with write access to the store from planting values. Nothing here ever unpickles.

Round trips keep value and exact type, except that a ``bytearray`` comes back as
``bytes`` (msgpack stores both as bin) and an aware datetime or time keeps only its UTC
offset: a ``zoneinfo`` zone comes back as a fixed ``datetime.timezone``, and a time
whose tzinfo gives no offset comes back naive. Subclasses of built-in types (IntEnum,
OrderedDict, namedtuple...) are refused unless registered.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hmac
import struct
import uuid
from collections.abc import Callable
from decimal import Decimal
from functools import partial
from typing import Any, NamedTuple, TypeVar, overload

import lz4.block
import msgpack
import xxhash

from memo.exceptions import ConfigError, DecodeError, EncodeError

__all__ = ["DEFAULT_REGISTRY", "HEADER_SIZE", "Codec", "Entry", "TypeRegistry", "register_type"]

MAGIC = b"\xa7M"
VERSION = 1
_MAGIC_V1 = MAGIC + bytes([VERSION])
_HEADER = struct.Struct(">3sBQQQI")  # magic+version, flags, checksum, created, fresh, compute
_META = struct.Struct(">QQI")
HEADER_SIZE = _HEADER.size  # 32
_CHECKED_FROM = 12  # the checksum covers data[12:]
_SIG_SIZE = 32
_SIZE = struct.Struct(">I")
_COMPRESSED, _SIGNED = 0x01, 0x02
_STARTS = [_MAGIC_V1 + bytes([flags]) for flags in range(4)]  # bytes 0-3 by flags
_U32_MAX, _U64_MAX = (1 << 32) - 1, (1 << 64) - 1
_META_TOPS = (_U64_MAX, _U64_MAX, _U32_MAX)
_POOL_SIZE, _POOL_BUFFER = 8, 1 << 16  # pooled packers, and the output size that retires one

# Ext type codes are part of the stored format: never renumber, only append.
_TUPLE, _SET, _FROZENSET, _DATETIME, _DATE, _TIME = 1, 2, 3, 4, 5, 6
_TIMEDELTA, _UUID, _DECIMAL, _BIGINT, _REGISTERED = 7, 8, 9, 10, 11

# Bound once: decode runs on every cache hit, where each attribute lookup shows.
_unpack_header = _HEADER.unpack_from
_unpackb = msgpack.unpackb
_xxh3 = xxhash.xxh3_64_intdigest
_tuple_new = tuple.__new__  # builds an Entry without NamedTuple's Python-level __new__

T = TypeVar("T")
_Fn = Callable[[Any], Any]


class Entry(NamedTuple):
    """A decoded value and the metadata of its envelope."""

    value: Any
    created_ms: int
    fresh_until_ms: int
    compute_us: int


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


def _clamp(n: int, top: int) -> int:
    return max(0, min(int(n), top))


def _check_int(name: str, value: object, low: int, high: int | None = None) -> int:
    if type(value) is not int or value < low or (high is not None and value > high):
        allowed = f"{low} or more" if high is None else f"from {low} to {high}"
        raise ConfigError(f"{name}={value!r}: pass an int, {allowed}")
    return value


def _bad_start(data: bytes) -> DecodeError:
    """The error for bytes that do not start like a v1 envelope, or are too short."""
    if data[:2] != MAGIC:
        return DecodeError("not a memo value (bad magic)", corrupt=True)
    if len(data) > 2 and data[2] != VERSION:
        # Zero is never written; anything higher comes from a newer memo, which another
        # process may be running: not ours to delete.
        return DecodeError(f"format version {data[2]} is not readable here", corrupt=data[2] < 1)
    return DecodeError(f"truncated header ({len(data)} bytes)", corrupt=True)


def _checked_header(data: bytes) -> tuple[int, int, int, int]:
    """(flags, created_ms, fresh_until_ms, compute_us) once magic, version and checksum pass."""
    try:
        start, flags, checksum, created, fresh, compute = _unpack_header(data)
    except struct.error:
        raise _bad_start(data) from None
    if start != _MAGIC_V1:
        raise _bad_start(data)
    if _xxh3(data[_CHECKED_FROM:]) != checksum:
        raise DecodeError("checksum mismatch (damaged or truncated)", corrupt=True)
    return flags, created, fresh, compute


#: Types whose values nobody can change: a decoded one may be handed out as it is.
_FROZEN_TYPES = frozenset(
    {str, int, float, bool, type(None), bytes, Decimal, uuid.UUID}
    | {dt.datetime, dt.date, dt.time, dt.timedelta}
)
#: Memory-tier envelopes whose decoded values are remembered, at most, per codec, and
#: the largest envelope remembered: at most 4 MiB of envelopes (and their copies).
_REMEMBERED_VALUES, _REMEMBERED_MAX_BYTES = 4096, 1024


def _frozen(value: Any) -> bool:
    t = type(value)
    if t in _FROZEN_TYPES:
        return True
    if t is tuple or t is frozenset:
        return all(map(_frozen, value))
    return False


def _same(value: Any) -> Any:
    return value


def _copier(value: Any, depth: int = 3) -> Callable[[Any], Any] | None:
    """How to hand out an independent copy of ``value`` quickly, if there is a way.

    Frozen values are handed out as they are. Dicts, lists and sets are copied level by
    level down to their frozen items, for up to ``depth`` levels (``{"roles": ["a"]}``,
    a list of flat records). Anything else (deeper nesting, registered classes) has no
    quick way: msgpack decodes it afresh, which is about as cheap.
    """
    t = type(value)
    if _frozen(value):
        return _same
    if depth == 0:
        return None
    if t is set:
        return set.copy if all(map(_frozen, value)) else None
    if t is dict:
        inner: list[tuple[Any, Callable[[Any], Any]]] = []
        for k, v in value.items():
            if not _frozen(k):
                return None
            copy = _copier(v, depth - 1)
            if copy is None:
                return None
            if copy is not _same:
                inner.append((k, copy))
        if not inner:
            return dict.copy
        return partial(_copy_dict, parts=tuple(inner))
    if t is list:
        copies = [_copier(v, depth - 1) for v in value]
        if any(c is None for c in copies):
            return None
        if all(c is _same for c in copies):
            return list.copy
        return partial(_copy_list, copies=tuple(copies))
    return None


def _copy_dict(template: dict[Any, Any], parts: tuple[tuple[Any, Any], ...]) -> dict[Any, Any]:
    out = template.copy()
    for key, copy in parts:
        out[key] = copy(out[key])
    return out


def _copy_list(template: list[Any], copies: tuple[Any, ...]) -> list[Any]:
    return [copy(item) for copy, item in zip(copies, template, strict=True)]


class Codec:
    """Encodes values into envelopes and decodes them back.

    Args:
        compression_threshold: bodies longer than this many bytes are lz4-compressed,
            when compression makes them smaller.
        compression_level: 1-6 lz4 fast mode (6 is acceleration 1, lower levels are
            faster), 7-9 lz4 high-compression mode at that level.
        max_value_size: largest msgpack body accepted on encode, and largest declared
            uncompressed size accepted on decode, in bytes.
        signing_key: HMAC-SHA256 key; when set, every value is signed and unsigned
            values are refused.
        registry: types allowed besides the built-ins (default: ``register_type``'s).
    """

    def __init__(
        self,
        *,
        compression_threshold: int = 1000,
        compression_level: int = 6,
        max_value_size: int = 1 << 20,
        signing_key: bytes | None = None,
        registry: TypeRegistry | None = None,
    ) -> None:
        self.compression_threshold = _check_int("compression_threshold", compression_threshold, 0)
        self.compression_level = _check_int("compression_level", compression_level, 1, 9)
        self.max_value_size = _check_int("max_value_size", max_value_size, 1, _U32_MAX)
        if signing_key is not None and (type(signing_key) is not bytes or not signing_key):
            raise ConfigError("signing_key: pass non-empty bytes (or None for no signing)")
        self._key = signing_key
        self._registry = registry if registry is not None else DEFAULT_REGISTRY
        if compression_level <= 6:
            self._lz4_args: dict[str, Any] = {"mode": "fast", "acceleration": 7 - compression_level}
        else:
            self._lz4_args = {"mode": "high_compression", "compression": compression_level}
        # Packers are reused, as building one costs more than packing a small dict, but
        # never shared: a nested pack from _default, or another thread, takes another.
        self._packers: list[Any] = []
        self._hook = self._ext_hook  # one bound method, not one per decode
        # Envelope bytes -> (a private decoded copy, how to copy it) for memory-tier
        # hits: decoding is a pure function of the bytes, so equal bytes may share it.
        self._remembered: dict[bytes, tuple[Any, Callable[[Any], Any]]] = {}
        self._seen_once: set[bytes] = set()

    def __repr__(self) -> str:
        return (
            f"Codec(compression_threshold={self.compression_threshold}, "
            f"compression_level={self.compression_level}, "
            f"max_value_size={self.max_value_size}, signed={self._key is not None})"
        )

    # ------------------------------------------------------------------ encode

    def encode(
        self, value: Any, *, created_ms: int, fresh_until_ms: int, compute_us: int = 0
    ) -> bytes:
        """The envelope of ``value`` with its metadata.

        Raises:
            EncodeError: a type memo cannot store, or a body over ``max_value_size``.
        """
        body = self._pack(value)
        size = len(body)
        if size > self.max_value_size:
            raise EncodeError(
                f"the value is {size} bytes encoded, over max_value_size="
                f"{self.max_value_size}: raise max_value_size or cache something smaller"
            )
        flags = 0
        if size > self.compression_threshold:
            packed = lz4.block.compress(body, store_size=False, **self._lz4_args)
            if len(packed) + _SIZE.size < size:
                body = _SIZE.pack(size) + packed
                flags = _COMPRESSED
        try:
            meta = _META.pack(created_ms, fresh_until_ms, compute_us)
        except struct.error:  # out of range: stored clamped rather than refused
            meta = _META.pack(*map(_clamp, (created_ms, fresh_until_ms, compute_us), _META_TOPS))
        if self._key is None:
            rest = meta + body
        else:
            flags |= _SIGNED
            signature = hmac.digest(self._key, _STARTS[flags] + meta + body, "sha256")
            rest = meta + signature + body
        return b"".join((_STARTS[flags], _xxh3(rest).to_bytes(8, "big"), rest))

    def _pack(self, value: Any) -> bytes:
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
            return msgpack.ExtType(_TUPLE, self._pack(list(obj)))
        if t is set:
            return msgpack.ExtType(_SET, self._pack(list(obj)))
        if t is frozenset:
            return msgpack.ExtType(_FROZENSET, self._pack(list(obj)))
        if t is int:  # outside msgpack's 64-bit range: two's complement, big-endian
            size = (obj.bit_length() + 8) // 8
            return msgpack.ExtType(_BIGINT, obj.to_bytes(size, "big", signed=True))
        if t is dt.datetime:
            fields = [obj.year, obj.month, obj.day, obj.hour, obj.minute, obj.second]
            fields += [obj.microsecond, _offset_seconds(obj), obj.fold]
            return msgpack.ExtType(_DATETIME, self._pack(fields))
        if t is dt.date:
            return msgpack.ExtType(_DATE, self._pack([obj.year, obj.month, obj.day]))
        if t is dt.time:
            fields = [obj.hour, obj.minute, obj.second, obj.microsecond, _offset_seconds(obj)]
            return msgpack.ExtType(_TIME, self._pack([*fields, obj.fold]))
        if t is dt.timedelta:
            fields = [obj.days, obj.seconds, obj.microseconds]
            return msgpack.ExtType(_TIMEDELTA, self._pack(fields))
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
            return msgpack.ExtType(_REGISTERED, self._pack([name, state]))
        raise EncodeError(
            f"a value of type {t.__module__}.{t.__qualname__} cannot be cached: convert it "
            f"to built-in types (a dict, say), or register it with "
            f"memo.register_type({t.__qualname__})"
        )

    # ------------------------------------------------------------------ decode

    def decode(self, data: bytes) -> Entry:
        """The value and metadata of an envelope.

        Raises:
            DecodeError: ``corrupt=True`` for damaged bytes; ``corrupt=False`` for bytes
                of a newer format, or naming a type this process cannot rebuild.
        """
        flags, created, fresh, compute = _checked_header(data)
        body = data[HEADER_SIZE:] if not flags and self._key is None else self._unwrap(data, flags)
        return _tuple_new(Entry, (self._unpack_body(body), created, fresh, compute))

    def decode_value(self, data: bytes) -> Any:
        """The value of an envelope this process has verified before (the memory tier).

        Skips checksum and signature: bytes reach the in-process tier only when this
        process encoded them or checked them with ``decode``. Magic and version are still
        compared, so that foreign bytes fail instead of decoding as garbage.
        """
        start = data[:4]
        if start == _STARTS[0]:
            body = data[HEADER_SIZE:]
        elif start[:3] != _MAGIC_V1 or len(data) < HEADER_SIZE:
            raise _bad_start(data)
        else:
            flags = start[3]
            body = data[HEADER_SIZE + (_SIG_SIZE if flags & _SIGNED else 0) :]
            if flags & _COMPRESSED:
                body = self._decompress(body)
        return self._unpack_body(body)

    def decode_local(self, data: bytes) -> Any:
        """``decode_value``, remembering small values that can be copied quickly.

        The memory tier hands back the very bytes object it stored, whose hash Python
        keeps, so finding a remembered value is one dict lookup. What is handed out is
        always a copy (or a value nobody can change), never the remembered one.
        """
        found = self._remembered.get(data)
        if found is not None:
            return found[1](found[0])
        size = len(data)
        if size > _REMEMBERED_MAX_BYTES or data[3] & _COMPRESSED:
            # Large or compressed: its copy would cost memory, and decoding dominates.
            return self.decode_value(data)
        seen = self._seen_once
        if data not in seen:
            # Only a second hit earns examination and a remembered copy. Noting the
            # first apart keeps a stream of distinct keys (a long tail, or a cache far
            # larger than this table) from pushing the hot values out.
            if len(seen) >= _REMEMBERED_VALUES:
                seen.clear()
            seen.add(data)
            return self.decode_value(data)
        seen.discard(data)
        value = self.decode_value(data)
        copy = _copier(value)
        if len(self._remembered) >= _REMEMBERED_VALUES:
            self._remembered.clear()
        if copy is None:  # decoded afresh at each hit, without examining it again
            self._remembered[data] = (data, self.decode_value)
        else:
            self._remembered[data] = (copy(value), copy)
        return value

    def decode_meta(self, data: bytes) -> tuple[int, int, int]:
        """(created_ms, fresh_until_ms, compute_us) of an envelope, its body not decoded.

        Magic, version and checksum are checked (the checksum covers the metadata);
        the signature is not.
        """
        _, created, fresh, compute = _checked_header(data)
        return created, fresh, compute

    def _unwrap(self, data: bytes, flags: int) -> bytes:
        """The msgpack body of a checksummed envelope: signature checked, decompressed."""
        if flags & ~(_COMPRESSED | _SIGNED):
            raise DecodeError(f"unknown flags {flags:#04x} for format version 1", corrupt=True)
        if flags & _SIGNED:
            if self._key is None:
                raise DecodeError(
                    "the value is signed; this cache has no signing key", corrupt=True
                )
            signature = data[HEADER_SIZE : HEADER_SIZE + _SIG_SIZE]
            body = data[HEADER_SIZE + _SIG_SIZE :]
            signed = data[:4] + data[_CHECKED_FROM:HEADER_SIZE] + body
            if not hmac.compare_digest(signature, hmac.digest(self._key, signed, "sha256")):
                raise DecodeError("signature mismatch", corrupt=True)
        elif self._key is not None:
            raise DecodeError("the value is not signed but this cache requires it", corrupt=True)
        else:
            body = data[HEADER_SIZE:]
        return self._decompress(body) if flags & _COMPRESSED else body

    def _decompress(self, body: bytes) -> bytes:
        if len(body) < _SIZE.size:
            raise DecodeError("truncated compressed body", corrupt=True)
        (size,) = _SIZE.unpack_from(body)
        # Checked before decompressing, so a forged size cannot make us allocate it.
        if size > self.max_value_size:
            raise DecodeError(
                f"declared size {size} is over max_value_size={self.max_value_size}", corrupt=True
            )
        try:
            out: bytes = lz4.block.decompress(body[_SIZE.size :], uncompressed_size=size)
        except Exception:
            raise DecodeError("lz4 block does not decompress", corrupt=True) from None
        if len(out) != size:
            raise DecodeError("decompressed size differs from the declared one", corrupt=True)
        return out

    def _unpack_body(self, body: bytes) -> Any:
        try:
            # use_list=True and raw=False are msgpack's defaults: passing fewer keyword
            # arguments is measurably cheaper on this per-hit call.
            return _unpackb(body, ext_hook=self._hook, strict_map_key=False)
        except _Unreadable as exc:
            raise DecodeError(str(exc), corrupt=False) from None
        except Exception as exc:  # msgpack raises many types for malformed input
            raise DecodeError(f"malformed body ({type(exc).__name__})", corrupt=True) from None

    def _ext_hook(self, code: int, payload: bytes) -> Any:
        unpack = self._unpack
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

    def _unpack(self, payload: bytes) -> Any:
        return _unpackb(payload, ext_hook=self._hook, strict_map_key=False)
