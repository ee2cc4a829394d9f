"""Values to bytes and back: a msgpack body in envelope v1, lz4, optional HMAC.

The parts live apart: ``memo._envelope`` lays out and checks the bytes around a body,
``memo._valuetypes`` turns values into msgpack bodies and back (ext types, registered
classes), and ``memo._decoded`` remembers decoded values for memory-tier hits. A
``Codec`` puts them together under one ``CodecOptions``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from memo._decoded import DecodedValues
from memo._envelope import (
    COMPRESSED,
    HEADER_SIZE,
    MAGIC_V1,
    SIGNATURE_SIZE,
    SIGNED,
    STARTS,
    bad_start,
    checked_header,
    compress,
    decompress,
    lz4_arguments,
    seal,
    unwrap,
)
from memo._options import CodecOptions
from memo._valuetypes import DEFAULT_REGISTRY, BodyCodec, TypeRegistry, unpack_body
from memo.exceptions import EncodeError

__all__ = ["Codec", "Entry"]

_PLAIN_START = STARTS[0]  # neither compressed nor signed
_tuple_new = tuple.__new__  # builds an Entry without NamedTuple's Python-level __new__


class Entry(NamedTuple):
    """A decoded value and the metadata of its envelope."""

    value: Any
    created_ms: int
    fresh_until_ms: int
    compute_us: int


class Codec:
    """Encodes values into envelopes and decodes them back.

    Args:
        options: compression, size limit and signing key (default: ``CodecOptions()``).
        registry: types allowed besides the built-ins (default: ``register_type``'s).
    """

    decode_local: Callable[[bytes], Any]
    """``decode_value``, remembering small values that can be copied quickly.

    For the memory tier, whose bytes this process encoded or verified. What is handed
    out is always a copy (or a value nobody can change), never the remembered one.
    """

    remembered: Callable[[bytes], tuple[Any, Callable[[Any], Any]] | None]
    """What ``decode_local`` remembered for these bytes: (template, copy), or None."""

    def __init__(
        self, options: CodecOptions | None = None, *, registry: TypeRegistry | None = None
    ) -> None:
        self.options = options if options is not None else CodecOptions()
        self._key = self.options.signing_key
        self._max_size = self.options.max_value_size
        self._threshold = self.options.compression_threshold
        self._lz4_args = lz4_arguments(self.options.compression_level)
        body = BodyCodec(registry if registry is not None else DEFAULT_REGISTRY)
        self._body = body
        self._hook = body.ext_hook
        # A plain attribute rather than a method that delegates: one call less per hit.
        decoded = DecodedValues(self)
        self.decode_local = decoded.value
        self.remembered = decoded.remembered

    @property
    def compression_threshold(self) -> int:
        """Bodies longer than this many bytes are lz4-compressed, when that shrinks them."""
        return self.options.compression_threshold

    @property
    def compression_level(self) -> int:
        """1-6 lz4 fast mode, 7-9 lz4 high-compression mode at that level."""
        return self.options.compression_level

    @property
    def max_value_size(self) -> int:
        """Largest body accepted on encode, and largest declared size on decode, in bytes."""
        return self.options.max_value_size

    def __repr__(self) -> str:
        return (
            f"Codec(compression_threshold={self.compression_threshold}, "
            f"compression_level={self.compression_level}, "
            f"max_value_size={self.max_value_size}, signed={self._key is not None})"
        )

    def encode(
        self, value: Any, *, created_ms: int, fresh_until_ms: int, compute_us: int = 0
    ) -> bytes:
        """The envelope of ``value`` with its metadata.

        Raises:
            EncodeError: a type memo cannot store, or a body over ``max_value_size``.
        """
        body = self._body.pack(value)
        size = len(body)
        if size > self._max_size:
            raise EncodeError(
                f"the value is {size} bytes encoded, over max_value_size="
                f"{self._max_size}: raise max_value_size or cache something smaller"
            )
        flags = 0
        if size > self._threshold:
            packed = compress(body, self._lz4_args)
            if packed is not None:
                body, flags = packed, COMPRESSED
        return seal(body, flags, self._key, created_ms, fresh_until_ms, compute_us)

    def decode(self, data: bytes) -> Entry:
        """The value and metadata of an envelope.

        Raises:
            DecodeError: ``corrupt=True`` for damaged bytes; ``corrupt=False`` for bytes
                of a newer format, or naming a type this process cannot rebuild.
        """
        flags, created, fresh, compute = checked_header(data)
        if not flags and self._key is None:
            body = data[HEADER_SIZE:]
        else:
            body = unwrap(data, flags, self._key, self._max_size)
        return _tuple_new(Entry, (unpack_body(body, self._hook), created, fresh, compute))

    def decode_value(self, data: bytes) -> Any:
        """The value of an envelope this process has verified before (the memory tier).

        Skips checksum and signature: bytes reach the in-process tier only when this
        process encoded them or checked them with ``decode``. Magic and version are still
        compared, so that foreign bytes fail instead of decoding as garbage.
        """
        start = data[:4]
        if start == _PLAIN_START:
            body = data[HEADER_SIZE:]
        elif start[:3] != MAGIC_V1 or len(data) < HEADER_SIZE:
            raise bad_start(data)
        else:
            flags = start[3]
            body = data[HEADER_SIZE + (SIGNATURE_SIZE if flags & SIGNED else 0) :]
            if flags & COMPRESSED:
                body = decompress(body, self._max_size)
        return unpack_body(body, self._hook)
