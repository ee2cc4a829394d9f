"""A listening process for redis_writes.py: one memo cache with a memory tier, and beside
it a bare ``asyncio.Protocol`` reader that does nothing with what it hears but count it.

The parent drives it over a pipe. Between "start" and "stop" the process does nothing
but hear Redis, so the event-loop thread's CPU time over that window is what hearing
cost it. The pipe is read by a helper thread, whose CPU time is not counted.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's memo first


class BareReader(asyncio.Protocol):
    """A RESP3 connection with tracking on whose reader only counts push messages."""

    def __init__(self) -> None:
        self.pushes = 0

    def data_received(self, data: bytes) -> None:
        self.pushes += data.count(b">2\r\n")


def serve(pipe: Connection, url: str, coherence: str, batch: float) -> None:
    asyncio.run(_serve(pipe, url, coherence, batch))


async def _serve(pipe: Connection, url: str, coherence: str, batch: float) -> None:
    from memo import GenericRedisCache
    from memo._redis_options import RedisURL

    where = RedisURL.parse(url)
    cache = GenericRedisCache(
        url, namespace="bench_held", coherence=coherence, invalidation_batch=batch
    )
    assert await cache.connect()
    listener = cache.backend.listener  # type: ignore[attr-defined]
    loop = asyncio.get_running_loop()
    transport, bare = await loop.create_connection(BareReader, where.host, where.port)
    transport.write(
        b"*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n*3\r\n$6\r\nCLIENT\r\n$8\r\nTRACKING\r\n$2\r\nON\r\n"
    )
    started: tuple[float, int, int] = (0.0, 0, 0)
    while True:
        command, arg = await loop.run_in_executor(None, pipe.recv)
        if command == "hold":  # the memory tier reads (and so holds) these keys
            for key in arg:
                await cache.get(key)
            reply: Any = sum(
                cache.backend.memory.get_local(cache.prefix + k) is not None for k in arg
            )  # type: ignore[attr-defined]
        elif command == "hold_bare":  # the bare reader reads them, so it is told of them
            transport.write(
                b"".join(b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(k), k.encode()) for k in arg)
            )
            await asyncio.sleep(0.05)
            reply = len(arg)
        elif command == "start":
            gc.collect()  # what the set-up left behind is not collected in the window
            started = (time.thread_time(), listener.heard, bare.pushes)
            reply = None
        elif command == "stop":
            cpu, heard, pushes = started
            reply = (time.thread_time() - cpu, listener.heard - heard, bare.pushes - pushes)
        else:
            break
        pipe.send(reply)
    transport.close()
    await cache.aclose()
