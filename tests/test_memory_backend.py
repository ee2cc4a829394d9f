"""The memory tier: bounds that always hold, exact LRU, exact TTLs."""

from __future__ import annotations

import asyncio
import random
from collections import OrderedDict

import pytest

from memo import ConfigError
from memo._options import MemoryOptions
from memo.backends import MemoryBackend
from memo.backends.memory import ENTRY_OVERHEAD
from memo.testing import FakeClock


class ReferenceLRU:
    """The simplest model of the tier's rules, to compare the real one against."""

    def __init__(self, max_entries: int, max_bytes: int, clock: FakeClock) -> None:
        self.max_entries, self.max_bytes, self.clock = max_entries, max_bytes, clock
        self.data: OrderedDict[str, tuple[bytes, float]] = OrderedDict()

    def size(self) -> int:
        return sum(len(k) + len(v) + ENTRY_OVERHEAD for k, (v, _) in self.data.items())

    def get(self, key: str) -> bytes | None:
        item = self.data.get(key)
        if item is None:
            return None
        if self.clock() >= item[1]:
            del self.data[key]
            return None
        self.data.move_to_end(key)
        return item[0]

    def set(self, key: str, value: bytes, ttl_ms: int) -> None:
        self.data.pop(key, None)
        if len(key) + len(value) + ENTRY_OVERHEAD > self.max_bytes:
            return
        self.data[key] = (value, self.clock() + ttl_ms / 1000)
        while len(self.data) > self.max_entries or self.size() > self.max_bytes:
            self.data.popitem(last=False)

    def delete(self, key: str) -> bool:
        item = self.data.pop(key, None)
        return item is not None and self.clock() < item[1]


async def test_bounds_hold_and_reads_match_a_reference_lru_over_100000_operations() -> None:
    clock = FakeClock()
    rng = random.Random(20261125)
    max_entries, max_bytes = 50, 4096
    real = MemoryBackend(
        MemoryOptions(memory_cache_size=max_entries, memory_max_bytes=max_bytes), clock=clock
    )
    model = ReferenceLRU(max_entries, max_bytes, clock)
    keys = [f"memo:p:{i}" for i in range(120)]

    for step in range(100_000):
        op = rng.random()
        key = rng.choice(keys)
        if op < 0.45:
            value = rng.randbytes(rng.choice([0, 1, 10, 100, 1000, 5000]))
            ttl_ms = rng.choice([1, 50, 1000, 60_000])
            await real.set(key, value, ttl_ms)
            model.set(key, value, ttl_ms)
        elif op < 0.85:
            assert model.get(key) == await real.get(key), step
        elif op < 0.95:
            assert model.delete(key) == await real.delete(key), step
        elif op < 0.999:
            clock.advance(rng.choice([0.001, 0.01, 0.5]))
        else:
            pattern = f"memo:p:{rng.randrange(10)}*"
            await real.delete_pattern(pattern)
            for k in [k for k in model.data if k.startswith(pattern[:-1])]:
                del model.data[k]
        assert len(real) <= max_entries
        assert real.bytes_used <= max_bytes
        assert model.size() == real.bytes_used, step


async def test_reading_refreshes_recency_so_the_least_recent_is_evicted() -> None:
    b = MemoryBackend(MemoryOptions(memory_cache_size=2), clock=FakeClock())
    await b.set("a", b"1", 60_000)
    await b.set("b", b"2", 60_000)
    await b.get("a")
    await b.set("c", b"3", 60_000)
    assert await b.get_many(["a", "b", "c"]) == [b"1", None, b"3"]


async def test_the_byte_bound_evicts_the_oldest_entries() -> None:
    per_entry = 1 + 100 + ENTRY_OVERHEAD
    b = MemoryBackend(
        MemoryOptions(memory_cache_size=100, memory_max_bytes=per_entry * 3), clock=FakeClock()
    )
    for key in "abcd":
        await b.set(key, b"x" * 100, 60_000)
    assert await b.get_many(list("abcd")) == [None, b"x" * 100, b"x" * 100, b"x" * 100]
    assert per_entry * 3 == b.bytes_used


async def test_a_value_larger_than_the_tier_is_not_stored_and_drops_the_old_one() -> None:
    b = MemoryBackend(MemoryOptions(memory_max_bytes=500), clock=FakeClock())
    await b.set("k", b"small", 60_000)
    await b.set("k", b"x" * 1000, 60_000)
    assert await b.get("k") is None
    assert b.bytes_used == 0


async def test_max_ttl_caps_every_entry() -> None:
    clock = FakeClock()
    b = MemoryBackend(MemoryOptions(memory_max_ttl=1), clock=clock)
    await b.set("k", b"v", 60_000)
    assert await b.ttl("k") == 1_000
    clock.advance(1)
    assert await b.get("k") is None


async def test_get_local_agrees_with_get() -> None:
    clock = FakeClock()
    b = MemoryBackend(clock=clock)
    await b.set("k", b"v", 1_000)
    assert b.get_local("k") == await b.get("k") == b"v"
    clock.advance(1)
    assert b.get_local("k") is None


async def test_utilization_is_the_fuller_of_entries_and_bytes() -> None:
    b = MemoryBackend(
        MemoryOptions(memory_cache_size=4, memory_max_bytes=10_000), clock=FakeClock()
    )
    await b.set("k", b"v", 1_000)
    assert b.utilization() == 0.25
    await b.set("big", b"x" * 7000, 1_000)
    assert b.bytes_used / 10_000 == b.utilization()


@pytest.mark.parametrize(
    ("arg", "value"),
    [
        ("memory_cache_size", 0),
        ("memory_max_bytes", -1),
        ("memory_max_ttl", 0),
        ("memory_cache_size", True),
        ("memory_max_bytes", 1.5),
    ],
)
def test_bad_bounds_are_refused_with_the_argument_named(arg: str, value: object) -> None:
    with pytest.raises(ConfigError, match=f"^{arg}="):
        MemoryOptions(**{arg: value})  # type: ignore[arg-type]


def test_repr_shows_fill_levels() -> None:
    assert "entries=0/10" in repr(MemoryBackend(MemoryOptions(memory_cache_size=10)))


def test_threads_sharing_a_tier_never_raise_and_keep_its_accounting_exact() -> None:
    """Event loops in several threads may share a preset cache's memory tier."""
    import sys
    import threading

    from memo.backends.memory import ENTRY_OVERHEAD

    tier = MemoryBackend(MemoryOptions(memory_cache_size=50, memory_max_bytes=20_000))
    errors: list[BaseException] = []

    def hammer(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(20_000):
                key, roll = f"memo:t:{rng.randrange(80)}", rng.random()
                if roll < 0.5:
                    tier.get_local(key)
                elif roll < 0.9:
                    tier.set_local(key, b"x" * rng.randrange(10, 400), 60_000)
                elif roll < 0.95:
                    tier.discard_local(key)
                elif roll < 0.98:
                    asyncio.run(tier.scan_keys("memo:t:1*", 10))
                else:
                    asyncio.run(tier.delete_pattern("memo:t:7*"))
        except BaseException as exc:  # collected for the assertion below
            errors.append(exc)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    try:
        threads = [threading.Thread(target=hammer, args=(seed,)) for seed in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert [] == errors
    assert len(tier) <= 50
    entries = list(tier._data.items())
    assert tier.bytes_used == sum(len(k) + len(v) + ENTRY_OVERHEAD for k, (v, _) in entries)
