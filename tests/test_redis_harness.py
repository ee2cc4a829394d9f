"""The harness itself: servers it starts really stop, pause and restart; skips are honest."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import textwrap
import traceback
from pathlib import Path
from typing import Any

import pytest
import redis

from memo.backends.redis import RedisBackend
from tests.redis_harness import RedisServer, TlsFiles, need_redis

ROOT = Path(__file__).resolve().parent.parent


def test_a_killed_server_is_gone_and_a_restarted_one_answers(redis_server: RedisServer) -> None:
    redis_server.client().set("k", "v")
    redis_server.kill()
    assert redis_server.proc is not None and redis_server.proc.poll() is not None
    redis_server.restart()
    assert redis_server.client().ping()
    assert 0 == redis_server.dbsize()  # nothing persists across a restart


class _Unreachable(RedisServer):
    """A server that runs but that no PING reaches (as when its certificate fails)."""

    START_SECONDS = 0.3

    def client(self) -> Any:
        raise redis.ConnectionError("unreachable by design")


@pytest.mark.parametrize("how", ["exits", "runs unreachable"])
def test_a_server_that_fails_to_start_leaves_no_process_and_no_open_file(
    tmp_path: Path, how: str
) -> None:
    if shutil.which("redis-server") is None:
        need_redis("redis-server not found: install redis-server (apt-get)")
    if how == "exits":
        server = RedisServer(tmp_path, tls=TlsFiles(*(tmp_path / f for f in "abcd")))
    else:
        server = _Unreachable(tmp_path)
    with pytest.raises(RuntimeError, match="did not start"):
        server.start()
    assert server.proc is not None and server.proc.poll() is not None
    assert server._log is None


def test_commandstats_count_what_the_server_ran(redis_server: RedisServer) -> None:
    before = redis_server.commandstats().get("set", 0)
    for i in range(3):
        redis_server.client().set(f"k{i}", i)
    assert before + 3 == redis_server.commandstats()["set"]


async def test_a_thousand_concurrent_reads_on_a_pool_of_ten_never_raise(
    redis_server: RedisServer,
) -> None:
    backend = RedisBackend.from_url(redis_server.url, max_connections=10, operation_timeout=5)
    await backend.set_many({f"memo:c:{i}": b"v" for i in range(1000)}, 60_000)
    results = await asyncio.gather(
        *(backend.get(f"memo:c:{i}") for i in range(1000)), return_exceptions=True
    )
    assert [b"v"] * 1000 == results
    await backend.aclose()


def _run_pytest(env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    test = tmp_path / "test_needs_redis.py"
    test.write_text(
        textwrap.dedent(
            """
            def test_uses_redis(redis_server):
                assert redis_server.client().ping()
            """
        )
    )
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "tests.redis_harness",
            str(test),
            "-o",
            "addopts=",
            "-W",
            "ignore",
            "--rootdir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
    )


def _env_without_redis_server(tmp_path: Path, **extra: str) -> dict[str, str]:
    # A PATH holding only this Python: no redis-server to be found.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("MEMO_REQUIRE_REDIS", "MEMO_TEST_REDIS_URL")
    }
    env["PATH"] = str(bin_dir)
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


def test_without_redis_server_redis_tests_skip_with_one_clear_reason(tmp_path: Path) -> None:
    out = _run_pytest(_env_without_redis_server(tmp_path), tmp_path)
    assert 0 == out.returncode, out.stdout + out.stderr
    assert "1 skipped" in out.stdout


def test_when_redis_is_required_a_missing_server_fails_the_run(tmp_path: Path) -> None:
    out = _run_pytest(_env_without_redis_server(tmp_path, MEMO_REQUIRE_REDIS="1"), tmp_path)
    assert 0 != out.returncode
    assert "MEMO_REQUIRE_REDIS=1 but redis-server not found" in out.stdout


async def _read_with_client(backend: RedisBackend, key: str) -> tuple[bytes | None, object]:
    return await backend.get(key), backend.client()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX-only")
def test_a_forked_child_makes_its_own_connections(redis_server: RedisServer) -> None:
    # A generous deadline: the child of a large test process, on a loaded machine, may
    # take a while to make its first connection; what is checked is which sockets it uses.
    backend = RedisBackend.from_url(redis_server.url, operation_timeout=5.0, connect_timeout=5.0)

    async def use() -> tuple[bytes | None, object]:
        await backend.set("memo:f:k", b"parent", 60_000)
        return await backend.get("memo:f:k"), backend.client()

    loop = asyncio.new_event_loop()
    try:
        got, parent_client = loop.run_until_complete(use())
        assert b"parent" == got
        parent_origin = backend.origin
        pid = os.fork()
        if pid == 0:  # the child: a new loop, and it must not reuse the parent's sockets
            try:
                child_loop = asyncio.new_event_loop()
                got, child_client = child_loop.run_until_complete(
                    _read_with_client(backend, "memo:f:k")
                )
                ok = (
                    got == b"parent"
                    and child_client is not parent_client
                    and backend.origin != parent_origin
                )
                if not ok:  # said on the test's captured stderr
                    print(
                        f"child read {got!r}; own client {child_client is not parent_client}; "
                        f"own origin {backend.origin != parent_origin}",
                        file=sys.stderr,
                    )
                os._exit(0 if ok else 1)
            except BaseException:
                traceback.print_exc()
                os._exit(2)
        _, status = os.waitpid(pid, 0)
        assert 0 == os.waitstatus_to_exitcode(status)
        assert b"parent" == loop.run_until_complete(backend.get("memo:f:k"))
        loop.run_until_complete(backend.aclose())
    finally:
        loop.close()
