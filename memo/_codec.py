"""Values to bytes and back: envelope v1, msgpack with ext types, lz4, optional HMAC.

Envelope v1 (all integers big-endian)::

    offset size  field
    0      2     magic b"\\xa7M"
    2      1     format version (1)
    3      1     flags: bit 0 compressed, bit 1 signed
    4      8     checksum         xxh3-64 of every byte after it (offset 12 to the end)
    12     8     created_ms       epoch milliseconds when stored
    20     8     fresh_until_ms   epoch milliseconds of logical expiry
    28     4     compute_us       how long the value took to compute
    32     32    HMAC-SHA256      only when signed: over bytes 0-3, 12-31 and the body
    ..     ..    body             msgpack; when compressed: u32 size + lz4 block

The version byte is read before anything else is trusted, so that a value written by a
newer memo is reported as such (and left alone) rather than as corrupt. The checksum
sits before the metadata so that it covers it: a flipped bit in an expiry is caught
without a key, like one in the body; the signature, when configured, also stops anyone
with write access to the store from planting values. Nothing here ever unpickles.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import hmac
import struct
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any, NamedTuple, TypeVar

import lz4.block
import msgpack
import xxhash

from memo.exceptions import ConfigError, DecodeError, EncodeError

__all__ = [
    "DEFAULT_REGISTRY",
    "Codec",
    "Entry",
    "TypeRegistry",
    "register_type",
]

MAGIC = b"\xa7M"
VERSION = 1
_MAGIC_V1 = MAGIC + bytes([VERSION])
_HEADER = struct.Struct(">2sBBQQQI")
HEADER_SIZE = _HEADER.size  # 32
_CHECKED_FROM = 12  # the checksum covers data[12:]
_SIZE = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_SIG_SIZE = 32
_COMPRESSED, _SIGNED = 0x01, 0x02
_U32_MAX = (1 << 32) - 1
_U64_MAX = (1 << 64) - 1

# Ext type codes are part of the stored format: never renumber, only append.
_TUPLE, _SET, _FROZENSET, _DATETIME, _DATE, _TIME = 1, 2, 3, 4, 5, 6
_TIMEDELTA, _UUID, _DECIMAL, _BIGINT, _REGISTERED = 7, 8, 9, 10, 11
# msgpack packs bytearray natively as bin: it is read back as bytes.

T = TypeVar("T")


class Entry(NamedTuple):
    """A decoded value and the metadata of its envelope."""

    value: Any
    created_ms: int
    fresh_until_ms: int
    compute_us: int


class _UnknownType(Exception):
    """A registered-type name this process does not know (raised inside ext_hook)."""


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
        """Allow instances of ``cls`` in cached values.

        Dataclasses and pydantic models need no callables; other classes pass ``encode``
        (instance to msgpack-able state) and ``decode`` (state to instance).
        """
        if not isinstance(cls, type):
            raise ConfigError(f"cls={cls!r}: register_type() takes a class")
        name = name or f"{cls.__module__}.{cls.__qualname__}"
        if encode is None or decode is None:
            if dataclasses.is_dataclass(cls):
                names = [f.name for f in dataclasses.fields(cls)]

                def enc(obj: Any) -> Any:
                    # Shallow on purpose: nested values go through the codec themselves,
                    # keeping their own exact types (asdict would flatten them).
                    return {n: getattr(obj, n) for n in names}

                encode, decode = encode or enc, decode or (lambda state: cls(**state))
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
        return self._by_type.get(cls)

    def decoder(self, name: str) -> Callable[[Any], Any] | None:
        found = self._by_name.get(name)
        return None if found is None else found[1]


DEFAULT_REGISTRY = TypeRegistry()


def register_type(
    cls: type[T] | None = None,
    *,
    name: str | None = None,
    encode: Callable[[Any], Any] | None = None,
    decode: Callable[[Any], Any] | None = None,
) -> Any:
    """Allow a dataclass, pydantic model or other class in cached values.

    Usable as ``register_type(Point)`` or as a class decorator, with or without
    arguments (``@register_type`` / ``@register_type(name="geo.Point")``). The name is
    what is stored: keep it stable across releases.
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


class Codec:
    """Encodes values into envelopes and decodes them back.

    Args:
        compression_threshold: bodies longer than this many bytes are lz4-compressed,
            when compression makes them smaller.
        compression_level: 1-6 lz4 fast mode (6 is the default acceleration, lower is
            faster), 7-9 lz4 high-compression mode.
        max_value_size: largest body accepted, compressed or not, in bytes.
        signing_key: HMAC-SHA256 key; when set, unsigned values are rejected.
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
        if not isinstance(compression_threshold, int) or compression_threshold < 0:
            raise ConfigError(f"compression_threshold={compression_threshold!r}: bytes, 0 or more")
        if not isinstance(compression_level, int) or not 1 <= compression_level <= 9:
            raise ConfigError(f"compression_level={compression_level!r}: an int from 1 to 9")
        if not isinstance(max_value_size, int) or not 1 <= max_value_size <= _U32_MAX:
            raise ConfigError(f"max_value_size={max_value_size!r}: bytes, 1 to {_U32_MAX}")
        if signing_key is not None and (not isinstance(signing_key, bytes) or not signing_key):
            raise ConfigError("signing_key: pass non-empty bytes (or None for no signing)")
        self.compression_threshold = compression_threshold
        self.compression_level = compression_level
        self.max_value_size = max_value_size
        self._key = signing_key
        self._registry = registry or DEFAULT_REGISTRY
        if compression_level <= 6:
            self._lz4_args: dict[str, Any] = {"mode": "fast", "acceleration": 7 - compression_level}
        else:
            self._lz4_args = {"mode": "high_compression", "compression": compression_level}
        self._packer_default = self._default
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
        """The envelope of ``value``. Raises EncodeError for unsupported or oversize values."""
        body = self._pack(value)
        if len(body) > self.max_value_size:
            raise EncodeError(
                f"the value is {len(body)} bytes encoded, over max_value_size="
                f"{self.max_value_size}: raise max_value_size or cache something smaller"
            )
        flags = 0
        if len(body) > self.compression_threshold:
            packed = lz4.block.compress(body, store_size=False, **self._lz4_args)
            if len(packed) + _SIZE.size < len(body):
                body = _SIZE.pack(len(body)) + packed
                flags |= _COMPRESSED
        meta = (
            max(0, min(created_ms, _U64_MAX)),
            max(0, min(fresh_until_ms, _U64_MAX)),
            max(0, min(compute_us, _U32_MAX)),
        )
        unchecked = _HEADER.pack(MAGIC, VERSION, flags | (_SIGNED if self._key else 0), 0, *meta)
        rest = unchecked[_CHECKED_FROM:]
        if self._key is not None:
            signature = hmac.new(self._key, unchecked[:4] + rest + body, hashlib.sha256).digest()
            rest += signature
        rest += body
        return unchecked[:4] + _U64.pack(xxhash.xxh3_64_intdigest(rest)) + rest

    def _pack(self, value: Any) -> bytes:
        try:
            packed: bytes = msgpack.packb(
                value, default=self._packer_default, strict_types=True, use_bin_type=True
            )
        except EncodeError:
            raise
        except (TypeError, ValueError, OverflowError) as exc:
            raise EncodeError(f"the value cannot be encoded: {exc}") from exc
        return packed

    def _default(self, obj: Any) -> Any:
        """msgpack's hook for every type it does not pack natively (strict_types)."""
        t = type(obj)
        if t is tuple:
            return msgpack.ExtType(_TUPLE, self._pack(list(obj)))
        if t is set:
            return msgpack.ExtType(_SET, self._pack(list(obj)))
        if t is frozenset:
            return msgpack.ExtType(_FROZENSET, self._pack(list(obj)))
        if t is int:  # outside msgpack's 64-bit range
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
            return msgpack.ExtType(
                _TIMEDELTA, self._pack([obj.days, obj.seconds, obj.microseconds])
            )
        if t is uuid.UUID:
            return msgpack.ExtType(_UUID, obj.bytes)
        if t is Decimal:
            return msgpack.ExtType(_DECIMAL, str(obj).encode())
        registered = self._registry.encoder(t)
        if registered is not None:
            name, encode = registered
            return msgpack.ExtType(_REGISTERED, self._pack([name, encode(obj)]))
        raise EncodeError(
            f"a value of type {t.__module__}.{t.__qualname__} cannot be cached: convert it "
            f"to built-in types, or register it with memo.register_type({t.__qualname__})"
        )

    # ------------------------------------------------------------------ decode

    def decode(self, data: bytes) -> Entry:
        """The value and metadata of an envelope. Raises DecodeError (see ``corrupt``)."""
        flags, created, fresh, compute = self._header(data)
        body = data[HEADER_SIZE:]
        if flags & _SIGNED:
            body = self._verify(data, body)
        elif self._key is not None:
            raise DecodeError("the value is not signed but this cache requires it", corrupt=True)
        if flags & _COMPRESSED:
            body = self._decompress(body)
        try:
            value = msgpack.unpackb(body, ext_hook=self._hook, strict_map_key=False)
        except _UnknownType as exc:
            raise DecodeError(
                f"the value contains type {exc} which is not registered in this process",
                corrupt=False,
            ) from None
        except Exception as exc:  # msgpack raises many types for malformed input
            raise DecodeError(f"malformed body ({type(exc).__name__})", corrupt=True) from None
        return Entry(value, created, fresh, compute)

    def decode_value(self, data: bytes) -> Any:
        """The value of an envelope this process has verified before (the memory tier).

        Skips the checksum and signature: bytes reach the in-process tier only when this
        process encoded them or decoded them with ``decode``. Magic and version are still
        checked, so that foreign bytes fail instead of decoding as garbage.
        """
        if data[:3] != _MAGIC_V1:
            raise DecodeError("not a memo v1 value", corrupt=len(data) < 3 or data[2] < 1)
        flags = data[3]
        if flags == 0:
            body = data[HEADER_SIZE:]
        else:
            body = data[HEADER_SIZE + (_SIG_SIZE if flags & _SIGNED else 0) :]
            if flags & _COMPRESSED:
                body = self._decompress(body)
        try:
            # use_list=True and raw=False are msgpack's defaults: passing fewer keyword
            # arguments is measurably cheaper on this per-hit call.
            return msgpack.unpackb(body, ext_hook=self._hook, strict_map_key=False)
        except _UnknownType as exc:
            raise DecodeError(f"unregistered type {exc}", corrupt=False) from None
        except Exception as exc:
            raise DecodeError(f"malformed body ({type(exc).__name__})", corrupt=True) from None

    def decode_meta(self, data: bytes) -> tuple[int, int, int]:
        """(created_ms, fresh_until_ms, compute_us) from a checked header, body unread."""
        _, created, fresh, compute = self._header(data)
        return created, fresh, compute

    def _header(self, data: bytes) -> tuple[int, int, int, int]:
        if len(data) < HEADER_SIZE or data[:2] != MAGIC:
            raise DecodeError("not a memo value (bad magic or truncated header)", corrupt=True)
        _, version, flags, checksum, created, fresh, compute = _HEADER.unpack_from(data)
        if version != VERSION:
            # Zero is never written; anything higher comes from a newer memo.
            raise DecodeError(f"format version {version} is not readable here", corrupt=version < 1)
        if flags & ~(_COMPRESSED | _SIGNED):
            raise DecodeError(f"unknown flags {flags:#04x} for format version 1", corrupt=True)
        if xxhash.xxh3_64_intdigest(data[_CHECKED_FROM:]) != checksum:
            raise DecodeError("checksum mismatch (damaged or truncated)", corrupt=True)
        return flags, created, fresh, compute

    def _verify(self, data: bytes, body: bytes) -> bytes:
        if self._key is None:
            raise DecodeError("the value is signed but this cache has no signing key", corrupt=True)
        if len(body) < _SIG_SIZE:
            raise DecodeError("truncated signature", corrupt=True)
        signature, body = body[:_SIG_SIZE], body[_SIG_SIZE:]
        signed = data[:4] + data[_CHECKED_FROM:HEADER_SIZE] + body
        expected = hmac.new(self._key, signed, hashlib.sha256).digest()
        if not hmac.compare_digest(signature, expected):
            raise DecodeError("signature mismatch", corrupt=True)
        return body

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
            decode = self._registry.decoder(name)
            if decode is None:
                raise _UnknownType(name)
            return decode(state)
        raise ValueError(f"unknown ext type {code}")

    def _unpack(self, payload: bytes) -> Any:
        return msgpack.unpackb(payload, ext_hook=self._hook, strict_map_key=False)
