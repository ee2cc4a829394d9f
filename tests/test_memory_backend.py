"""The memory tier: bounds that always hold, an eviction policy that keeps what is reused,
exact TTLs."""

from __future__ import annotations

import asyncio
import random

import pytest

from memo import ConfigError
from memo._options import MemoryOptions
from memo.backends import MemoryBackend
from memo.backends.memory import ENTRY_OVERHEAD
from memo.testing import FakeClock


class ReferenceStore:
    """What the tier must agree with, eviction aside: every value written, with its
    deadline. The tier may have dropped any entry, never kept a wrong or expired one."""

    def __init__(self, max_bytes: int, clock: FakeClock) -> None:
        self.max_bytes, self.clock = max_bytes, clock
        self.data: dict[str, tuple[bytes, float]] = {}

    def get(self, key: str) -> bytes | None:
        item = self.data.get(key)
        if item is None or self.clock() >= item[1]:
            return None
        return item[0]

    def set(self, key: str, value: bytes, ttl_ms: int) -> None:
        self.data.pop(key, None)
        if len(key) + len(value) + ENTRY_OVERHEAD <= self.max_bytes:
            self.data[key] = (value, self.clock() + ttl_ms / 1000)

    def delete(self, key: str) -> bool:
        return self.get(key) is not None and self.data.pop(key) is not None


def _accounted(tier: MemoryBackend) -> int:
    """The bytes the tier's own entries add up to."""
    entries = list(tier._data.items())
    return sum(len(k) + len(entry.value) + ENTRY_OVERHEAD for k, entry in entries)


async def test_bounds_hold_and_reads_never_disagree_with_what_was_written() -> None:
    """Over 100 000 random operations: within both bounds, exact byte accounting, and a
    read returns the last value written (unexpired, undeleted) or nothing."""
    clock = FakeClock()
    rng = random.Random(20261125)
    max_entries, max_bytes = 50, 4096
    real = MemoryBackend(
        MemoryOptions(memory_cache_size=max_entries, memory_max_bytes=max_bytes), clock=clock
    )
    model = ReferenceStore(max_bytes, clock)
    keys = [f"memo:p:{i}" for i in range(120)]
    hits = 0
    for step in range(100_000):
        op = rng.random()
        key = rng.choice(keys[: rng.choice([10, 120])])  # a hot set and a tail
        if op < 0.45:
            value = rng.randbytes(rng.choice([0, 1, 10, 100, 1000, 5000]))
            ttl_ms = rng.choice([1, 50, 1000, 60_000])
            await real.set(key, value, ttl_ms)
            model.set(key, value, ttl_ms)
        elif op < 0.85:
            got = await real.get(key)
            assert got is None or got == model.get(key), step
            hits += got is not None
        elif op < 0.95:
            removed = await real.delete(key)
            assert model.delete(key) >= removed, step
            assert await real.get(key) is None, step
        elif op < 0.999:
            clock.advance(rng.choice([0.001, 0.01, 0.5]))
        else:
            pattern = f"memo:p:{rng.randrange(10)}*"
            await real.delete_pattern(pattern)
            for k in [k for k in model.data if k.startswith(pattern[:-1])]:
                del model.data[k]
            assert [] == await real.scan_keys(pattern, 1000), step
        assert len(real) <= max_entries
        assert real.bytes_used <= max_bytes
        assert _accounted(real) == real.bytes_used, step
        assert len(real._policy) == len(real), step
    assert hits > 5_000  # the tier does hold things: the checks above were not vacuous


async def _fill(b: MemoryBackend, keys: list[str]) -> None:
    for key in keys:
        if b.get_local(key) is None:
            await b.set(key, key.encode(), 60_000)


async def test_a_one_off_scan_ten_times_the_tier_leaves_its_hot_keys_in_place() -> None:
    b = MemoryBackend(MemoryOptions(memory_cache_size=100), clock=FakeClock())
    hot = [f"hot:{i}" for i in range(50)]
    for _ in range(3):
        await _fill(b, hot)
    await _fill(b, [f"scan:{i}" for i in range(1000)])  # each read once, never again
    # Evicted keys are remembered approximately (by hash, in a filter), so a scan key
    # may pass for one seen before: all 50 stayed under 300 hash seeds; 48 is the promise.
    assert sum(b.get_local(key) is not None for key in hot) >= 48
    assert len(b) == 100


async def test_a_key_that_keeps_coming_back_earns_its_place() -> None:
    """Admission: a key evicted while new, then asked for again, is kept over the
    one-off keys that arrive around it."""
    b = MemoryBackend(MemoryOptions(memory_cache_size=100), clock=FakeClock())
    await _fill(b, ["back"])
    one_off = (f"once:{i}" for i in range(10_000))
    for _ in range(20):
        await _fill(b, [next(one_off) for _ in range(150)])
        await _fill(b, ["back"])
    await _fill(b, [next(one_off) for _ in range(150)])
    assert b.get_local("back") == b"back"


async def test_when_popularity_shifts_the_new_hot_keys_take_over() -> None:
    b = MemoryBackend(MemoryOptions(memory_cache_size=100), clock=FakeClock())
    old, new = [f"old:{i}" for i in range(80)], [f"new:{i}" for i in range(80)]
    for _ in range(20):
        await _fill(b, old)
    for _ in range(5):
        await _fill(b, new)
    assert sum(b.get_local(key) is not None for key in new) >= 75
    assert len(b) == 100


async def test_the_byte_bound_evicts_the_oldest_entries_none_of_them_hit() -> None:
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
    assert tier.bytes_used == _accounted(tier)
    assert len(tier._policy) == len(tier)


async def test_a_tier_bounded_by_bytes_sizes_its_eviction_to_what_it_holds() -> None:
    """Remembered evictions are made for the entries a tier holds when it first evicts,
    not for a capacity it never reaches (10**8 entries would be 4.8 GB of them)."""
    per_entry = len("k:000") + 100 + ENTRY_OVERHEAD
    b = MemoryBackend(
        MemoryOptions(memory_cache_size=10**8, memory_max_bytes=100 * per_entry),
        clock=FakeClock(),
    )
    hot = [f"h:{i:03}" for i in range(40)]
    for _ in range(3):
        for key in hot:
            if b.get_local(key) is None:
                await b.set(key, b"x" * 100, 60_000)
    for i in range(1000):  # one-off keys, each read once
        await b.set(f"k:{i:03}", b"x" * 100, 60_000)
    assert b._policy.capacity <= 100
    assert b.bytes_used <= 100 * per_entry
    assert sum(b.get_local(key) is not None for key in hot) >= 38


async def test_entries_removed_one_by_one_leave_the_queues_no_bigger_than_twice_the_live() -> None:
    tier = MemoryBackend(MemoryOptions(memory_cache_size=2_000), clock=FakeClock())
    for i in range(1_000):
        await tier.set(f"k{i}", b"v", 60_000)
    longest = 0
    for i in range(990):  # as a tracking tier drops what it hears, one key at a time
        tier.discard_local(f"k{i}")
        policy = tier._policy
        queued = len(policy.small) + len(policy.main)
        longest = max(longest, queued - 2 * len(policy))
    assert len(tier._policy) == len(tier) == 10
    assert longest <= 65  # dead entries never outnumber the live by more than the slack
    assert [f"k{i}" for i in range(990, 1_000)] == sorted(
        k for k in (f"k{i}" for i in range(1_000)) if tier.get_local(k) is not None
    )
