"""Values to bytes and back: envelope v1, msgpack with ext types, lz4, optional HMAC.

Envelope v1 (all integers big-endian)::

    offset size  field
    0      2     magic b"\\xa7M"
    2      1     format version (1)
    3      1     flags: bit 0 compressed, bit 1 signed, others zero
    4      8     checksum         xxh3-64 of bytes 12 to the end, seeded with the flags byte
    12     8     created_ms       epoch milliseconds when stored
    20     8     fresh_until_ms   epoch milliseconds of logical expiry
    28     4     compute_us       how long the value took to compute
    32     32    HMAC-SHA256      only when signed: over bytes 0-3, 12-31 and the body
    ..     ..    body             msgpack; when compressed: u32 size + raw lz4 block

Every byte is checked without a key: magic and version by comparison, the flags by the
checksum's seed, the rest by the checksum itself, so a flipped bit in an expiry is caught
like one in the body. The version is read before anything else is trusted, so a value
written by a newer memo is reported as unreadable (and left alone), not as corrupt. The
signature, when configured, also stops anyone with write access to the store from
planting values. Nothing here unpickles: decoding only builds the types listed below and
those registered by name.

Round trips keep value and exact type, with these documented exceptions: a ``bytearray``
comes back as ``bytes`` (msgpack packs both as bin), and an aware datetime or time keeps
only its UTC offset (a ``zoneinfo`` zone comes back as a fixed ``datetime.timezone``; a
time whose tzinfo gives no offset comes back naive). Subclasses of built-ins (IntEnum,
OrderedDict, namedtuple, ...) are refused unless registered.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hmac
import struct
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any, NamedTuple, TypeVar, overload

import lz4.block
import msgpack
import xxhash

from memo.exceptions import ConfigError, DecodeError, EncodeError

__all__ = [
    "DEFAULT_REGISTRY",
    "HEADER_SIZE",
    "Codec",
    "Entry",
    "TypeRegistry",
    "register_type",
]

MAGIC = b"\xa7M"
VERSION = 1
_MAGIC_V1 = MAGIC + bytes([VERSION])
_HEADER = struct.Struct(">3sBQQQI")  # magic+version, flags, checksum, created, fresh, compute
_META = struct.Struct(">QQI")
HEADER_SIZE = _HEADER.size  # 32
_CHECKED_FROM = 12
_SIG_SIZE = 32
_SIZE = struct.Struct(">I")
_COMPRESSED, _SIGNED = 0x01, 0x02
_STARTS = [_MAGIC_V1 + bytes([flags]) for flags in range(4)]
_U32_MAX, _U64_MAX = (1 << 32) - 1, (1 << 64) - 1
_POOL_SIZE = 8

# Ext type codes are part of the stored format: never renumber, only append.
_TUPLE, _SET, _FROZENSET, _DATETIME, _DATE, _TIME = 1, 2, 3, 4, 5, 6
_TIMEDELTA, _UUID, _DECIMAL, _BIGINT, _REGISTERED = 7, 8, 9, 10, 11

# Bound once: decode runs on every cache hit, and each attribute lookup shows up there.
_unpack_header = _HEADER.unpack_from
_unpackb = msgpack.unpackb
_xxh3 = xxhash.xxh3_64_intdigest
_tuple_new = tuple.__new__  # builds an Entry without NamedTuple's Python-level __new__

T = TypeVar("T")


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
        self._by_type: dict[type, tuple[str, Callable[[Any], Any]]] = {}
        self._by_name: dict[str, tuple[type, Callable[[Any], Any]]] = {}

    def register(
        self,
        cls: type,
        *,
        name: str | None = None,
        encode: Callable[[Any], Any] | None = None,
        decode: Callable[[Any], Any] | None = None,
    ) -> None:
        """Allow instances of ``cls`` in cached values, stored under ``name``.

        Dataclasses and pydantic models need no callables; other classes pass ``encode``
        (instance to encodable state) and ``decode`` (state to instance).

        Raises:
            ConfigError: callables missing for a plain class, or ``name`` taken.
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

    def encoder(self, cls: type) -> tuple[str, Callable[[Any], Any]] | None:
        """The stored name and state function of ``cls``, if registered."""
        return self._by_type.get(cls)

    def decoder(self, name: str) -> Callable[[Any], Any] | None:
        """The function rebuilding an instance stored as ``name``, if registered."""
        found = self._by_name.get(name)
        return None if found is None else found[1]


DEFAULT_REGISTRY = TypeRegistry()


@overload
def register_type(
    cls: type[T],
    *,
    name: str | None = None,
    encode: Callable[[Any], Any] | None = None,
    decode: Callable[[Any], Any] | None = None,
) -> type[T]: ...
@overload
def register_type(
    cls: None = None,
    *,
    name: str | None = None,
    encode: Callable[[Any], Any] | None = None,
    decode: Callable[[Any], Any] | None = None,
) -> Callable[[type[T]], type[T]]: ...
def register_type(
    cls: type[T] | None = None,
    *,
    name: str | None = None,
    encode: Callable[[Any], Any] | None = None,
    decode: Callable[[Any], Any] | None = None,
) -> type[T] | Callable[[type[T]], type[T]]:
    """Allow a dataclass, pydantic model or other class in cached values.

    Usable as ``register_type(Point)``, ``register_type(Point, name="geo.Point")`` or as a
    class decorator, with or without arguments. The name is what is stored: keep it
    stable across releases. Returns the class.
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


def _bad_start(data: bytes) -> DecodeError:
    """The error for bytes whose first three are not a v1 envelope's, or too few bytes."""
    if data[:2] != MAGIC:
        return DecodeError("not a memo value (bad magic)", corrupt=True)
    if len(data) > 2 and data[2] > VERSION:
        # Another process, running a newer memo, may read it: not ours to delete.
        return DecodeError(f"format version {data[2]} is newer than this memo", corrupt=False)
    if len(data) > 2 and data[2] < VERSION:
        return DecodeError(f"format version {data[2]} was never written", corrupt=True)
    return DecodeError(f"truncated header ({len(data)} bytes)", corrupt=True)


def _check_int(name: str, value: object, low: int, high: int) -> int:
    if type(value) is not int or not low <= value <= high:
        raise ConfigError(f"{name}={value!r}: pass an int from {low} to {high}")
    return value


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
        self.compression_threshold = _check_int(
            "compression_threshold", compression_threshold, 0, _U64_MAX
        )
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
        # Packers are reused (building one per call costs more than packing a small
        # dict) but never shared: a nested pack from ``_default``, or another thread,
        # takes its own from the pool or a new one.
        self._packers: list[Any] = []
        self._hook = self._ext_hook  # one bound method, not one per decode

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
            meta = _META.pack(
                _clamp(created_ms, _U64_MAX),
                _clamp(fresh_until_ms, _U64_MAX),
                _clamp(compute_us, _U32_MAX),
            )
        if self._key is None:
            rest = meta + body
        else:
            flags |= _SIGNED
            signed = _STARTS[flags] + meta + body
            rest = meta + hmac.digest(self._key, signed, "sha256") + body
        return b"".join((_STARTS[flags], _xxh3(rest, flags).to_bytes(8, "big"), rest))

    def _pack(self, value: Any) -> bytes:
        pool = self._packers
        try:
            packer = pool.pop()
        except IndexError:
            packer = msgpack.Packer(default=self._default, strict_types=True, use_bin_type=True)
        try:
            packed: bytes = packer.pack(value)
        except EncodeError:
            raise
        except (TypeError, ValueError, OverflowError, RecursionError) as exc:
            raise EncodeError(f"the value cannot be encoded: {exc}") from exc
        # Only a packer that finished cleanly goes back: its buffer is known empty.
        if len(pool) < _POOL_SIZE:
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
        if t is int:  # outside msgpack's range: two's complement, big-endian
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
                    f"the encode function registered for {name!r} failed "
                    f"({type(exc).__name__}): fix it or cache something else"
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
            DecodeError: ``corrupt=True`` for damaged bytes, ``corrupt=False`` for bytes
                of a newer format or naming a type this process cannot rebuild.
        """
        try:
            start, flags, checksum, created, fresh, compute = _unpack_header(data)
        except struct.error:
            raise _bad_start(data) from None
        if start != _MAGIC_V1:
            raise _bad_start(data)
        if _xxh3(data[_CHECKED_FROM:], flags) != checksum:
            raise DecodeError("checksum mismatch (damaged or truncated)", corrupt=True)
        if flags:
            body = self._unwrap(data, flags)
        elif self._key is None:
            body = data[HEADER_SIZE:]
        else:
            raise DecodeError("the value is not signed but this cache requires it", corrupt=True)
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

    def decode_meta(self, data: bytes) -> tuple[int, int, int]:
        """(created_ms, fresh_until_ms, compute_us) of an envelope, its body not decoded.

        Magic, version and checksum are checked (the checksum covers the metadata);
        the signature and the body are not.
        """
        try:
            start, flags, checksum, created, fresh, compute = _unpack_header(data)
        except struct.error:
            raise _bad_start(data) from None
        if start != _MAGIC_V1:
            raise _bad_start(data)
        if _xxh3(data[_CHECKED_FROM:], flags) != checksum:
            raise DecodeError("checksum mismatch (damaged or truncated)", corrupt=True)
        return created, fresh, compute

    def _unwrap(self, data: bytes, flags: int) -> bytes:
        """The msgpack body of a checksummed envelope with flags set."""
        if flags & ~(_COMPRESSED | _SIGNED):
            raise DecodeError(f"unknown flags {flags:#04x} for format version 1", corrupt=True)
        if flags & _SIGNED:
            if self._key is None:
                raise DecodeError(
                    "the value is signed but this cache has no signing key", corrupt=True
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
            # use_list=True and raw=False are msgpack's defaults: fewer keyword
            # arguments make this per-hit call measurably cheaper.
            return _unpackb(body, ext_hook=self._hook, strict_map_key=False)
        except _Unreadable as exc:
            raise DecodeError(str(exc), corrupt=False) from None
        except Exception as exc:  # msgpack raises many types for malformed input
            raise DecodeError(f"malformed body ({type(exc).__name__})", corrupt=True) from None

    def _ext_hook(self, code: int, payload: bytes) -> Any:
        unpack = self._unpack
        if code == _TUPLE:
            return tuple(unpack(payload))
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
