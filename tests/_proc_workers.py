"""What the child processes of ``tests/test_many_processes.py`` run.

A child is started from the repository root as::

    python -c "from tests._proc_workers import main; main()" ROLE PARAMS_JSON

so that the cached functions below have the same module and qualified name, hence the
same keys, in every process (``python -m`` would name the module ``__main__``). A child
synchronises with the test and its siblings through Redis keys under ``test:`` (outside
every cache's prefix), bounds each wait by ``DEADLINE`` seconds, and prints one JSON
object, its report, as the last line of stdout. An exception exits non-zero with the
traceback on stderr.

The functions are plain module-level coroutines; each role decorates them with the cache
it builds, as ``cached(...)(func)``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import redis
import redis.asyncio as aioredis

import memo
from memo import MISSING, GenericRedisCache, cached

#: Seconds any one wait of a child may last before it gives up with a message.
DEADLINE = 30.0

#: The counter every computation increments (outside memo's prefix).
RUNS = "test:runs"

_params: dict[str, Any] = {}
_clients: dict[str, aioredis.Redis] = {}
_handshaken: set[int] = set()
_computed = {"count": 0}


def _first_node(url: str) -> str | None:
    """``redis://host:port`` of a cluster URL's first node; None for other URLs."""
    if not url.startswith("redis+cluster://"):
        return None
    return "redis://" + url.removeprefix("redis+cluster://").split(",")[0].split("/")[0]


def use_redis(url: str) -> aioredis.Redis:
    """Set the asyncio client the functions below use (one per event loop): a cluster
    client where ``url`` names a cluster."""
    node = _first_node(url)
    client: Any = aioredis.RedisCluster.from_url(node) if node else aioredis.Redis.from_url(url)
    _clients["redis"] = client
    return client  # type: ignore[no-any-return]


def sync_redis(url: str) -> Any:
    node = _first_node(url)
    return redis.RedisCluster.from_url(node) if node else redis.Redis.from_url(url)


async def drop_redis() -> None:
    client = _clients.pop("redis", None)
    if client is not None:
        await client.aclose()


def _redis() -> aioredis.Redis:
    return _clients["redis"]


async def wait_token(key: str, what: str, timeout: float = DEADLINE) -> bytes:
    """Pop one token from list ``key`` (a barrier the test opens by pushing tokens)."""
    got = await _redis().blpop([key], timeout=timeout)
    if got is None:
        raise TimeoutError(f"no token on {key} within {timeout} s: {what}")
    return bytes(got[1])


async def wait_count(key: str, at_least: int, what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while int(await _redis().get(key) or 0) < at_least:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{key} did not reach {at_least} within {DEADLINE} s: {what}")
        await asyncio.sleep(0.005)


def _plain(value: Any) -> Any:
    return None if value is MISSING else value


def _outcomes(results: list[Any]) -> dict[str, list[str]]:
    values = [v for v in results if not isinstance(v, BaseException)]
    errors = [repr(e) for e in results if isinstance(e, BaseException)]
    return {"values": values, "errors": errors}


# ------------------------------------------------------------------ the cached functions


async def lease_value(item: str) -> str:
    """Counts its runs; the first run may hold on until the process is killed, the others
    wait until every process has launched its callers, so that the run is in flight
    while they arrive."""
    client = _redis()
    run = await client.incr(RUNS)
    if run == 1 and _params.get("hold_first"):
        await wait_token("test:never", "the holder was meant to be killed", timeout=120)
        raise AssertionError("the holder was not killed")
    expected = int(_params.get("entered", 0))
    if expected:
        await wait_count("test:entered", expected, "every process launching its callers")
        # Computation time: the other processes' callers reach the key meanwhile.
        await asyncio.sleep(0.3)
    return f"value-of-{item}"


def _burn(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


async def source_value(round_no: int) -> str:
    """Reads ``test:source:{round_no}`` (unset: "old"); on its first run for a round it
    tells the writer it has read, then holds until the writer has changed the source and
    invalidated the key, either blocking the event loop (``variant`` "cpu": a few ms of
    CPU, then a blocking wait, as a CPU-bound computation holds the loop) or awaiting."""
    client = _redis()
    source = await client.get(f"test:source:{round_no}")
    value = f"{(source or b'old').decode()}-{round_no}"
    if round_no in _handshaken:
        return value
    _handshaken.add(round_no)
    await client.rpush("test:read", round_no)
    if _params["variant"] == "cpu":
        _burn(0.003)
        got = _params["sync_redis"].blpop(["test:moved_on"], timeout=DEADLINE)
    else:
        got = await client.blpop(["test:moved_on"], timeout=DEADLINE)
    if got is None:
        raise TimeoutError(f"round {round_no}: the writer did not move on within {DEADLINE} s")
    return value


async def team_member(team: int, member: str) -> str:
    _computed["count"] += 1
    return f"{team}/{member}"


async def headline(topic: str) -> str:
    """The first run answers at once; a later one (a refresh) records whether it began
    before the test released it, then waits for the release."""
    client = _redis()
    run = await client.incr(RUNS)
    if run > 1:
        if not await client.exists("test:released"):
            await client.rpush("test:early_refreshes", run)
        await wait_token("test:release", "the test releasing the refresh")
    return f"{topic}-v{run}"


def lease_function(cache: GenericRedisCache, lock_wait: float) -> Any:
    return cached(ttl=60, cache=cache, lock=True, lock_wait=lock_wait)(lease_value)


def source_function(cache: GenericRedisCache) -> Any:
    return cached(ttl=60, cache=cache)(source_value)


def team_function(cache: GenericRedisCache) -> Any:
    return cached(ttl=60, cache=cache, tags=("team:{team}",))(team_member)


#: The stale-while-revalidate function's freshness, seconds.
SWR_TTL = 0.5


def headline_function(cache: GenericRedisCache) -> Any:
    return cached(ttl=SWR_TTL, stale_ttl=60, cache=cache)(headline)


# ------------------------------------------------------------------ roles


async def role_lease(p: dict[str, Any]) -> dict[str, Any]:
    """``callers`` concurrent calls of one cold key behind the ``test:go`` barrier."""
    cache = GenericRedisCache(p["url"])
    fn = lease_function(cache, p["lock_wait"])
    await cache.connect()
    client = _redis()
    await client.incr("test:ready")
    await wait_token("test:go", "the start signal")
    await client.incr("test:entered")
    try:
        results = await asyncio.wait_for(
            asyncio.gather(*(fn("k") for _ in range(p["callers"])), return_exceptions=True),
            DEADLINE,
        )
    finally:
        await cache.aclose()
    return _outcomes(results)


async def role_stale_reader(p: dict[str, Any]) -> dict[str, Any]:
    """Per round: compute the key while the writer invalidates it, then look at what the
    cache holds (from a second cache without a memory tier) and call again."""
    _params["sync_redis"] = sync_redis(p["url"])
    cache = GenericRedisCache(p["url"])
    checker = GenericRedisCache(p["url"], enable_memory_cache=False)
    fn = source_function(cache)
    check = source_function(checker)
    await cache.connect()
    await checker.connect()
    client = _redis()
    await client.incr("test:ready")
    await wait_token("test:go", "the start signal")
    rounds = []
    try:
        for i in range(p["rounds"]):
            first = await fn(i)
            stored = _plain(await check.peek(i))
            second = await fn(i)
            stored_after = _plain(await check.peek(i))
            await client.rpush("test:reader_done", i)
            rounds.append([i, first, stored, second, stored_after])
    finally:
        await cache.aclose()
        await checker.aclose()
    return {"rounds": rounds}


async def role_stale_writer(p: dict[str, Any]) -> dict[str, Any]:
    """Per round: once the reader has read the source, change it and invalidate the key;
    after the reader's round, peek through this process's own (tiered) cache."""
    cache = GenericRedisCache(p["url"])
    fn = source_function(cache)
    await cache.connect()
    client = _redis()
    await client.incr("test:ready")
    await wait_token("test:go", "the start signal")
    peeks = []
    try:
        for i in range(p["rounds"]):
            got = int(await wait_token("test:read", f"round {i}: the reader reading"))
            if got != i:
                raise AssertionError(f"round {i}: the reader read for round {got}")
            await client.set(f"test:source:{i}", "new")
            await fn.invalidate(i)
            await client.rpush("test:moved_on", i)
            await wait_token("test:reader_done", f"round {i}: the reader finishing")
            peeks.append([i, _plain(await fn.peek(i))])
    finally:
        await cache.aclose()
    return {"peeks": peeks}


async def role_tag_storer(p: dict[str, Any]) -> dict[str, Any]:
    """Store ``count`` entries tagged team:1, wait for the invalidation, call them all
    again and count how many computed."""
    cache = GenericRedisCache(p["url"])
    fn = team_function(cache)
    await cache.connect()
    client = _redis()
    members = [f"p{p['index']}-{j}" for j in range(p["count"])]
    await client.incr("test:ready")
    await wait_token("test:go", "the start signal")
    try:
        first = await _call_all(fn, members)
        computed_first = _computed["count"]
        await client.rpush("test:stored", p["index"])
        await wait_token("test:recheck", "the test announcing the invalidation")
        # The invalidation was announced before the token was pushed; one round trip
        # gives this loop a turn to read what arrived meanwhile on other connections.
        await client.ping()
        second = await _call_all(fn, members)
        computed_again = _computed["count"] - computed_first
    finally:
        await cache.aclose()
    return {
        "first": _outcomes(first),
        "second": _outcomes(second),
        "computed_first": computed_first,
        "computed_again": computed_again,
    }


async def _call_all(fn: Callable[..., Awaitable[Any]], members: list[str]) -> list[Any]:
    results: list[Any] = []
    for start in range(0, len(members), 50):
        chunk = members[start : start + 50]
        results += await asyncio.gather(*(fn(1, m) for m in chunk), return_exceptions=True)
    return results


async def role_tag_invalidator(p: dict[str, Any]) -> dict[str, Any]:
    """Count the stored entries, invalidate team:1, count again."""
    cache = GenericRedisCache(p["url"])
    await cache.connect()
    try:
        before = await cache.keys("*", limit=100_000)
        removed = await cache.invalidate_tags("team:1")
        after = await cache.keys("*", limit=100_000)
    finally:
        await cache.aclose()
    return {"before": len(before), "removed": removed, "after": len(after), "left": after[:5]}


async def role_swr_reader(p: dict[str, Any]) -> dict[str, Any]:
    """``callers`` concurrent reads of the stale key, then one read after the release."""
    cache = GenericRedisCache(p["url"])
    fn = headline_function(cache)
    await cache.connect()
    client = _redis()
    await client.incr("test:ready")
    await wait_token("test:go", "the start signal")
    try:
        started = time.monotonic()
        try:
            results = await asyncio.wait_for(
                asyncio.gather(*(fn("news") for _ in range(p["callers"])), return_exceptions=True),
                10,
            )
            blocked = False
        except asyncio.TimeoutError:
            results, blocked = [], True
        served_in = time.monotonic() - started
        stale = {**_outcomes(results), "blocked": blocked, "served_in": served_in}
        await client.rpush("test:served", json.dumps(stale))
        await wait_token("test:reread", "the test announcing the refreshed value")
        await client.ping()  # as in role_tag_storer: a turn for announcements to land
        reread = await fn("news")
    finally:
        await cache.aclose()
    return {**stale, "reread": reread}


async def role_coherent_reader(p: dict[str, Any]) -> dict[str, Any]:
    """Read ``keys`` over and over through a memory tier while others change them; once
    told the changes are over, how long until every key this tier serves is Redis's."""
    cache = GenericRedisCache(p["url"], namespace="soak")
    truth = GenericRedisCache(p["url"], namespace="soak", enable_memory_cache=False)
    await cache.connect()
    client = _redis()
    keys = [f"k{i}" for i in range(p["keys"])]
    await client.incr("test:ready")
    await wait_token("test:go", "the start signal")
    reads = 0
    try:
        while not await client.exists("test:done"):
            for key in keys:
                await cache.get(key)
                reads += 1
        started, stale = time.monotonic(), keys
        while stale and time.monotonic() - started < DEADLINE:
            stale = [key for key in keys if await cache.get(key) != await truth.get(key)]
            if stale:
                await asyncio.sleep(0.01)
        mode = cache.backend.listener.reads_tracked  # type: ignore[attr-defined]
    finally:
        await cache.aclose()
        await truth.aclose()
    return {
        "reads": reads,
        "stale": stale,
        "settled_in": time.monotonic() - started,
        "tracked": mode,
    }


async def role_watcher(p: dict[str, Any]) -> dict[str, Any]:
    """Read key ``w`` through a memory tier every millisecond, noting when each new value
    is first served (monotonic seconds, comparable across processes on one machine)."""
    cache = GenericRedisCache(p["url"], namespace="watch", memory_max_ttl=60)
    await cache.connect()
    client = _redis()
    seen: dict[str, float] = {}
    await cache.get("w")
    await client.incr("test:ready")
    try:
        while True:
            value = await cache.get("w")
            if value is not None and value not in seen:
                seen[value] = time.monotonic()
            if value == "done":
                break
            await asyncio.sleep(0.001)
        memory_hits = (await cache.get_cache_stats())["memory_hits"]
    finally:
        await cache.aclose()
    return {"seen": seen, "memory_hits": memory_hits}


ROLES: dict[str, Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]] = {
    "watcher": role_watcher,
    "coherent_reader": role_coherent_reader,
    "lease": role_lease,
    "stale_reader": role_stale_reader,
    "stale_writer": role_stale_writer,
    "tag_storer": role_tag_storer,
    "tag_invalidator": role_tag_invalidator,
    "swr_reader": role_swr_reader,
}


async def _run(role: str, params: dict[str, Any]) -> dict[str, Any]:
    _params.update(params)
    use_redis(params["url"])
    try:
        return await ROLES[role](params)
    finally:
        await memo.release_connections()
        await drop_redis()


def main() -> None:
    role, raw = sys.argv[1], sys.argv[2]
    report = asyncio.run(_run(role, json.loads(raw)))
    sys.stdout.write("\n" + json.dumps(report) + "\n")
    sys.stdout.flush()
