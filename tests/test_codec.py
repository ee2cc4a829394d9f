"""The envelope codec: exact round trips, pinned bytes, and every way stored bytes go bad."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import os
import pickle
import struct
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memo import DecodeError, EncodeError, register_type
from memo._codec import HEADER_SIZE, Codec, TypeRegistry

META = {"created_ms": 1_700_000_000_000, "fresh_until_ms": 1_700_000_060_000, "compute_us": 1234}


@register_type
@dataclasses.dataclass
class Point:
    x: int
    y: float
    tags: tuple[str, ...] = ()


@register_type(name="tests.Box")
@dataclasses.dataclass
class Box:
    content: Any
    created: dt.datetime | None = None


def same(a: Any, b: Any) -> bool:
    """Equality that also demands equal types, treats NaN as NaN and tells -0.0 from 0.0."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or (
            a == b and math.copysign(1, a) == math.copysign(1, b)
        )
    if isinstance(a, Decimal):
        return (a.is_nan() and b.is_nan()) or (a == b and str(a) == str(b))
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if dataclasses.is_dataclass(a):
        return all(same(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a))
    if isinstance(a, dt.datetime):
        return a == b and a.utcoffset() == b.utcoffset() and a.fold == b.fold
    return bool(a == b)


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=2**64, max_value=2**200),
    st.integers(min_value=-(2**200), max_value=-(2**63) - 1),
    st.floats(allow_nan=True),
    st.just(-0.0),
    st.text(),
    st.binary(),
    st.datetimes(timezones=st.none() | st.timezones()),
    st.dates(),
    st.times(),
    st.timedeltas(),
    st.uuids(),
    st.decimals(allow_nan=True),
)
hashables = st.one_of(
    st.integers(), st.text(max_size=10), st.tuples(st.integers(), st.text(max_size=5))
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.tuples(inner, inner),
        st.dictionaries(hashables, inner, max_size=5),
        st.frozensets(hashables, max_size=5),
        st.sets(hashables, max_size=5),
        st.builds(Point, st.integers(), st.floats(allow_nan=False), st.tuples(st.text(max_size=5))),
        st.builds(Box, inner),
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values, st.sampled_from([0, 10**9]))
def test_every_value_round_trips_exactly_compressed_or_not(value: Any, threshold: int) -> None:
    codec = Codec(compression_threshold=threshold, max_value_size=1 << 24)
    entry = codec.decode(codec.encode(value, **META))
    expected = value
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        assert entry.value == value and entry.value.utcoffset() == value.utcoffset()
        return
    assert same(expected, entry.value), (expected, entry.value)
    assert (META["created_ms"], META["fresh_until_ms"], META["compute_us"]) == entry[1:]


def test_golden_envelope_of_a_small_dict() -> None:
    data = Codec().encode({"id": 42, "name": "alice"}, **META)
    assert data.hex() == (
        "a74d0100"
        "2b86474e1f46bd22"
        "0000018bcfe56800"
        "0000018bcfe65260"
        "000004d2"
        "82a269642aa46e616d65a5616c696365"
    )


def test_golden_envelope_of_a_compressed_value() -> None:
    data = Codec(compression_threshold=10).encode("ab" * 100, **META)
    assert data.hex() == (
        "a74d0101"
        "ef0492135cd0a340"
        "0000018bcfe56800"
        "0000018bcfe65260"
        "000004d2"
        "000000ca"
        "4fd9c861620200ae506261626162"
    )


def test_golden_envelope_of_a_signed_value() -> None:
    data = Codec(signing_key=b"memo-test-key").encode([1, "x"], **META)
    assert data.hex() == (
        "a74d0102"
        "d2e641da2c59a195"
        "0000018bcfe56800"
        "0000018bcfe65260"
        "000004d2"
        "f454b11c42ac5858eeaca5d3424278e8477afe0d187dd5e89918367efdfe724e"
        "9201a178"
    )


def test_the_header_carries_the_metadata_at_fixed_offsets() -> None:
    data = Codec().encode("v", **META)
    assert HEADER_SIZE == 32
    assert (data[:2], data[2], data[3]) == (b"\xa7M", 1, 0)
    created, fresh, compute = struct.unpack_from(">QQI", data, 12)
    assert (META["created_ms"], META["fresh_until_ms"], META["compute_us"]) == (
        created,
        fresh,
        compute,
    )


def test_compression_happens_above_the_threshold_and_only_when_it_shrinks() -> None:
    codec = Codec(compression_threshold=100)
    assert codec.encode("a" * 50, **META)[3] & 1 == 0
    assert codec.encode("a" * 5000, **META)[3] & 1 == 1
    assert codec.encode(os.urandom(5000), **META)[3] & 1 == 0
    assert len(codec.encode("a" * 5000, **META)) < 200


@pytest.mark.parametrize("level", [1, 3, 6, 7, 9])
def test_every_compression_level_round_trips(level: int) -> None:
    text = " ".join(f"word{i % 97} value{i % 13}" for i in range(3000))
    codec = Codec(compression_threshold=0, compression_level=level)
    assert text == codec.decode(codec.encode(text, **META)).value


def test_high_levels_compress_at_least_as_well_as_fast_ones() -> None:
    text = " ".join(f"word{i % 97} value{i % 13}" for i in range(3000))
    fast = Codec(compression_threshold=0, compression_level=1).encode(text, **META)
    tight = Codec(compression_threshold=0, compression_level=9).encode(text, **META)
    assert len(tight) <= len(fast)


@pytest.mark.parametrize("level", [0, 10, -1])
def test_a_compression_level_outside_1_to_9_names_the_argument(level: int) -> None:
    from memo import ConfigError

    with pytest.raises(ConfigError, match="compression_level"):
        Codec(compression_level=level)


def sample() -> bytes:
    return Codec().encode({"user": 1, "roles": ["a", "b"], "when": dt.date(2024, 1, 2)}, **META)


def test_every_truncation_is_a_corrupt_decode_error() -> None:
    data = sample()
    for n in range(len(data)):
        with pytest.raises(DecodeError) as info:
            Codec().decode(data[:n])
        assert info.value.corrupt, n


def test_every_single_bit_flip_is_caught() -> None:
    data = sample()
    codec = Codec()
    for i in range(len(data)):
        if i == 2:
            continue  # the version byte: covered below, as it must not look corrupt
        for bit in range(8):
            flipped = bytearray(data)
            flipped[i] ^= 1 << bit
            with pytest.raises(DecodeError) as info:
                codec.decode(bytes(flipped))
            assert info.value.corrupt, (i, bit)


def test_a_newer_format_version_is_unreadable_but_not_corrupt() -> None:
    data = bytearray(sample())
    data[2] = 2
    with pytest.raises(DecodeError) as info:
        Codec().decode(bytes(data))
    assert info.value.corrupt is False
    data[2] = 0
    with pytest.raises(DecodeError) as info:
        Codec().decode(bytes(data))
    assert info.value.corrupt is True


def test_a_type_unknown_in_this_process_is_unreadable_but_not_corrupt() -> None:
    @dataclasses.dataclass
    class Elsewhere:
        n: int

    other = TypeRegistry()
    other.register(Elsewhere, name="somewhere.Elsewhere")
    data = Codec(registry=other).encode({"x": Elsewhere(1)}, **META)
    with pytest.raises(DecodeError) as info:
        Codec(registry=TypeRegistry()).decode(data)
    assert info.value.corrupt is False
    assert Elsewhere(1) == Codec(registry=other).decode(data).value["x"]


def test_a_forged_size_prefix_is_refused_before_decompressing() -> None:
    codec = Codec(compression_threshold=0)
    data = bytearray(codec.encode("x" * 10_000, **META))
    data[HEADER_SIZE : HEADER_SIZE + 4] = struct.pack(">I", 2**31)
    import xxhash

    data[4:12] = struct.pack(">Q", xxhash.xxh3_64_intdigest(bytes(data[12:])))
    with pytest.raises(DecodeError, match="max_value_size") as info:
        codec.decode(bytes(data))
    assert info.value.corrupt


def test_signatures_are_checked_and_required() -> None:
    signed = Codec(signing_key=b"k1")
    data = signed.encode("v", **META)
    assert signed.decode(data).value == "v"
    with pytest.raises(DecodeError, match="signature") as info:
        Codec(signing_key=b"k2").decode(data)
    assert info.value.corrupt
    with pytest.raises(DecodeError, match="not signed"):
        signed.decode(Codec().encode("v", **META))
    with pytest.raises(DecodeError, match="no signing key"):
        Codec().decode(data)


def test_a_forged_expiry_breaks_the_signature() -> None:
    signed = Codec(signing_key=b"k1")
    data = bytearray(signed.encode("v", **META))
    data[20:28] = struct.pack(">Q", 2**50)
    import xxhash

    data[4:12] = struct.pack(">Q", xxhash.xxh3_64_intdigest(bytes(data[12:])))
    with pytest.raises(DecodeError, match="signature"):
        signed.decode(bytes(data))


def test_the_signing_key_never_shows_in_repr() -> None:
    assert "s3cr3t" not in repr(Codec(signing_key=b"s3cr3t"))
    assert "signed=True" in repr(Codec(signing_key=b"s3cr3t"))


def test_a_planted_pickle_is_refused_and_never_executed(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self) -> tuple[Any, ...]:
            return (open, (str(marker), "w"))

    payload = pickle.dumps(Exploit())
    for data in (
        payload,
        b"\xa7M\x01\x00" + payload,
        Codec().encode(payload, **META)[:32] + payload,
    ):
        with pytest.raises(DecodeError):
            Codec().decode(data)
    # Stored as bytes, a pickle is only ever bytes.
    assert payload == Codec().decode(Codec().encode(payload, **META)).value
    assert not marker.exists()


def test_an_unsupported_type_names_itself_and_the_way_out() -> None:
    class Opaque:
        pass

    with pytest.raises(EncodeError, match=r"Opaque.*register_type"):
        Codec().encode({"x": Opaque()}, **META)


def test_a_value_over_max_value_size_names_the_limit() -> None:
    with pytest.raises(EncodeError, match="max_value_size=100"):
        Codec(max_value_size=100).encode("x" * 1000, **META)


def test_registering_a_class_without_callables_needs_them() -> None:
    from memo import ConfigError

    class Plain:
        pass

    with pytest.raises(ConfigError, match="encode= and decode="):
        TypeRegistry().register(Plain)


def test_two_classes_cannot_share_a_registered_name() -> None:
    from memo import ConfigError

    @dataclasses.dataclass
    class A:
        n: int

    @dataclasses.dataclass
    class B:
        n: int

    registry = TypeRegistry()
    registry.register(A, name="same")
    with pytest.raises(ConfigError, match="already registered"):
        registry.register(B, name="same")


def test_decode_value_reads_verified_bytes_and_refuses_foreign_ones() -> None:
    codec = Codec(compression_threshold=0, signing_key=b"k")
    data = codec.encode({"a": [1, 2]}, **META)
    assert codec.decode_value(data) == {"a": [1, 2]}
    with pytest.raises(DecodeError):
        codec.decode_value(b"not memo at all")


def test_a_tz_aware_datetime_keeps_its_offset() -> None:
    tz = dt.timezone(dt.timedelta(hours=5, minutes=30))
    value = dt.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=tz)
    out = Codec().decode(Codec().encode(value, **META)).value
    assert value == out
    assert dt.timedelta(hours=5, minutes=30) == out.utcoffset()


def test_uuid_and_decimal_keep_their_types_and_a_bytearray_comes_back_as_bytes() -> None:
    value = [uuid.UUID(int=7), Decimal("1.10"), bytearray(b"ab"), b"cd"]
    out = Codec().decode(Codec().encode(value, **META)).value
    assert [uuid.UUID, Decimal, bytes, bytes] == [type(v) for v in out]
    assert value == out
