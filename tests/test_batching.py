"""The coalescing mechanism under the Redis backend's reads, writes and lease scripts.

In-process by nature (it batches the calls of one event loop), so driven here by a
fake ``send`` that records what it was asked and answers when the test lets it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from memo.backends._batching import Call, CallBatcher
from memo.backends._read_batch import ReadBatcher


class Server:
    """Records each round trip; every trip waits until the test releases them; with
    ``fail`` set, every trip after the first raises it."""

    def __init__(self) -> None:
        self.trips: list[list[str]] = []
        self.release = asyncio.Event()
        self.fail: BaseException | None = None

    async def _trip(self, keys: list[str]) -> None:
        self.trips.append(keys)
        trip = len(self.trips)
        await self.release.wait()
        if self.fail is not None and trip > 1:
            raise self.fail

    async def get_one(self, key: str) -> str:
        await self._trip([key])
        return f"v:{key}"

    async def get_many(self, keys: Sequence[str]) -> list[str]:
        await self._trip(list(keys))
        return [f"v:{key}" for key in keys]

    async def send(self, calls: list[Call]) -> list[str]:
        await self._trip([keys[0] for keys, _ in calls])
        return [f"r:{keys[0]}:{args[0]}" for keys, args in calls]


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)  # let scheduled callbacks run (no time passes)


async def test_a_lone_read_goes_alone_and_reads_behind_it_share_one_batch() -> None:
    server = Server()
    reads = ReadBatcher(server.get_one, server.get_many)
    first = asyncio.create_task(reads.get("a"))
    await settle()
    behind = [asyncio.create_task(reads.get(key)) for key in ["b", "c", "b", "a"]]
    await settle()
    server.release.set()
    assert await first == "v:a"
    assert [await task for task in behind] == ["v:b", "v:c", "v:b", "v:a"]
    # One GET, then one MGET of each distinct key once, in the order first asked.
    assert server.trips == [["a"], ["b", "c", "a"]]


async def test_a_failed_batch_fails_each_of_its_readers_and_the_next_read_goes_alone() -> None:
    server = Server()
    server.fail = ConnectionError("server gone")
    reads = ReadBatcher(server.get_one, server.get_many)
    first = asyncio.create_task(reads.get("a"))
    await settle()
    behind = [asyncio.create_task(reads.get(key)) for key in ["b", "c"]]
    await settle()
    server.release.set()
    assert await first == "v:a"
    for task in behind:
        with pytest.raises(ConnectionError, match="server gone"):
            await task
    server.fail = None
    assert await reads.get("d") == "v:d"
    assert server.trips[-1] == ["d"]


async def test_a_cancelled_reader_leaves_the_others_their_answer() -> None:
    server = Server()
    reads = ReadBatcher(server.get_one, server.get_many)
    first = asyncio.create_task(reads.get("a"))
    await settle()
    gone, stays = asyncio.create_task(reads.get("b")), asyncio.create_task(reads.get("b"))
    await settle()
    gone.cancel()
    server.release.set()
    assert await first == "v:a"
    assert await stays == "v:b"
    assert gone.cancelled()


async def test_calls_beyond_max_batch_go_as_several_round_trips_in_their_order() -> None:
    server = Server()
    batcher = CallBatcher(server.send, max_batch=2)
    first = asyncio.create_task(batcher.call(("k0",), (0,)))
    await settle()
    behind = [asyncio.create_task(batcher.call((f"k{i}",), (i,))) for i in range(1, 6)]
    await settle()
    server.release.set()
    assert await first == "r:k0:0"
    assert [await task for task in behind] == [f"r:k{i}:{i}" for i in range(1, 6)]
    assert server.trips == [["k0"], ["k1", "k2"], ["k3", "k4"], ["k5"]]


def test_each_event_loop_batches_its_own_calls() -> None:
    """Two event loops, one after the other, never share a batch or its futures."""
    server_of: dict[int, Server] = {}

    async def burst(n: int) -> list[str]:
        server = server_of[n] = Server()
        tasks = [asyncio.create_task(reads.get(f"{n}:{i}")) for i in range(3)]
        await settle()
        server.release.set()
        return [await task for task in tasks]

    reads = ReadBatcher(
        lambda key: server_of[int(key[0])].get_one(key),
        lambda keys: server_of[int(keys[0][0])].get_many(keys),
    )
    assert asyncio.run(burst(1)) == ["v:1:0", "v:1:1", "v:1:2"]
    assert asyncio.run(burst(2)) == ["v:2:0", "v:2:1", "v:2:2"]
    assert server_of[2].trips == [["2:0"], ["2:1", "2:2"]]
