"""The tier in front of a remote: fill rules, and caching on through a remote outage."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest

from memo import BackendUnavailable
from memo._options import MemoryOptions
from memo.backends import MemoryBackend
from memo.backends._outage import EVERYTHING, OutageScopes
from memo.backends.base import Backend
from memo.backends.tiered import TieredBackend
from memo.testing import FakeClock


class SwitchableRemote(Backend):
    """A remote that can be made unreachable, wrapping a memory backend."""

    name = "switchable"

    def __init__(self, clock: FakeClock) -> None:
        self.inner = MemoryBackend(clock=clock)
        self.down = False
        self.calls = 0

    def _check(self) -> None:
        self.calls += 1
        if self.down:
            raise BackendUnavailable("remote unreachable")

    async def get(self, key: str) -> bytes | None:
        self._check()
        return await self.inner.get(key)

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        self._check()
        return await self.inner.get_many(keys)

    async def set(self, key: str, value: bytes, ttl_ms: int) -> None:
        self._check()
        await self.inner.set(key, value, ttl_ms)

    async def set_many(self, items: Mapping[str, bytes], ttl_ms: int) -> None:
        self._check()
        await self.inner.set_many(items, ttl_ms)

    async def delete(self, key: str) -> bool:
        self._check()
        return await self.inner.delete(key)

    async def delete_pattern(self, pattern: str) -> int:
        self._check()
        return await self.inner.delete_pattern(pattern)

    async def scan_keys(self, pattern: str, limit: int) -> list[str]:
        self._check()
        return await self.inner.scan_keys(pattern, limit)

    async def clear(self) -> None:
        self._check()
        await self.inner.clear()

    async def ttl(self, key: str) -> int | None:
        self._check()
        return await self.inner.ttl(key)


@pytest.fixture
def remote(clock: FakeClock) -> SwitchableRemote:
    return SwitchableRemote(clock)


def tiered(clock: FakeClock, remote: Backend, **kw: object) -> TieredBackend:
    memory = MemoryBackend(MemoryOptions(memory_max_ttl=60), clock=clock)
    return TieredBackend(memory, remote, **kw)  # type: ignore[arg-type]


async def test_a_remote_hit_fills_memory_for_no_longer_than_the_remote_entry_lives(
    clock: FakeClock, remote: SwitchableRemote
) -> None:
    b = tiered(clock, remote)
    await remote.inner.set("k", b"v", 5_000)
    clock.advance(2)
    assert b"v" == await b.get("k")
    assert b"v" == b.memory.get_local("k")
    clock.advance(3)  # the remote entry is gone now; the copy must be too
    assert b.memory.get_local("k") is None
    assert await b.get("k") is None


async def test_the_memory_copy_is_capped_by_the_tiers_max_ttl(
    clock: FakeClock, remote: SwitchableRemote
) -> None:
    b = tiered(clock, remote)
    await b.set("k", b"v", 3_600_000)
    assert 60_000 == await b.memory.ttl("k")
    assert 3_600_000 == await b.ttl("k")


async def test_writes_and_deletes_reach_both_tiers(
    clock: FakeClock, remote: SwitchableRemote
) -> None:
    b = tiered(clock, remote)
    await b.set("k", b"v", 10_000)
    assert (b"v", b"v") == (b.memory.get_local("k"), await remote.inner.get("k"))
    assert await b.delete("k") is True
    assert (None, None) == (b.memory.get_local("k"), await remote.inner.get("k"))


async def test_while_the_remote_is_down_memory_serves_alone_and_is_flushed_on_return(
    clock: FakeClock, remote: SwitchableRemote
) -> None:
    b = tiered(clock, remote, memory_reads=False)
    await b.set("k", b"before", 10_000)
    assert b.get_local("k") is None  # memory is an outage tier only while the remote answers

    remote.down = True
    with pytest.raises(BackendUnavailable):
        await b.set("k", b"during", 10_000)
    assert b"during" == b.get_local("k")
    assert b"during" == await b.get("k")

    remote.down = False
    await remote.inner.set("k", b"written elsewhere", 10_000)
    assert b"written elsewhere" == await b.get("k")
    assert b.get_local("k") is None
    assert 0 == len(b.memory)


async def test_a_delete_during_an_outage_reports_failure_but_clears_memory(
    clock: FakeClock, remote: SwitchableRemote
) -> None:
    b = tiered(clock, remote)
    await b.set("k", b"v", 10_000)
    remote.down = True
    with pytest.raises(BackendUnavailable):
        await b.delete("k")
    assert b.memory.get_local("k") is None


class Parts(MemoryBackend):
    """A remote in parts: keys "a:..." answered by node a, "b:..." by node b (node c
    has left); the parts named in ``out`` fail with their scope."""

    fails_in_parts = True
    out: tuple[str, ...] = ()

    async def get(self, key: str) -> bytes | None:
        scope = self.outage_scope(key)
        if scope in self.out:
            raise down(scope)
        return await super().get(key)

    def outage_scope(self, key: str) -> str:
        return key.split(":")[0]

    def serves(self, scope: str) -> bool:
        return scope in ("a", "b")


def down(scope: str) -> BackendUnavailable:
    error = BackendUnavailable("gone")
    error.scope = scope
    return error


def test_outage_scopes_drop_only_the_part_that_comes_back() -> None:
    outage = OutageScopes(Parts(MemoryOptions(memory_cache_size=10)))
    outage.failed(down("a"))
    assert outage.answered("b:1") is None  # another node answering changes nothing
    assert outage.answered(None) is None  # nor does a command of no key in particular
    assert outage.answered("a:1") == "a" and outage.down == set()
    outage.failed(down("c"))
    assert outage.answered("a:1") == EVERYTHING and outage.down == set()  # c left: its keys moved
    outage.failed(None)  # the whole remote
    outage.failed(down("a"))
    assert outage.answered("b:1") == EVERYTHING and outage.down == set()


async def test_with_one_part_out_only_its_keys_are_answered_and_kept_in_memory() -> None:
    remote = Parts(MemoryOptions(memory_cache_size=10))
    tier = TieredBackend(MemoryBackend(MemoryOptions(memory_cache_size=10)), remote)
    for key in ("a:1", "b:1"):
        await tier.set(key, key.encode(), 60_000)
    remote.out = ("a",)
    tier.mark_remote_down(down("a"))
    await remote.set("b:1", b"b:1 from redis", 60_000)  # written by another process
    # A multi-get: the part that is out answers from memory, the other from the remote
    # (asked first while a part is out, though memory holds an older copy).
    assert await tier.get_many(["a:1", "b:1"]) == [b"a:1", b"b:1 from redis"]
    assert tier.remote_down
    # A value nobody could store is kept for the part that is out only.
    tier.keep_local_copy("a:2", b"computed", 60_000)
    tier.keep_local_copy("b:2", b"computed", 60_000)
    assert tier.memory.get_local("a:2") == b"computed"
    assert tier.memory.get_local("b:2") is None  # b answers: a copy would go stale
