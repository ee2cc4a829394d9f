"""The envelope codec: exact round trips, pinned bytes, and every way stored bytes go bad."""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import enum
import math
import os
import pickle
import re
import struct
import threading
import tracemalloc
import uuid
import zoneinfo
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgpack
import pytest
import xxhash
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memo import ConfigError, DecodeError, EncodeError, register_type
from memo._codec import Codec, Entry
from memo._decoded import REMEMBERED_MAX_BYTES, DecodedValues
from memo._envelope import HEADER_SIZE
from memo._options import CodecOptions
from memo._valuetypes import DEFAULT_REGISTRY, TypeRegistry

META = {"created_ms": 1_700_000_000_000, "fresh_until_ms": 1_700_000_060_000, "compute_us": 1234}
MEMO_SOURCE = Path(__file__).resolve().parent.parent / "memo"


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


class Model:
    """Shaped like a pydantic v2 model: model_dump() and model_validate()."""

    def __init__(self, name: str, size: int) -> None:
        self.name, self.size = name, size

    def model_dump(self, mode: str = "python") -> dict[str, Any]:
        return {"name": self.name, "size": self.size}

    @classmethod
    def model_validate(cls, data: dict[str, Any]) -> Model:
        return cls(**data)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Model) and (self.name, self.size) == (other.name, other.size)


register_type(Model, name="tests.Model")


def envelope(body: bytes, flags: int = 0, version: int = 1) -> bytes:
    """An envelope built by hand from the documented layout, with a valid checksum."""
    rest = struct.pack(">QQI", *META.values()) + body
    checksum = struct.pack(">Q", xxhash.xxh3_64_intdigest(rest))
    return b"\xa7M" + bytes([version, flags]) + checksum + rest


def typed(x: Any) -> Any:
    """A hashable form of a set member or dict key that also tells 1, True and 1.0 apart."""
    if isinstance(x, (tuple, frozenset)):
        return (type(x).__name__, type(x)(typed(v) for v in x))
    return (type(x).__name__, x)


def same(a: Any, b: Any) -> bool:
    """Equality that demands equal types at every depth, NaN == NaN, and -0.0 != 0.0."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or (
            a == b and math.copysign(1, a) == math.copysign(1, b)
        )
    if isinstance(a, Decimal):
        return str(a) == str(b)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, (set, frozenset)):
        return {typed(x) for x in a} == {typed(x) for x in b}
    if isinstance(a, dict):
        a_typed = {typed(k): v for k, v in a.items()}
        b_typed = {typed(k): v for k, v in b.items()}
        return a_typed.keys() == b_typed.keys() and all(
            same(v, b_typed[k]) for k, v in a_typed.items()
        )
    if dataclasses.is_dataclass(a):
        return all(same(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a))
    if isinstance(a, (dt.datetime, dt.time)):
        # Wall-clock fields, offset and fold: a zone comes back as its fixed offset.
        return (a.replace(tzinfo=None), a.utcoffset(), a.fold) == (
            b.replace(tzinfo=None),
            b.utcoffset(),
            b.fold,
        )
    return bool(a == b)


fixed_offsets = st.builds(
    dt.timezone,
    st.timedeltas(min_value=dt.timedelta(hours=-23), max_value=dt.timedelta(hours=23)),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=2**64 - 2, max_value=2**200),
    st.integers(min_value=-(2**200), max_value=-(2**63) + 1),
    st.floats(allow_nan=True),
    st.sampled_from([-0.0, math.inf, -math.inf, math.nan]),
    st.text(),
    st.binary(),
    st.datetimes(timezones=st.none() | st.timezones() | fixed_offsets),
    st.dates(),
    st.times(timezones=st.none() | fixed_offsets),
    st.timedeltas(),
    st.uuids(),
    st.decimals(allow_nan=True),
)
hashables = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=10)),
    lambda inner: st.one_of(
        st.tuples(inner, inner), st.frozensets(inner, max_size=3), st.lists(inner).map(tuple)
    ),
    max_leaves=6,
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.tuples(inner, inner),
        st.lists(inner, max_size=3).map(tuple),
        st.dictionaries(hashables, inner, max_size=5),
        st.frozensets(hashables, max_size=5),
        st.sets(hashables, max_size=5),
        st.builds(Point, st.integers(), st.floats(allow_nan=False), st.tuples(st.text(max_size=5))),
        st.builds(Box, inner, st.none() | st.datetimes()),
    ),
    max_leaves=20,
)


@pytest.mark.slow
@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values, st.sampled_from([0, 2**31]))
def test_every_value_round_trips_exactly_compressed_or_not(value: Any, threshold: int) -> None:
    codec = Codec(CodecOptions(compression_threshold=threshold, max_value_size=1 << 24))
    entry = codec.decode(codec.encode(value, **META))
    assert same(value, entry.value), (value, entry.value)
    assert (META["created_ms"], META["fresh_until_ms"], META["compute_us"]) == entry[1:]
    assert same(value, codec.decode_value(codec.encode(value, **META)))


@pytest.mark.parametrize(
    "value",
    [
        True,
        [1, True, 1.0, "1"],
        {1: "int", (1, (2, 3)): "tuple key", frozenset({1}): "frozenset key", None: 0},
        [(1, 2), [(3,)], {"k": (4, [5])}],
        (),
        2**64,
        2**64 - 1,
        -(2**63),
        -(2**63) - 1,
        -(2**1000),
    ],
)
def test_types_msgpack_would_blur_come_back_exactly(value: Any) -> None:
    out = Codec().decode(Codec().encode(value, **META)).value
    assert same(value, out), out


def test_decode_returns_an_entry_with_the_metadata() -> None:
    codec = Codec()
    data = codec.encode({"id": 42}, **META)
    assert Entry({"id": 42}, *META.values()) == codec.decode(data)


def test_golden_envelope_of_a_small_dict() -> None:
    data = Codec().encode({"id": 42, "name": "alice"}, **META)
    assert (
        "a74d0100"
        "2b86474e1f46bd22"
        "0000018bcfe56800"
        "0000018bcfe65260"
        "000004d2"
        "82a269642aa46e616d65a5616c696365"
    ) == data.hex()


def test_golden_envelope_of_a_compressed_value() -> None:
    data = Codec(CodecOptions(compression_threshold=10)).encode("ab" * 100, **META)
    assert (
        "a74d0101"
        "ef0492135cd0a340"
        "0000018bcfe56800"
        "0000018bcfe65260"
        "000004d2"
        "000000ca"
        "4fd9c861620200ae506261626162"
    ) == data.hex()


def test_golden_envelope_of_a_signed_value() -> None:
    data = Codec(CodecOptions(signing_key=b"memo-test-key")).encode([1, "x"], **META)
    assert (
        "a74d0102"
        "d2e641da2c59a195"
        "0000018bcfe56800"
        "0000018bcfe65260"
        "000004d2"
        "f454b11c42ac5858eeaca5d3424278e8477afe0d187dd5e89918367efdfe724e"
        "9201a178"
    ) == data.hex()


def test_an_envelope_built_from_the_documented_layout_decodes() -> None:
    body = msgpack.packb({"id": 42, "name": "alice"})
    assert Codec().encode({"id": 42, "name": "alice"}, **META) == envelope(body)
    assert HEADER_SIZE == 32


def test_metadata_out_of_range_is_stored_clamped() -> None:
    data = Codec().encode("v", created_ms=-5, fresh_until_ms=2**70, compute_us=2**40)
    assert ("v", 0, 2**64 - 1, 2**32 - 1) == Codec().decode(data)


def test_compression_happens_above_the_threshold_and_only_when_it_shrinks() -> None:
    codec = Codec(CodecOptions(compression_threshold=100))
    assert 0 == codec.encode("a" * 50, **META)[3] & 1
    assert 1 == codec.encode("a" * 5000, **META)[3] & 1
    assert 0 == codec.encode(os.urandom(5000), **META)[3] & 1
    assert len(codec.encode("a" * 5000, **META)) < 200


def text_like() -> str:
    return " ".join(f"word{i % 97} value{i % 13} {i * 7919 % 1000}" for i in range(3000))


@pytest.mark.parametrize("level", [1, 3, 6, 7, 9])
def test_every_compression_level_round_trips(level: int) -> None:
    codec = Codec(CodecOptions(compression_threshold=0, compression_level=level))
    data = codec.encode(text_like(), **META)
    assert 1 == data[3] & 1
    assert text_like() == codec.decode(data).value


def test_high_levels_compress_at_least_as_well_as_fast_ones() -> None:
    fast = Codec(CodecOptions(compression_threshold=0, compression_level=1)).encode(
        text_like(), **META
    )
    tight = Codec(CodecOptions(compression_threshold=0, compression_level=9)).encode(
        text_like(), **META
    )
    assert len(tight) <= len(fast)


@pytest.mark.parametrize(
    ("argument", "bad"),
    [
        ("compression_level", 0),
        ("compression_level", 10),
        ("compression_level", True),
        ("compression_threshold", -1),
        ("max_value_size", 0),
        ("max_value_size", 2**32),
        ("signing_key", 42),
        ("signing_key", b""),
        ("signing_key", ""),
    ],
)
def test_a_bad_setting_is_a_config_error_naming_the_argument(argument: str, bad: Any) -> None:
    with pytest.raises(ConfigError, match=argument):
        CodecOptions(**{argument: bad})


def test_a_codec_reads_its_settings_from_its_options() -> None:
    options = CodecOptions(compression_threshold=10, compression_level=9, max_value_size=500)
    codec = Codec(options)
    assert options is codec.options
    assert (10, 9, 500) == (
        codec.compression_threshold,
        codec.compression_level,
        codec.max_value_size,
    )
    assert (1000, 6, 1 << 20) == (
        Codec().compression_threshold,
        Codec().compression_level,
        Codec().max_value_size,
    )


def test_a_str_signing_key_signs_like_its_utf8_bytes() -> None:
    data = Codec(CodecOptions(signing_key="k\u00e9y")).encode("v", **META)
    assert "v" == Codec(CodecOptions(signing_key="k\u00e9y".encode())).decode(data).value


def samples() -> list[tuple[Codec, bytes]]:
    value = {"user": 1, "roles": ("a", "b"), "when": dt.date(2024, 1, 2), "n": 2**70}
    value["pad"] = "abc" * 30  # so that the compressing codec does compress
    codecs = [
        Codec(),
        Codec(CodecOptions(compression_threshold=0)),
        Codec(CodecOptions(signing_key=b"k" * 32)),
    ]
    out = [(codec, codec.encode(value, **META)) for codec in codecs]
    assert [0, 1, 2] == [data[3] for _, data in out]
    return out


@pytest.mark.parametrize(("codec", "data"), samples())
def test_every_truncation_is_a_corrupt_decode_error(codec: Codec, data: bytes) -> None:
    for n in range(len(data)):
        with pytest.raises(DecodeError) as info:
            codec.decode(data[:n])
        assert info.value.corrupt, n


@pytest.mark.parametrize(("codec", "data"), samples())
def test_every_single_bit_flip_is_caught(codec: Codec, data: bytes) -> None:
    for i in range(len(data)):
        for bit in range(8):
            flipped = bytearray(data)
            flipped[i] ^= 1 << bit
            with pytest.raises(DecodeError) as info:
                codec.decode(bytes(flipped))
            # Only the version byte may read as "newer", never as a value.
            newer = i == 2 and flipped[2] > 1
            assert (not newer) == info.value.corrupt, (i, bit)


def test_bytes_that_are_not_memo_values_are_corrupt() -> None:
    for data in (b"", b"\xa7", b"{}", b"x" * 100, b"\xa6M\x01\x00" + bytes(60)):
        for read in (Codec().decode, Codec().decode_value):
            with pytest.raises(DecodeError, match=r"magic|truncated") as info:
                read(data)
            assert info.value.corrupt, (data, read)


def test_a_newer_format_version_is_unreadable_but_not_corrupt() -> None:
    data = bytearray(Codec().encode("v", **META))
    for version, corrupt in ((2, False), (255, False), (0, True)):
        data[2] = version
        for read in (Codec().decode, Codec().decode_value):
            with pytest.raises(DecodeError, match=f"format version {version}") as info:
                read(bytes(data))
            assert corrupt == info.value.corrupt


def test_malformed_msgpack_under_a_valid_checksum_is_corrupt() -> None:
    bad_bodies = [
        b"\xc1",  # never used in msgpack
        b"\x92\x01",  # array of two, one given
        b"\x01\x02",  # trailing data
        msgpack.packb(msgpack.ExtType(99, b"")),  # unknown ext type
        msgpack.packb(msgpack.ExtType(8, b"short")),  # a UUID of 5 bytes
        msgpack.packb(msgpack.ExtType(5, msgpack.packb([2024, 13, 1]))),  # month 13
    ]
    for body in bad_bodies:
        with pytest.raises(DecodeError, match="malformed") as info:
            Codec().decode(envelope(body))
        assert info.value.corrupt, body


def test_unknown_flag_bits_are_corrupt() -> None:
    with pytest.raises(DecodeError, match="flags") as info:
        Codec().decode(envelope(msgpack.packb(1), flags=0x04))
    assert info.value.corrupt


def test_a_type_unknown_in_this_process_is_unreadable_but_not_corrupt() -> None:
    @dataclasses.dataclass
    class Elsewhere:
        n: int

    other = TypeRegistry()
    other.register(Elsewhere, name="somewhere.Elsewhere")
    data = Codec(registry=other).encode({"x": [(1, Elsewhere(1))]}, **META)
    with pytest.raises(DecodeError, match=r"somewhere\.Elsewhere") as info:
        Codec(registry=TypeRegistry()).decode(data)
    assert info.value.corrupt is False
    assert {"x": [(1, Elsewhere(1))]} == Codec(registry=other).decode(data).value


def test_a_registered_type_that_changed_shape_is_unreadable_but_not_corrupt() -> None:
    @dataclasses.dataclass
    class Old:
        n: int

    @dataclasses.dataclass
    class New:
        n: int
        added: int

    old, new = TypeRegistry(), TypeRegistry()
    old.register(Old, name="shared.Thing")
    new.register(New, name="shared.Thing")
    data = Codec(registry=old).encode(Old(5), **META)
    with pytest.raises(DecodeError, match=r"shared\.Thing") as info:
        Codec(registry=new).decode(data)
    assert info.value.corrupt is False


def test_a_forged_size_prefix_is_refused_before_decompressing() -> None:
    body = struct.pack(">I", 2**31) + b"\x1f\x00" * 8
    tracemalloc.start()
    try:
        with pytest.raises(DecodeError, match="max_value_size") as info:
            Codec().decode(envelope(body, flags=1))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.value.corrupt
    assert peak < 1 << 20


def test_an_lz4_block_that_does_not_decompress_is_corrupt() -> None:
    for body in (struct.pack(">I", 100) + b"\xff" * 10, struct.pack(">I", 3) + b"\x40abcd", b"\0"):
        with pytest.raises(DecodeError) as info:
            Codec().decode(envelope(body, flags=1))
        assert info.value.corrupt, body


def test_signatures_are_checked_and_required() -> None:
    signed = Codec(CodecOptions(signing_key=b"k1"))
    data = signed.encode("v", **META)
    assert "v" == signed.decode(data).value
    with pytest.raises(DecodeError, match="signature mismatch") as info:
        Codec(CodecOptions(signing_key=b"k2")).decode(data)
    assert info.value.corrupt
    with pytest.raises(DecodeError, match="not signed") as info:
        signed.decode(Codec().encode("v", **META))
    assert info.value.corrupt
    with pytest.raises(DecodeError, match="no signing key") as info:
        Codec().decode(data)
    assert info.value.corrupt


def test_a_forged_expiry_breaks_the_signature() -> None:
    signed = Codec(CodecOptions(signing_key=b"k1"))
    data = bytearray(signed.encode("v", **META))
    data[20:28] = struct.pack(">Q", 2**50)
    data[4:12] = struct.pack(">Q", xxhash.xxh3_64_intdigest(bytes(data[12:])))
    with pytest.raises(DecodeError, match="signature") as info:
        signed.decode(bytes(data))
    assert info.value.corrupt


def test_the_signing_key_never_shows_in_repr() -> None:
    assert "s3cr3t" not in repr(Codec(CodecOptions(signing_key=b"s3cr3t")))
    assert "signed=True" in repr(Codec(CodecOptions(signing_key=b"s3cr3t")))
    assert "signed=False" in repr(Codec())


def test_a_planted_pickle_is_refused_and_never_executed(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self) -> tuple[Any, ...]:
            return (open, (str(marker), "w"))

    payload = pickle.dumps(Exploit())
    for data in (
        payload,
        b"\xa7M\x01\x00" + payload,
        Codec().encode(payload, **META)[:HEADER_SIZE] + payload,
        envelope(payload),
    ):
        with pytest.raises(DecodeError):
            Codec().decode(data)
    # Stored as bytes, a pickle is only ever bytes.
    assert payload == Codec().decode(Codec().encode(payload, **META)).value
    assert not marker.exists()


def test_no_module_of_memo_imports_an_object_deserializer() -> None:
    pattern = re.compile(
        r"^\s*(import|from)\s+(pickle|cPickle|_pickle|marshal|dill|cloudpickle|shelve)\b"
        r"|__import__\(\s*['\"](pickle|marshal|dill|cloudpickle)",
        re.MULTILINE,
    )
    sources = sorted(MEMO_SOURCE.rglob("*.py"))
    assert sources
    offenders = [str(path) for path in sources if pattern.search(path.read_text("utf-8"))]
    assert [] == offenders


class Colour(enum.IntEnum):
    RED = 1


class Label(str):
    pass


Pair = collections.namedtuple("Pair", "a b")


@pytest.mark.parametrize(
    "value",
    [Colour.RED, Label("x"), collections.OrderedDict(a=1), Pair(1, 2), object()],
)
def test_an_unregistered_type_names_itself_and_the_ways_out(value: Any) -> None:
    name = type(value).__qualname__
    with pytest.raises(EncodeError, match=rf"{name}.*dict.*memo\.register_type\({name}\)"):
        Codec().encode({"x": [value]}, **META)


def test_a_failing_registered_encoder_is_an_encode_error() -> None:
    class Fragile:
        pass

    def explode(obj: Any) -> Any:
        raise RuntimeError("no")

    registry = TypeRegistry()
    registry.register(Fragile, name="tests.Fragile", encode=explode, decode=lambda s: Fragile())
    with pytest.raises(EncodeError, match=r"tests\.Fragile"):
        Codec(registry=registry).encode(Fragile(), **META)


def test_a_value_nested_too_deeply_is_an_encode_error() -> None:
    deep_tuple: Any = ()
    deep_list: Any = []
    for _ in range(5000):
        deep_tuple, deep_list = (deep_tuple,), [deep_list]
    for value in (deep_tuple, deep_list):
        with pytest.raises(EncodeError):
            Codec().encode(value, **META)


def test_error_messages_never_show_the_value() -> None:
    with pytest.raises(EncodeError) as unsupported:
        Codec().encode({"password": "hunter2", "x": object()}, **META)
    with pytest.raises(EncodeError) as oversize:
        Codec(CodecOptions(max_value_size=10)).encode("hunter2" * 5, **META)
    with pytest.raises(DecodeError) as malformed:
        Codec().decode(envelope(msgpack.packb("hunter2") + b"\xc1"))
    for info in (unsupported, oversize, malformed):
        assert "hunter2" not in str(info.value)


def test_a_value_over_max_value_size_says_its_size_the_limit_and_the_way_out() -> None:
    with pytest.raises(EncodeError, match=r"1002 bytes.*max_value_size=100.*raise max_value_size"):
        Codec(CodecOptions(max_value_size=100)).encode("x" * 999, **META)


@dataclasses.dataclass
class Plain:
    n: int


def test_register_type_works_as_a_call_and_as_a_decorator_and_returns_the_class() -> None:
    assert Plain is register_type(Plain, name="tests.Plain")  # again is fine: same class
    assert DEFAULT_REGISTRY.decoder(f"{__name__}.Point") is not None  # @register_type
    assert DEFAULT_REGISTRY.decoder("tests.Box") is not None  # @register_type(name=...)
    assert Plain(3) == Codec().decode(Codec().encode(Plain(3), **META)).value


def test_a_registered_dataclass_keeps_nested_registered_values() -> None:
    value = Box(
        content=[Point(1, 2.5, ("a",)), Box(content=(1, 2))], created=dt.datetime(2024, 1, 1)
    )
    out = Codec().decode(Codec().encode(value, **META)).value
    assert value == out
    assert tuple is type(out.content[0].tags)


def test_a_pydantic_like_model_registers_without_callables() -> None:
    value = [Model("a", 1), Model("b", 2)]
    assert value == Codec().decode(Codec().encode(value, **META)).value


def test_registering_a_class_without_callables_needs_them() -> None:
    class Plain:
        pass

    with pytest.raises(ConfigError, match="encode= and decode="):
        TypeRegistry().register(Plain)


def test_two_classes_cannot_share_a_registered_name() -> None:
    @dataclasses.dataclass
    class A:
        n: int

    @dataclasses.dataclass
    class B:
        n: int

    registry = TypeRegistry()
    registry.register(A, name="same")
    registry.register(A, name="same")  # the same class again is fine
    with pytest.raises(ConfigError, match="already registered"):
        registry.register(B, name="same")


def test_decode_value_reads_verified_bytes_and_refuses_foreign_ones() -> None:
    codec = Codec(CodecOptions(compression_threshold=0, signing_key=b"k"))
    data = codec.encode({"a": [1, 2]}, **META)
    assert {"a": [1, 2]} == codec.decode_value(data)
    with pytest.raises(DecodeError) as info:
        codec.decode_value(b"not memo at all")
    assert info.value.corrupt


def test_a_tz_aware_datetime_keeps_its_offset_and_a_zone_becomes_a_fixed_offset() -> None:
    tz = dt.timezone(dt.timedelta(hours=5, minutes=30, microseconds=7))
    aware = dt.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=tz)
    # The second 01:30 of the night New York leaves daylight saving time.
    zoned = dt.datetime(2024, 11, 3, 1, 30, fold=1, tzinfo=zoneinfo.ZoneInfo("America/New_York"))
    est = dt.timezone(dt.timedelta(hours=-5))
    out = Codec().decode(Codec().encode([aware, zoned], **META)).value
    assert [aware, dt.datetime(2024, 11, 3, 1, 30, fold=1, tzinfo=est)] == out
    assert [tz, est] == [v.tzinfo for v in out]


def test_uuid_and_decimal_keep_their_types_and_a_bytearray_comes_back_as_bytes() -> None:
    value = [uuid.UUID(int=7), Decimal("1.10"), Decimal("-NaN"), bytearray(b"ab"), b"cd"]
    out = Codec().decode(Codec().encode(value, **META)).value
    assert [uuid.UUID, Decimal, Decimal, bytes, bytes] == [type(v) for v in out]
    assert ["1.10", "-NaN"] == [str(v) for v in out[1:3]]
    assert [b"ab", b"cd"] == out[3:]


def test_one_codec_encodes_from_many_threads_at_once() -> None:
    codec = Codec(CodecOptions(compression_threshold=0))
    failures: list[Any] = []

    def work(n: int) -> None:
        for i in range(300):
            value = {"n": n, "i": i, "t": (n, (i, frozenset({n}))), "p": Point(n, 0.5, ("x",))}
            if codec.decode(codec.encode(value, **META)).value != value:
                failures.append((n, i))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [] == failures


def _mutate_everywhere(obj: Any) -> None:
    """Change every mutable container reachable from ``obj`` (what a careless caller does)."""
    if isinstance(obj, dict):
        for v in list(obj.values()):
            _mutate_everywhere(v)
        obj["__mutated__"] = True
    elif isinstance(obj, list):
        for v in obj:
            _mutate_everywhere(v)
        obj.append("__mutated__")
    elif isinstance(obj, set):
        obj.add("__mutated__")
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            _mutate_everywhere(getattr(obj, f.name))


@pytest.mark.slow
@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values)
def test_memory_hits_are_independent_copies_however_often_they_are_remembered(
    value: Any,
) -> None:
    codec = Codec()
    data = codec.encode(value, **META)
    for _ in range(3):
        out = codec.decode_local(data)
        assert same(value, out), (value, out)
        _mutate_everywhere(out)
    assert same(value, codec.decode_local(bytes(data)))  # equal bytes, another object


class CountingDecoder:
    """A codec's ``decode_value`` that counts its calls."""

    def __init__(self, codec: Codec) -> None:
        self.codec, self.calls = codec, 0

    def decode_value(self, data: bytes) -> Any:
        self.calls += 1
        return self.codec.decode_value(data)


def test_a_quickly_copied_value_is_decoded_twice_then_copied_at_every_hit() -> None:
    codec = Codec()
    decode = CountingDecoder(codec)
    values = DecodedValues(decode)
    flat = codec.encode({"id": 1, "tags": ("a",), "roles": ["admin"]}, **META)
    for _ in range(5):
        values.value(flat)
    assert 2 == decode.calls  # the first hit is only noted, the second remembers
    first, second = values.value(flat), values.value(flat)
    assert {"id": 1, "tags": ("a",), "roles": ["admin"]} == first == second
    assert first is not second and first["roles"] is not second["roles"]
    assert 2 == decode.calls


@pytest.mark.parametrize(
    "value",
    [
        {"id": 1, "roles": ["admin", "ops"]},  # one mutable field: a copier of its own
        {"id": 1, "meta": {"a": [1]}},
        {"roles": ["a"], "groups": {"g"}},  # two: the general copier
        [{"id": 1}, {"id": 2}],
    ],
    ids=["one-list", "one-dict", "two-fields", "list-of-records"],
)
def test_remembered_copies_share_nothing_mutable_with_each_other(value: Any) -> None:
    codec = Codec()
    values = DecodedValues(codec)
    data = codec.encode(value, **META)
    for _ in range(3):
        values.value(data)
    first, second = values.value(data), values.value(data)
    _mutate_everywhere(first)
    assert same(value, second) and same(value, values.value(data))


def test_a_value_nested_too_deeply_to_copy_quickly_is_decoded_at_every_hit() -> None:
    codec = Codec()
    decode = CountingDecoder(codec)
    values = DecodedValues(decode)
    nested = codec.encode({"a": [{"b": [1]}]}, **META)  # four levels
    outs = [values.value(nested) for _ in range(4)]
    assert 4 == decode.calls
    assert all({"a": [{"b": [1]}]} == out for out in outs)
    assert len({id(out) for out in outs}) == 4


def test_large_or_compressed_values_are_never_remembered() -> None:
    codec = Codec()
    decode = CountingDecoder(codec)
    values = DecodedValues(decode)
    compressed = codec.encode("x" * 10_000, **META)
    large = Codec(CodecOptions(compression_threshold=10**6)).encode(list(range(2000)), **META)
    assert 1 == compressed[3] & 1 and len(large) > REMEMBERED_MAX_BYTES
    for data in (compressed, large) * 3:
        assert codec.decode_value(data) == values.value(data)
    assert 6 == decode.calls


def test_a_stream_of_values_seen_once_does_not_push_out_a_remembered_one() -> None:
    codec = Codec()
    decode = CountingDecoder(codec)
    values = DecodedValues(decode)
    hot = codec.encode({"hot": True}, **META)
    values.value(hot)
    values.value(hot)
    for n in range(10_000):
        values.value(codec.encode({"n": n}, **META))
    calls = decode.calls
    assert {"hot": True} == values.value(hot)
    assert calls == decode.calls
