"""Fleet-wide figures: every process on one Redis writes its counters there; ``memo
stats`` shows one row per process and the fleet's totals; a silent process is marked
gone after three intervals, then dropped; a process that closes its cache leaves."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from memo._fleet import DROP_AFTER, GONE_AFTER, read_fleet
from memo._reporting import fleet_key
from tests.redis_harness import RedisServer

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
INTERVAL = 0.2

CHILD = textwrap.dedent(
    """
    import asyncio, json, sys
    import redis.asyncio as aioredis
    from memo import GenericRedisCache, cached

    url, n, calls = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])

    async def main():
        cache = GenericRedisCache(url, stats_interval=float(sys.argv[4]))

        @cached(ttl=60, cache=cache, namespace="fleet")
        async def square(x):
            return x * x

        for i in range(calls):  # 5 distinct keys: misses first, then hits
            await square(i % 5)
        await cache.publish_stats()
        stats = await cache.get_cache_stats()
        print(json.dumps({k: stats[k] for k in ("hits", "misses", "errors", "sets")}), flush=True)
        client = aioredis.Redis.from_url(url)
        await client.blpop([f"test:exit:{n}"], timeout=120)  # publishing goes on meanwhile
        await client.aclose()
        await cache.aclose()

    asyncio.run(main())
    """
)


def stats_cli(url: str) -> dict[str, Any]:
    shown = subprocess.run(
        [sys.executable, "-m", "memo", "--json", "stats", "--redis-url", url],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shown.returncode == 0, shown.stderr
    return json.loads(shown.stdout)  # type: ignore[no-any-return]


def test_three_processes_show_as_three_rows_and_a_killed_one_is_marked_gone(
    redis_server: RedisServer,
) -> None:
    url = redis_server.url
    calls = (10, 20, 40)
    kids = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, url, str(n), str(c), str(INTERVAL)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n, c in enumerate(calls)
    ]
    try:
        own = {}
        for kid in kids:
            assert kid.stdout is not None
            line = kid.stdout.readline()
            assert line, kid.stderr.read() if kid.stderr else "no report"
            own[kid.pid] = json.loads(line)
        document = stats_cli(url)
        rows = {row["pid"]: row for row in document["fleet"]["processes"]}
        assert set(rows) == set(own)
        for pid, counters in own.items():
            assert {k: rows[pid]["stats"][k] for k in counters} == counters
            assert rows[pid]["gone"] is False
            function = rows[pid]["functions"][0]
            assert function["namespace"] == "fleet" and function["hits"] == counters["hits"]
        totals = document["fleet"]["totals"]
        for name in ("hits", "misses", "errors", "sets"):
            assert totals[name] == sum(c[name] for c in own.values()) == document[name]
        assert document["counters_of"] == "fleet"

        killed = kids[0]
        os.kill(killed.pid, signal.SIGKILL)
        killed.wait(30)
        deadline = time.monotonic() + 60
        while True:  # the reader marks it once its record is 3 intervals old
            rows = {r["pid"]: r for r in stats_cli(url)["fleet"]["processes"]}
            if rows[killed.pid]["gone"]:
                break
            assert time.monotonic() < deadline, "the killed process was never marked gone"
        assert [rows[k.pid]["gone"] for k in kids[1:]] == [False, False]
        assert rows[killed.pid]["age"] > GONE_AFTER * INTERVAL

        client = redis.Redis.from_url(url)
        client.rpush("test:exit:1", 1)  # a clean exit takes its row out at once
        assert kids[1].wait(60) == 0
        assert kids[1].pid not in {r["pid"] for r in stats_cli(url)["fleet"]["processes"]}
    finally:
        for kid in kids:
            if kid.poll() is None:
                kid.kill()
            kid.wait(10)
            for stream in (kid.stdout, kid.stderr):
                if stream is not None:
                    stream.close()


class Hashes:
    """A HashStore in a dict (read_fleet's logic, without a server)."""

    def __init__(self, fields: dict[str, bytes]) -> None:
        self.fields = fields

    async def server_time(self) -> float:
        raise AssertionError("the test gives read_fleet its clock")

    async def read_fields(self, key: str) -> dict[str, bytes]:
        return dict(self.fields)

    async def drop_fields(self, key: str, fields: Any) -> None:
        for field in fields:
            self.fields.pop(field, None)


def record(at: float, hits: int, **fields: Any) -> bytes:
    body = {"at": at, "pid": hits, "interval": 1.0, "stats": {"hits": hits, "misses": 1}}
    return json.dumps(body | fields).encode()


async def test_a_record_is_gone_after_three_intervals_and_dropped_after_ten() -> None:
    now = 1000.0
    hashes = Hashes(
        {
            "fresh": record(now - GONE_AFTER + 0.1, 1),
            "silent": record(now - GONE_AFTER - 0.1, 2),
            "old": record(now - DROP_AFTER - 0.1, 4),
            "junk": b"not json",
            "no stats": record(now, 8, stats=[1]),
            "text count": record(now, 16, stats={"hits": "many"}),
            "endless count": b'{"at": 999.5, "pid": 1, "stats": {"hits": 1e400}}',
            "nan clock": b'{"at": NaN, "pid": 1, "stats": {}}',
            "odd keys": record(now, 32, hot_keys=[["k"]]),
            "odd pid": record(now, 64, pid="12"),
        }
    )
    fleet = await read_fleet(hashes, "memo:default:", now=now)  # type: ignore[arg-type]
    assert [r["gone"] for r in fleet["processes"]] == [False, True]
    assert sorted(hashes.fields) == ["fresh", "silent"]  # the old and the junk dropped
    assert (fleet["gone"], fleet["totals"]["hits"], fleet["totals"]["misses"]) == (1, 3, 2)


def test_the_fleet_hash_sits_beside_the_prefix_out_of_reach_of_its_patterns() -> None:
    assert fleet_key("memo:shop:") == "memo:shop#fleet"
    assert not fleet_key("memo:shop:").startswith("memo:shop:")


def _read_until(fd: int, done: Any, deadline: float) -> bytes:
    """What the pseudo-terminal shows, until ``done(output)`` or the child closes it."""
    import select

    out = b""
    while not done(out):
        assert time.monotonic() < deadline, f"gave up waiting; the screen showed:\n{out[-2000:]!r}"
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
    return out


def _top_in_a_terminal(url: str, *extra: str) -> tuple[int, int]:
    """Start ``memo top`` in a pseudo-terminal 160 columns wide; (pid, master fd)."""
    import fcntl
    import pty
    import struct
    import termios

    pid, fd = pty.fork()
    if pid == 0:  # the child: the terminal is its controlling terminal
        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
        os.environ.update(COLUMNS="160", TERM="xterm-256color")
        os.chdir(ROOT)
        os.execv(
            sys.executable,
            [sys.executable, "-m", "memo", "top", "--interval", "0.2", "--redis-url", url, *extra],
        )
    return pid, fd


def test_memo_top_draws_the_fleet_in_a_terminal_and_ctrl_c_ends_it(
    redis_server: RedisServer,
) -> None:
    url = redis_server.url
    kid = subprocess.Popen(
        [sys.executable, "-c", CHILD, url, "0", "30", str(INTERVAL)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert kid.stdout is not None
        counters = json.loads(kid.stdout.readline())
        pid, fd = _top_in_a_terminal(url, "--iterations", "3")
        raw = _read_until(fd, lambda out: False, time.monotonic() + 60).decode(errors="replace")
        screen = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", raw)  # colours and cursor moves
        _, status = os.waitpid(pid, 0)
        os.close(fd)
        assert os.waitstatus_to_exitcode(status) == 0
        assert "hit ratio" in screen and "processes 1" in screen
        ratio = counters["hits"] / (counters["hits"] + counters["misses"])
        assert f"{ratio:.1%}" in screen
        row = re.search(r"│ fleet +│ __main__\.main\.<locals>\.square +│ +(\d+) │ +(\d+) │", screen)
        assert row is not None, screen  # one row per decorated function, with its counts
        assert (int(row[1]), int(row[2])) == (counters["hits"], counters["misses"])

        pid, fd = _top_in_a_terminal(url)
        _read_until(fd, lambda out: b"hottest keys" in out, time.monotonic() + 60)
        os.write(fd, b"\x03")  # Ctrl-C, through the terminal's line discipline
        _read_until(fd, lambda out: False, time.monotonic() + 60)
        _, status = os.waitpid(pid, 0)
        os.close(fd)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        redis.Redis.from_url(url).rpush("test:exit:0", 1)
        kid.wait(60)
        for stream in (kid.stdout, kid.stderr):
            if stream is not None:
                stream.close()


def _publishers(loop: Any) -> int:
    import asyncio

    return sum("_publish_forever" in repr(task.get_coro()) for task in asyncio.all_tasks(loop))


def test_one_cache_used_from_two_loops_has_one_publisher(redis_server: RedisServer) -> None:
    """Each loop's slow path asks for the publisher; only the first starts one."""
    import asyncio
    import threading

    from memo import GenericRedisCache

    cache = GenericRedisCache(redis_server.url, stats_interval=INTERVAL)
    other = asyncio.new_event_loop()
    thread = threading.Thread(target=other.run_forever, daemon=True)
    thread.start()
    try:
        for i in range(5):
            asyncio.run_coroutine_threadsafe(cache.get(f"k{i}"), other).result(30)

        async def here() -> int:
            for i in range(5):
                await cache.get(f"k{i}")
            found = _publishers(asyncio.get_running_loop())
            await cache.redis.release_loop()  # this loop ends here; the cache lives on
            return found

        assert asyncio.run(here()) == 0  # the other loop's publisher serves
        assert asyncio.run_coroutine_threadsafe(_count_here(), other).result(30) == 1
        asyncio.run_coroutine_threadsafe(cache.aclose(), other).result(30)
    finally:
        other.call_soon_threadsafe(other.stop)
        thread.join(30)
        other.close()


async def _count_here() -> int:
    import asyncio

    return _publishers(asyncio.get_running_loop())


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX-only")
def test_a_forked_child_publishes_a_row_of_its_own_counting_from_the_fork(
    redis_server: RedisServer,
) -> None:
    import asyncio
    import traceback

    from memo import GenericRedisCache, cached

    # No memory tier, so no tracking connection: what is checked is the fleet row.
    cache = GenericRedisCache(
        redis_server.url, stats_interval=60, enable_memory_cache=False, invalidation_channel=False
    )

    @cached(ttl=60, cache=cache)
    async def double(x: int) -> int:
        return 2 * x

    async def calls(n: int) -> None:
        for i in range(n):
            await double(i + 100 * os.getpid())
        assert await cache.publish_stats()

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(calls(3))
        pid = os.fork()
        if pid == 0:
            try:
                asyncio.new_event_loop().run_until_complete(calls(5))
                os._exit(0)
            except BaseException:
                traceback.print_exc()
                os._exit(2)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        document = stats_cli(redis_server.url)
        rows = {r["pid"]: r["stats"]["misses"] for r in document["fleet"]["processes"]}
        assert rows == {os.getpid(): 3, pid: 5}
        loop.run_until_complete(cache.aclose())
    finally:
        loop.close()


def test_memo_top_shows_names_and_keys_as_text_never_as_markup() -> None:
    from rich.console import Console

    from memo._top import _render

    row = {
        "stats": {"hits": 1, "misses": 1},
        "functions": [{"namespace": "[red]", "function": "m.f[/q]", "hits": 1}],
        "hot_keys": [["search[/q]", 16]],
    }
    console = Console(record=True, width=160)
    console.print(_render([row], None, "memo:[b]"))
    screen = console.export_text()
    assert "search[/q]" in screen and "m.f[/q]" in screen and "[red]" in screen


def test_asyncio_run_ending_with_the_cache_open_is_not_held_by_the_publisher(
    redis_server: RedisServer,
) -> None:
    """Each run's first write starts the publisher, which is writing its record when
    asyncio.run cancels it; a Redis call may swallow that cancellation, and the
    publisher must end anyway (it used to go on forever, and the run with it)."""
    code = textwrap.dedent(
        """
        import asyncio, sys
        from memo import GenericRedisCache

        cache = GenericRedisCache(sys.argv[1], stats_interval=0.05)
        for i in range(20):
            asyncio.run(cache.set(f"k{i}", i))
        print("done")
        """
    )
    ran = subprocess.run(
        [sys.executable, "-c", code, redis_server.url],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (ran.returncode, ran.stdout.strip()) == (0, "done"), ran.stderr[-2000:]
