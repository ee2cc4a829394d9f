"""Envelope v1: the bytes around a value's body, and every check made on them.

All integers big-endian::

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
with write access to the store from planting values.
"""

from __future__ import annotations

import hmac
import struct
from typing import Any

import lz4.block
import xxhash

from memo.exceptions import DecodeError

__all__ = [
    "COMPRESSED",
    "HEADER_SIZE",
    "STAMP_OFFSET",
    "stamp",
    "MAGIC",
    "MAGIC_V1",
    "SIGNATURE_SIZE",
    "SIGNED",
    "STARTS",
    "VERSION",
    "bad_start",
    "checked_header",
    "compress",
    "decompress",
    "lz4_arguments",
    "seal",
    "unwrap",
]

MAGIC = b"\xa7M"
VERSION = 1
MAGIC_V1 = MAGIC + bytes([VERSION])
_HEADER = struct.Struct(">3sBQQQI")  # magic+version, flags, checksum, created, fresh, compute
_META = struct.Struct(">QQI")
HEADER_SIZE = _HEADER.size  # 32
#: Where an envelope's created and fresh-until times sit: together they tell one stored
#: version from another, so a conditional store can check what it is replacing.
STAMP_OFFSET = 12
_STAMP = struct.Struct(">QQ")
_CHECKED_FROM = 12  # the checksum covers data[12:]
SIGNATURE_SIZE = 32
_SIZE = struct.Struct(">I")
COMPRESSED, SIGNED = 0x01, 0x02
#: Bytes 0-3 of a v1 envelope, by flags.
STARTS = tuple(MAGIC_V1 + bytes([flags]) for flags in range(4))
_U32_MAX, _U64_MAX = (1 << 32) - 1, (1 << 64) - 1
_META_TOPS = (_U64_MAX, _U64_MAX, _U32_MAX)

# Bound once: the header is read on every hit from Redis.
_unpack_header = _HEADER.unpack_from
_xxh3 = xxhash.xxh3_64_intdigest


def _clamp(n: int, top: int) -> int:
    return max(0, min(int(n), top))


def lz4_arguments(level: int) -> dict[str, Any]:
    """``lz4.block.compress`` arguments for a compression level from 1 to 9.

    1-6 is fast mode (6 is acceleration 1, lower levels are faster), 7-9 is
    high-compression mode at that level.
    """
    if level <= 6:
        return {"mode": "fast", "acceleration": 7 - level}
    return {"mode": "high_compression", "compression": level}


def compress(body: bytes, lz4_args: dict[str, Any]) -> bytes | None:
    """The compressed form of ``body`` (size prefix and lz4 block), if it is smaller."""
    size = len(body)
    packed: bytes = lz4.block.compress(body, store_size=False, **lz4_args)
    if len(packed) + _SIZE.size < size:
        return _SIZE.pack(size) + packed
    return None


def seal(
    body: bytes,
    flags: int,
    key: bytes | None,
    created_ms: int,
    fresh_until_ms: int,
    compute_us: int,
) -> bytes:
    """The envelope of a (possibly compressed) body, signed when there is a ``key``.

    Metadata out of range is stored clamped rather than refused.
    """
    try:
        meta = _META.pack(created_ms, fresh_until_ms, compute_us)
    except struct.error:
        meta = _META.pack(*map(_clamp, (created_ms, fresh_until_ms, compute_us), _META_TOPS))
    if key is None:
        rest = meta + body
    else:
        flags |= SIGNED
        signature = hmac.digest(key, STARTS[flags] + meta + body, "sha256")
        rest = meta + signature + body
    return b"".join((STARTS[flags], _xxh3(rest).to_bytes(8, "big"), rest))


def bad_start(data: bytes) -> DecodeError:
    """The error for bytes that do not start like a v1 envelope, or are too short."""
    if data[:2] != MAGIC:
        return DecodeError("not a memo value (bad magic)", corrupt=True)
    if len(data) > 2 and data[2] != VERSION:
        # Zero is never written; anything higher comes from a newer memo, which another
        # process may be running: not ours to delete.
        return DecodeError(f"format version {data[2]} is not readable here", corrupt=data[2] < 1)
    return DecodeError(f"truncated header ({len(data)} bytes)", corrupt=True)


def checked_header(data: bytes) -> tuple[int, int, int, int]:
    """(flags, created_ms, fresh_until_ms, compute_us) once magic, version and checksum pass."""
    try:
        start, flags, checksum, created, fresh, compute = _unpack_header(data)
    except struct.error:
        raise bad_start(data) from None
    if start != MAGIC_V1:
        raise bad_start(data)
    if _xxh3(data[_CHECKED_FROM:]) != checksum:
        raise DecodeError("checksum mismatch (damaged or truncated)", corrupt=True)
    return flags, created, fresh, compute


def unwrap(data: bytes, flags: int, key: bytes | None, max_size: int) -> bytes:
    """The msgpack body of a checksummed envelope: signature checked, decompressed."""
    if flags & ~(COMPRESSED | SIGNED):
        raise DecodeError(f"unknown flags {flags:#04x} for format version 1", corrupt=True)
    if flags & SIGNED:
        if key is None:
            raise DecodeError("the value is signed; this cache has no signing key", corrupt=True)
        signature = data[HEADER_SIZE : HEADER_SIZE + SIGNATURE_SIZE]
        body = data[HEADER_SIZE + SIGNATURE_SIZE :]
        signed = data[:4] + data[_CHECKED_FROM:HEADER_SIZE] + body
        if not hmac.compare_digest(signature, hmac.digest(key, signed, "sha256")):
            raise DecodeError("signature mismatch", corrupt=True)
    elif key is not None:
        raise DecodeError("the value is not signed but this cache requires it", corrupt=True)
    else:
        body = data[HEADER_SIZE:]
    return decompress(body, max_size) if flags & COMPRESSED else body


def decompress(body: bytes, max_size: int) -> bytes:
    """The bytes of a compressed body, refused when it declares more than ``max_size``."""
    if len(body) < _SIZE.size:
        raise DecodeError("truncated compressed body", corrupt=True)
    (size,) = _SIZE.unpack_from(body)
    # Checked before decompressing, so a forged size cannot make us allocate it.
    if size > max_size:
        raise DecodeError(f"declared size {size} is over max_value_size={max_size}", corrupt=True)
    try:
        out: bytes = lz4.block.decompress(body[_SIZE.size :], uncompressed_size=size)
    except Exception:
        raise DecodeError("lz4 block does not decompress", corrupt=True) from None
    if len(out) != size:
        raise DecodeError("decompressed size differs from the declared one", corrupt=True)
    return out


def stamp(created_ms: int, fresh_until_ms: int) -> bytes:
    """The bytes at ``STAMP_OFFSET`` of an envelope with these times."""
    return _STAMP.pack(created_ms, fresh_until_ms)
