"""memo's memory-hit cost beside its peers, in one process and one event loop.

    python benchmarks/peers.py [--rounds N] [--batch N] [--quick] [--redis URL] [--chart FILE.png]

Tables: (1) a hit on ``f(user_id: int)`` returning a small dict, (2) an ``@ai_cached`` hit
with a 2 000-character text and an options dict, (3) memo's hit cost against the number
of entries in the cache. Rounds are interleaved: round r runs every contender once, in an
order rotated by r, so drift (CPU frequency, other load) is shared out evenly. Each run
awaits a batch of calls in a tight loop with the garbage collector disabled; the tables
give the per-call median over rounds (wall time, and the thread's CPU time, which other
processes' load does not inflate) and the best round, in microseconds, with ratios of
each. The in-memory tables' comparisons and targets use CPU time; the Redis tables',
wall time, as waiting for the server is part of their cost. The targets
at the end are informational: the exit code is 0 whatever the numbers. ``--chart FILE.png``
also draws the medians of every table printed as horizontal bars (matplotlib, Agg
backend), each bar labelled with its ratio to the table's reference row.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import platform
import random
import statistics
import sys
import time
import traceback
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import aiocache
import async_lru
import cachebox
import msgpack
import xxhash
from cashews import cache as cashews_cache

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's memo first

import memo
from memo import InMemoryCache, ai_cached, cached
from memo.backends._eviction import GONE, Entry

TTL = 600
USERS = 1_000  # distinct keys in tables 1 and 3 (small)
TEXTS = 100  # distinct (text, options) pairs in table 2
TEXT_CHARS = 2_000
COMPUTED: Counter[str] = Counter()  # computations per contender: a timed call must never add one


@dataclass
class Panel:
    """One printed table as ``--chart`` draws it: each row's median µs per call, thread
    CPU or wall time as the table's ratios take it."""

    title: str
    reference: str  # the row the ratios are taken over ("" when it did not run)
    rows: list[tuple[str, float]]  # (contender, median µs per call, as the ratios), in order


PANELS: list[Panel] = []  # every table reported so far, in order


@dataclass
class Contender:
    name: str
    call: Callable[[Any], Awaitable[Any]]  # one call with one item of a batch (warm-up, probes)
    run: Callable[[Sequence[Any]], Awaitable[None]]  # the timed loop over a batch
    seqs: list[Sequence[Any]]  # the batch for round r is seqs[r % len(seqs)]
    keys: Sequence[Any]  # items to warm with
    note: str = ""
    # The untimed batch before the rounds (None: seqs[0]). Uniform hits over a large
    # table warm on keys of their own, or the first round would hit its keys again.
    warmup: Sequence[Any] | None = None
    samples: list[float] = field(default_factory=list)  # µs per call, one per round
    cpu_samples: list[float] = field(default_factory=list)  # thread CPU µs per call, likewise
    returns: str = "?"

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu_samples)

    @property
    def best(self) -> float:
        return min(self.samples)


def fn_contender(
    name: str, fn: Callable[[Any], Awaitable[Any]], seqs: list, keys: Sequence[Any], note: str = ""
) -> Contender:
    async def run(batch: Sequence[Any]) -> None:
        for x in batch:
            await fn(x)

    return Contender(name, fn, run, seqs, keys, note)


def method_contender(name: str, svc: Any, seq: list, keys: list, note: str = "") -> Contender:
    async def run(batch: Sequence[Any]) -> None:
        for text, options in batch:
            await svc.summarize(text, options)

    return Contender(name, lambda item: svc.summarize(*item), run, [seq], keys, note)


# --- the functions under test -----------------------------------------------------------


def user_fn(tag: str) -> Callable[[int], Awaitable[dict]]:
    """A fresh ``f(user_id)`` per contender, so no two share a name, a cache or a counter."""

    async def f(user_id: int) -> dict:
        COMPUTED[tag] += 1
        return {"id": user_id, "name": "alice", "roles": ["a", "b"]}

    f.__name__ = f.__qualname__ = f"get_user_{tag.replace('-', '_')}"
    return f


def summarizer(tag: str, decorate: Callable[[Any], Any] | None) -> Any:
    """An instance of a fresh service class whose ``summarize`` method is decorated."""
    cls_name = f"Summarizer_{tag.replace('-', '_')}"

    async def summarize(self: Any, text: str, options: dict) -> dict:
        COMPUTED[tag] += 1
        return {"summary": text[:120], "points": ["a", "b"], "model": options["model"]}

    summarize.__qualname__ = f"{cls_name}.summarize"
    method = decorate(summarize) if decorate else summarize
    return type(cls_name, (), {"summarize": method})()


def frozen_options(self: Any, text: str, options: dict) -> tuple:
    """Key for peers that need hashable arguments: the options as a sorted tuple of items."""
    return (text, tuple(sorted(options.items())))


# --- tables -----------------------------------------------------------------------------


def user_table(batch: int) -> list[Contender]:
    ids = list(range(USERS))
    seq = [ids[i % USERS] for i in range(batch)]
    aio = aiocache.cached(ttl=TTL, cache=aiocache.Cache.MEMORY)
    made = [
        ("bare call", user_fn("bare"), "no cache: the function itself"),
        (
            "memo",
            cached(ttl=TTL, cache=InMemoryCache(memory_cache_size=4 * USERS))(user_fn("memo")),
            "",
        ),
        ("async-lru", async_lru.alru_cache(maxsize=4 * USERS)(user_fn("async-lru")), ""),
        ("cachebox", cachebox.cached(cachebox.LRUCache(4 * USERS))(user_fn("cachebox")), ""),
        ("aiocache", aio(user_fn("aiocache")), "Cache.MEMORY"),
        ("cashews", cashews_cache(ttl="10m")(user_fn("cashews")), "mem://"),
    ]
    return [fn_contender(name, fn, [seq], ids, note) for name, fn, note in made]


def ai_table(batch: int) -> list[Contender]:
    rnd = random.Random(7)
    words = ["token", "model", "cache", "vector", "prompt", "answer", "latency", "budget"]
    keys = []
    for i in range(TEXTS):
        text = " ".join(rnd.choice(words) for _ in range(TEXT_CHARS // 5))[:TEXT_CHARS]
        options = {"model": "gpt-4o-mini", "max_tokens": 150 + i % 5, "temperature": 0.2}
        keys.append((f"{i:04d} {text}"[:TEXT_CHARS], options))
    seq = [keys[i % TEXTS] for i in range(batch)]
    frozen = "options frozen to a sorted tuple of items by key="
    made = [
        ("bare call", summarizer("bare", None), "no cache"),
        ("memo", summarizer("memo", ai_cached("summarize", cache=InMemoryCache(), ttl=TTL)), ""),
        ("async-lru", summarizer("async-lru", async_lru.alru_cache(1000, key=frozen_options)), frozen),
        ("cachebox", summarizer("cachebox", cachebox.cached(cachebox.LRUCache(1000), key_maker=frozen_options)), frozen.replace("key=", "key_maker=")),
        ("aiocache", summarizer("aiocache", aiocache.cached(ttl=TTL, noself=True)), "key is str() of the raw args"),
        ("cashews", summarizer("cashews", cashews_cache(ttl="10m")), "key is a template over the raw args"),
    ]  # fmt: skip
    return [method_contender(name, svc, seq, keys, note) for name, svc, note in made]


def floor_fn(entries: int) -> Callable[[int], Awaitable[dict]]:
    """The least a first hit can do and still keep memo's promises, with nothing else.

    Entries like the memory tier's (key, msgpack bytes, deadline), indexed by the int
    argument itself; a hit checks the entry still stands and has not expired, and
    decodes a fresh copy. No wrapper, key, statistics, envelope or lock, and entries
    made in one loop, so closer together in memory than a decorator's: not a cache
    anyone could use, but a bound on what a first hit over compact bytes costs at this
    many entries, for a table built of Python dicts, entry objects and msgpack.
    """
    clock = time.monotonic
    index = {}
    for i in range(entries):
        key = f"memo:default:peers.get_user:v1:{i}:{xxhash.xxh3_128_hexdigest(str(i).encode())}"
        body = msgpack.packb({"id": i, "name": "alice", "roles": ["a", "b"]})
        index[i] = Entry(key, body, clock() + TTL)

    async def f(user_id: int) -> dict:
        entry = index.get(user_id)
        if entry is not None and entry.queue != GONE and clock() < entry:  # its deadline
            return msgpack.unpackb(entry.value)  # type: ignore[no-any-return]
        raise KeyError(user_id)

    return f


async def size_table(batch: int, big: int, rounds: int) -> list[Contender]:
    """memo (and async-lru) hits with 10**3 and with ``big`` entries in the cache."""
    small_ids = list(range(USERS))
    small_seq = [small_ids[i % USERS] for i in range(batch)]
    rnd = random.Random(11)
    spread = [[rnd.randrange(big) for _ in range(batch)] for _ in range(rounds)]
    spread_warmup = [rnd.randrange(big) for _ in range(batch)]
    hot = list(range(0, big, big // USERS))[:USERS]
    hot_seq = [hot[i % USERS] for i in range(batch)]
    big_cache = InMemoryCache(memory_cache_size=big + USERS, memory_max_bytes=2**34)
    memo_small = cached(ttl=TTL, cache=InMemoryCache(memory_cache_size=4 * USERS))(
        user_fn("memo_small")
    )
    memo_big = cached(ttl=TTL, cache=big_cache)(user_fn("memo_big"))
    lru_small = async_lru.alru_cache(maxsize=4 * USERS)(user_fn("lru_small"))
    lru_big = async_lru.alru_cache(maxsize=big + USERS)(user_fn("lru_big"))
    for name, fn in ((f"memo, {big:,} entries", memo_big), (f"async-lru, {big:,}", lru_big)):
        t0 = time.perf_counter()
        for i in range(big):
            await fn(i)
        print(f"  filled {name} through the decorator in {time.perf_counter() - t0:.1f} s")
    big_note = f"uniform over all {big:,} keys"
    floor_note = "entry + TTL check + unpackb, no wrapper"
    table = [
        fn_contender("floor, 1 000", floor_fn(USERS), [small_seq], [], floor_note),
        fn_contender(f"floor, {big:,}", floor_fn(big), spread, [], floor_note),
        fn_contender("memo, 1 000 entries", memo_small, [small_seq], small_ids, "cycling over all"),
        fn_contender(f"memo, {big:,} entries", memo_big, spread, [], big_note),
        fn_contender(f"memo, {big:,}, hot keys", memo_big, [hot_seq], [], "1 000 keys, cycling"),
        fn_contender("async-lru, 1 000", lru_small, [small_seq], small_ids, "cycling over all"),
        fn_contender(f"async-lru, {big:,}", lru_big, spread, [], big_note),
        fn_contender(
            f"async-lru, {big:,}, hot keys", lru_big, [hot_seq], [], "1 000 keys, cycling"
        ),
    ]
    for c in table:
        if c.seqs is spread:
            c.warmup = spread_warmup
    return table


REDIS_KEYS = 1_000  # distinct keys in the Redis tables


class SwallowedErrors(logging.Handler):
    """Counts the errors a library logs and swallows instead of raising, per library.

    aiocache's decorator logs a full traceback for every failed get or set and then runs
    the function uncached; under load that is a flood of output and errors that
    ``gather`` never sees. The Redis tables attach this to each library's logger so the
    failures are counted beside the raised ones and the report stays readable.
    """

    LIBRARIES = ("aiocache", "cashews", "memo")

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.counts: Counter[str] = Counter()
        self._saved: dict[str, bool] = {}

    def emit(self, record: logging.LogRecord) -> None:
        self.counts[record.name.split(".")[0]] += 1

    def install(self) -> None:
        for name in self.LIBRARIES:
            logger = logging.getLogger(name)
            self._saved[name] = logger.propagate
            logger.addHandler(self)
            logger.propagate = False

    def remove(self) -> None:
        for name, propagate in self._saved.items():
            logger = logging.getLogger(name)
            logger.removeHandler(self)
            logger.propagate = propagate


def concurrent_contender(
    name: str, fn: Callable[[Any], Awaitable[Any]], keys: list, note: str = ""
) -> Contender:
    """All of ``keys`` at once through ``asyncio.gather``; errors are counted, not raised."""
    errors: Counter[str] = Counter()

    async def run(batch: Sequence[Any]) -> None:
        for result in await asyncio.gather(*(fn(k) for k in batch), return_exceptions=True):
            if isinstance(result, BaseException):
                errors[type(result).__name__] += 1

    c = Contender(name, fn, run, [keys], keys, note)
    c.errors = errors  # type: ignore[attr-defined]
    return c


async def redis_tables(url: str, batch: int) -> tuple[list[Contender], list[Contender], list[Any]]:
    """Tables 4 and 5: hits served by Redis (no memory tier), sequential and concurrent."""
    from urllib.parse import urlsplit

    import redis.asyncio as aioredis
    from cashews import Cache as CashewsCache

    from memo import GenericRedisCache

    parts = urlsplit(url)
    db = int(parts.path.strip("/") or 0)
    ids = list(range(REDIS_KEYS))
    seq = [ids[i % REDIS_KEYS] for i in range(batch)]

    pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=50, timeout=5)
    raw = aioredis.Redis(connection_pool=pool)
    await raw.mset({f"bench:raw:{i}": b"x" * 60 for i in ids})

    async def raw_get(i: int) -> Any:
        return await raw.get(f"bench:raw:{i}")

    memo_cache = GenericRedisCache(url, enable_memory_cache=False, namespace="bench")
    await memo_cache.connect()
    aio = aiocache.cached(
        ttl=TTL,
        cache=aiocache.Cache.REDIS,
        endpoint=parts.hostname or "127.0.0.1",
        port=parts.port or 6379,
        db=db,
        password=parts.password,
        namespace="bench_aio",
    )
    cashews_redis = CashewsCache()
    cashews_redis.setup(url)
    made = [
        ("raw redis-py GET", raw_get, "the floor: GET on a 50-connection pool, no decoding"),
        ("memo", cached(ttl=TTL, cache=memo_cache)(user_fn("memo-redis")), "Redis only"),
        ("aiocache", aio(user_fn("aiocache-redis")), "Cache.REDIS"),
        ("cashews", cashews_redis(ttl="10m")(user_fn("cashews-redis")), "redis://"),
    ]
    sequential = [fn_contender(name, fn, [seq], ids, note) for name, fn, note in made]
    concurrent = [concurrent_contender(name, fn, ids, note) for name, fn, note in made]
    closers = [raw, memo_cache, cashews_redis]
    return sequential, concurrent, closers


@dataclass
class Writer:
    """A contender of table 6: ``run`` writes every key of a batch once."""

    name: str
    run: Callable[[Sequence[str]], Awaitable[int]]  # how many writes raised
    note: str = ""
    wall: list[float] = field(default_factory=list)  # µs per write, one per round
    cpu: list[float] = field(default_factory=list)  # thread CPU µs per write
    errors: int = 0


async def write_table(url: str, rounds: int) -> list[Writer]:
    """Table 6: 1 000 writes of distinct keys, raw redis-py SET (sequential and gathered)
    against memo's ``cache.set`` gathered (announced on the channel, with coherence off,
    and with tracking, the default, which announces nothing while nobody listens)."""
    import redis.asyncio as aioredis

    from memo import GenericRedisCache

    pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=50, timeout=5)
    raw = aioredis.Redis(connection_pool=pool)
    value = b"x" * 60
    px = TTL * 1000

    async def raw_sequential(keys: Sequence[str]) -> int:
        for k in keys:
            await raw.set(f"bench:w:raw:{k}", value, px=px)
        return 0

    async def raw_gathered(keys: Sequence[str]) -> int:
        done = await asyncio.gather(
            *(raw.set(f"bench:w:raw:{k}", value, px=px) for k in keys), return_exceptions=True
        )
        return sum(isinstance(r, BaseException) for r in done)

    caches = [
        GenericRedisCache(url, enable_memory_cache=False, namespace="bench_w", coherence="channel"),
        GenericRedisCache(
            url, enable_memory_cache=False, namespace="bench_w_quiet", invalidation_channel=False
        ),
        GenericRedisCache(url, enable_memory_cache=False, namespace="bench_w_tracking"),
    ]
    for cache in caches:
        await cache.connect()
    item = {"id": 1, "name": "alice", "roles": ["a", "b"]}

    def memo_gathered(cache: Any) -> Callable[[Sequence[str]], Awaitable[int]]:
        async def run(keys: Sequence[str]) -> int:
            before = cache.stats.errors
            done = await asyncio.gather(*(cache.set(k, item) for k in keys), return_exceptions=True)
            raised = sum(isinstance(r, BaseException) for r in done)
            return raised + cache.stats.errors - before

        return run

    async def memo_sequential(keys: Sequence[str]) -> int:
        before = caches[0].stats.errors
        for k in keys:
            await caches[0].set(k, item)
        return caches[0].stats.errors - before

    writers = [
        Writer("raw redis-py SET, sequential", raw_sequential, "the reference: one at a time"),
        Writer("raw redis-py SET, gathered", raw_gathered, "50-connection pool"),
        Writer("memo cache.set, sequential", memo_sequential, "announced (SET+PUBLISH script)"),
        Writer("memo cache.set, gathered", memo_gathered(caches[0]), "announced"),
        Writer(
            "memo, gathered, channel off", memo_gathered(caches[1]), "invalidation_channel=False"
        ),
        Writer(
            "memo, gathered, tracking", memo_gathered(caches[2]), "the default: nothing announced"
        ),
    ]
    keys = [f"w:{i}" for i in range(REDIS_KEYS)]
    for w in writers:  # warm: connections made, scripts loaded
        await w.run(keys)
    for r in range(rounds):
        k = r % len(writers)
        for w in writers[k:] + writers[:k]:
            gc.disable()
            c0, t0 = time.thread_time_ns(), time.perf_counter_ns()
            w.errors += await w.run(keys)
            t1, c1 = time.perf_counter_ns(), time.thread_time_ns()
            gc.enable()
            w.wall.append((t1 - t0) / len(keys) / 1000)
            w.cpu.append((c1 - c0) / len(keys) / 1000)
    for cache in caches:
        await cache.aclose()
    await raw.aclose()
    return writers


def report_writes(writers: list[Writer]) -> None:
    print(f"\nTable 6: {REDIS_KEYS:,} writes of distinct keys per round (µs per write)")
    print(f"  {'contender':<31}{'wall med':>9}{'wall best':>10}{'CPU med':>9}{'errors':>8}  note")
    for w in writers:
        wall, cpu = statistics.median(w.wall), statistics.median(w.cpu)
        print(f"  {w.name:<31}{wall:>9.2f}{min(w.wall):>10.2f}{cpu:>9.2f}{w.errors:>8}  {w.note}")
    by_name = {w.name: statistics.median(w.wall) for w in writers}
    title = f"Table 6: {REDIS_KEYS:,} writes of distinct keys per round (wall µs per write)"
    PANELS.append(Panel(title, "raw redis-py SET, sequential", list(by_name.items())))
    reference = by_name["raw redis-py SET, sequential"]
    for name in (
        "memo cache.set, gathered",
        "memo, gathered, channel off",
        "memo, gathered, tracking",
    ):
        target(f"{name} / sequential raw SET (wall)", by_name[name] / reference, 0.3, True)


# --- measuring and reporting ------------------------------------------------------------


def returns_kind(first: dict, second: dict) -> str:
    if first is second:
        return "same obj"
    if not isinstance(first, dict):
        return "bytes" if isinstance(first, bytes) else "copy"
    lists = [(v, second[k]) for k, v in first.items() if isinstance(v, list)]
    return "shallow copy" if lists and lists[0][0] is lists[0][1] else "copy"


async def warm(contenders: list[Contender]) -> list[Contender]:
    kept = []
    for c in contenders:
        try:
            for item in c.keys:
                await c.call(item)
            probe = c.seqs[0][0]
            c.returns = returns_kind(await c.call(probe), await c.call(probe))
            # One untimed batch, to settle allocations and caches.
            await c.run(c.seqs[0] if c.warmup is None else c.warmup)
        except Exception as exc:
            print(f"  NOTE: {c.name} skipped, it raised {type(exc).__name__}: {exc}")
            continue
        kept.append(c)
    return kept


async def measure(contenders: list[Contender], rounds: int) -> None:
    for r in range(rounds if contenders else 0):
        k = r % len(contenders)
        for c in contenders[k:] + contenders[:k]:
            batch = c.seqs[r % len(c.seqs)]
            before = sum(COMPUTED.values())
            gc.disable()
            c0, t0 = time.thread_time_ns(), time.perf_counter_ns()
            await c.run(batch)
            t1, c1 = time.perf_counter_ns(), time.thread_time_ns()
            gc.enable()
            c.samples.append((t1 - t0) / len(batch) / 1000)
            c.cpu_samples.append((c1 - c0) / len(batch) / 1000)
            missed = sum(COMPUTED.values()) != before
            if missed and not c.name.startswith("bare") and "[MISSES" not in c.note:
                c.note += " [MISSES IN TIMED BATCH]"


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x"


def report(
    title: str,
    contenders: list[Contender],
    ref: str = "async-lru",
    chart_title: str = "",
    basis: str = "cpu",
) -> dict[str, float]:
    """Print a table; return each contender's median by ``basis``: "cpu" (thread CPU
    time, which another process's load on the machine does not inflate) for tables
    without I/O, "wall" where waiting for a server is part of the cost."""
    if title:
        print(f"\n{title}")
    refs = [c for c in contenders if c.name.startswith(ref)]
    base, base_cpu = (refs[0].median, refs[0].cpu_median) if refs else (None, None)
    reference = refs[0].name if refs else ""
    rows = [(c.name, c.cpu_median if basis == "cpu" else c.median) for c in contenders]
    PANELS.append(Panel(chart_title or title, reference, rows))
    w = max(13, len(ref) + 4)
    print(
        f"  {'contender':<28}{'median µs':>10}{'cpu µs':>8}{'best µs':>9}{'x ' + ref:>{w}}"
        f"{'(cpu)':>7}  {'returns':<13}note"
    )
    for c in contenders:
        rel = ratio(c.median, base) if base else "-"
        rel_cpu = ratio(c.cpu_median, base_cpu) if base_cpu else "-"
        print(
            f"  {c.name:<28}{c.median:>10.3f}{c.cpu_median:>8.3f}{c.best:>9.3f}{rel:>{w}}"
            f"{rel_cpu:>7}  {c.returns:<13}{c.note.strip()}"
        )
    if basis == "cpu":
        return {c.name: c.cpu_median for c in contenders}
    return {c.name: c.median for c in contenders}


def compare_memo(med: dict[str, float]) -> None:
    if "memo" not in med:
        return
    m = med["memo"]
    for peer in ("async-lru", "cachebox", "aiocache", "cashews"):
        if peer in med:
            p = med[peer]
            verdict = f"{p / m:.2f}x cheaper than" if p >= m else f"{m / p:.2f}x dearer than"
            print(
                f"  memo is {verdict} {peer}  ({peer} / memo = {p / m:.2f}, memo / {peer} = {m / p:.2f})"
            )


def target(label: str, value: float | None, limit: float, at_most: bool) -> None:
    if value is None:
        print(f"  {label}: not measured")
        return
    met = value <= limit if at_most else value >= limit
    bound = "≤" if at_most else "≥"
    print(f"  {label}: {value:.2f} (target {bound} {limit}) -> {'met' if met else 'NOT met'}")


def header(args: argparse.Namespace, big: int) -> None:
    def ver(dist: str) -> str:
        try:
            return version(dist)
        except PackageNotFoundError:
            return "?"

    peers = ", ".join(f"{d} {ver(d)}" for d in ("async-lru", "cachebox", "aiocache", "cashews"))
    print("memo peer benchmark: in-process memory hits")
    print(
        f"  Python {sys.version.split()[0]} ({platform.python_implementation()}), {platform.platform()}"
    )
    print(f"  memo {memo.__version__}; {peers}")
    print(f"  msgpack {ver('msgpack')}, xxhash {ver('xxhash')}, wrapt {ver('wrapt')}")
    print(f"  {args.rounds} interleaved rounds x {args.batch:,} awaited calls per contender,")
    print(f"  table 3 at {big:,} entries; GC disabled during each timed batch (and frozen after")
    print("  filling); µs per call, loop overhead included (see the bare-call row)")
    print("  'returns': whether a hit hands back the stored object, a shallow copy or a full copy")


def bar_colour(name: str, reference: str) -> str:
    """memo's rows red, the reference row grey, the bare call (the floor) light grey."""
    if name.startswith("memo"):
        return "#d62728"
    if name == reference:
        return "#7f7f7f"
    return "#c7c7c7" if name.startswith("bare") else "#1f77b4"


def chart(path: str, panels: list[Panel], subtitle: str) -> None:
    """Draw ``panels`` into ``path``: one horizontal bar chart per table, memo's rows
    highlighted, each bar labelled with its µs and its ratio to the table's reference."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display is needed or opened
    import matplotlib.pyplot as plt

    panels = [p for p in panels if p.rows]
    heights = [0.9 + 0.36 * len(p.rows) for p in panels]
    fig, axes = plt.subplots(
        len(panels),
        1,
        figsize=(10, sum(heights) + 1.3),
        gridspec_kw={"height_ratios": heights},
        squeeze=False,
    )
    for ax, panel in zip(axes[:, 0], panels, strict=True):
        names = [name for name, _ in panel.rows]
        values = [value for _, value in panel.rows]
        base = dict(panel.rows).get(panel.reference)
        colors = [bar_colour(name, panel.reference) for name in names]
        ypos = range(len(names))
        ax.barh(ypos, values, color=colors, height=0.7)
        ax.set_yticks(list(ypos), names, fontsize=9)
        ax.invert_yaxis()  # first printed row on top
        top = max(values)
        ax.set_xlim(0, top * 1.32)
        for y, value in zip(ypos, values, strict=True):
            label = f"{value:,.2f} µs"
            if base:
                label += f"  ({value / base:.2f}x)"
            ax.text(value + top * 0.01, y, label, va="center", fontsize=8)
        reference = f"; ratios over {panel.reference}" if base else ""
        ax.set_title(f"{panel.title}{reference}", fontsize=10, loc="left")
        ax.tick_params(axis="x", labelsize=8)
        ax.grid(axis="x", alpha=0.3)
        ax.set_axisbelow(True)
    axes[-1, 0].set_xlabel(
        "median µs per call, thread CPU time (Redis tables: wall time); lower is better"
    )
    fig.suptitle(
        "memo beside its peers: cost of a cached call, lower is better\n"
        "(the ratios in brackets travel between machines; the µs do not)",
        fontsize=12,
    )
    fig.text(0.5, 0.005, subtitle, ha="center", va="bottom", fontsize=7, color="#555555")
    fig.tight_layout(rect=(0, 0.02, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"\nchart of {len(panels)} table(s) written to {path}")


async def main(args: argparse.Namespace) -> None:
    big = 10**5 if args.quick else 10**6
    header(args, big)
    cashews_cache.setup("mem://?size=100000")
    # Memory tables first: the Redis tables leave pools, buffers and (for aiocache) a
    # flood of logged tracebacks behind, which slowed every memory row of a later table
    # by up to 2x in one run.
    if not (args.redis and args.redis_only):
        await memory_report(args, big)
    if args.redis:
        await redis_report(args)
    if args.chart:
        subtitle = (
            f"python benchmarks/peers.py, {args.rounds} interleaved rounds x {args.batch:,} calls; "
            f"memo {memo.__version__}, Python {sys.version.split()[0]}, {platform.platform()}"
        )
        chart(args.chart, PANELS, subtitle)


async def memory_report(args: argparse.Namespace, big: int) -> None:
    t1 = await warm(user_table(args.batch))
    await measure(t1, args.rounds)
    m1 = report("Table 1: hit on f(user_id: int) returning a small dict", t1)
    compare_memo(m1)

    t2 = await warm(ai_table(args.batch))
    await measure(t2, args.rounds)
    m2 = report(f"Table 2: @ai_cached hit, {TEXT_CHARS:,}-character text + options dict", t2)
    compare_memo(m2)
    print("  notes: async-lru and cachebox cannot hash a dict argument; they key on a tuple")
    print("  built from the options by a key function (its cost is included). aiocache's key is")
    print("  order-sensitive in the options; memo normalises them (sorted keys, None dropped).")

    print(f"\nTable 3: memo memory-hit cost vs cache size (filling {big:,} entries)")
    t3 = await warm(await size_table(args.batch, big, args.rounds))
    gc.collect()
    gc.freeze()
    await measure(t3, args.rounds)
    m3 = report(
        "",
        t3,
        ref="async-lru, 1 000",
        chart_title=f"Table 3: hit cost vs cache size, {big:,} entries",
    )

    def quotient(a: str, b: str, med: dict[str, float] = m1) -> float | None:
        return med[a] / med[b] if a in med and b in med else None

    def fmt(q: float | None) -> str:
        return "-" if q is None else f"{q:.2f}"

    hot = quotient(f"memo, {big:,}, hot keys", "memo, 1 000 entries", m3)
    uniform = quotient(f"memo, {big:,} entries", "memo, 1 000 entries", m3)
    lru = quotient(f"async-lru, {big:,}", "async-lru, 1 000", m3)
    lru_hot = quotient(f"async-lru, {big:,}, hot keys", "async-lru, 1 000", m3)
    print(f"  hit cost at {big:,} / at 1 000 entries: memo, hot keys {fmt(hot)}; memo, uniform")
    print(f"  {fmt(uniform)}; async-lru, hot keys {fmt(lru_hot)}; async-lru, uniform {fmt(lru)}.")
    print("  A large table costs every hash table CPU-cache and TLB misses, even on hot keys")
    print("  scattered through it: async-lru's ratios are that floor.")
    floor = quotient(f"floor, {big:,}", "memo, 1 000 entries", m3)
    floor_own = quotient(f"floor, {big:,}", "floor, 1 000", m3)
    print(f"  floor: at {big:,} / its own at 1 000, {fmt(floor_own)}; at {big:,} / memo at")
    print(f"  1 000 entries, {fmt(floor)}: memo's uniform row compares a first hit, which")
    print("  decodes, with a held hit, which copies a remembered value; built this way, the")
    print(f"  row cannot read less than that (the goal, async-lru's own growth: {fmt(lru)}).")

    print("\nTargets (informational, not assertions):")
    target("memo hit / async-lru hit (table 1)", quotient("memo", "async-lru"), 2.5, True)
    target("aiocache / memo (table 1)", quotient("aiocache", "memo"), 8, False)
    target("cashews / memo (table 1)", quotient("cashews", "memo"), 15, False)
    target("memo / cachebox (table 1, standing goal)", quotient("memo", "cachebox"), 1.0, True)
    # The goal for growth is async-lru's own, measured in this run.
    if lru_hot is not None:
        target(f"memo hit at {big:,} / 1 000 entries, hot keys", hot, round(lru_hot, 2), True)
    if lru is not None:
        target(f"memo hit at {big:,} / 1 000 entries, uniform", uniform, round(lru, 2), True)


async def redis_report(args: argparse.Namespace) -> None:
    from memo._redis_options import RedisURL

    # Short batches and many rounds: a Redis round trip drifts with the machine's load, so
    # contenders are interleaved finely enough to meet the same conditions.
    batch = min(args.batch, 500)
    rounds = args.rounds * 8
    where = RedisURL.parse(args.redis, "--redis").masked
    print(f"\nRedis at {where}: hits served by Redis, {REDIS_KEYS:,} keys")
    sequential, concurrent, closers = await redis_tables(args.redis, batch)
    swallowed = SwallowedErrors()
    swallowed.install()
    t4 = await warm(sequential)
    await measure(t4, rounds)
    m4 = report(
        f"Table 4: sequential Redis hits ({batch:,} awaited calls per round)",
        t4,
        ref="raw",
        basis="wall",
    )
    t5 = await warm(concurrent)
    await measure(t5, args.rounds)
    m5 = report(
        f"Table 5: {REDIS_KEYS:,} concurrent hits on distinct keys (gather)",
        t5,
        ref="raw",
        basis="wall",
    )
    swallowed.remove()
    for c in t5:
        errors = getattr(c, "errors", {})
        print(
            f"  {c.name}: {sum(errors.values())} errors raised"
            + (f" {dict(errors)}" if errors else "")
        )
    print("  warnings and errors logged instead of raised (tables 4 and 5, warm-up included):")
    for library in SwallowedErrors.LIBRARIES:
        print(f"    {library}: {swallowed.counts[library]}")
    print("\nRedis targets (informational, not assertions):")
    raw = "raw redis-py GET"
    if "memo" in m4 and raw in m4:
        cpu4 = {c.name: c.cpu_median for c in t4}
        # The goal is the client's CPU per hit: the server's share of a round trip and the
        # machine's load are not memo's to spend.
        target("sequential memo hit / raw GET (client CPU)", cpu4["memo"] / cpu4[raw], 1.05, True)
        target("sequential memo hit / raw GET (wall)", m4["memo"] / m4[raw], 1.05, True)
    if "memo" in m5 and raw in m5:
        target("concurrent memo hit / raw GET", m5["memo"] / m5[raw], 1.0, True)
    for closer in closers:
        close = getattr(closer, "aclose", None) or getattr(closer, "close", None)
        if close is not None:
            result = close()
            if asyncio.iscoroutine(result):
                await result
    writers = await write_table(args.redis, args.rounds)
    report_writes(writers)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 15)")
    ap.add_argument("--batch", type=int, default=None, help="calls per timed batch (20 000)")
    ap.add_argument("--quick", action="store_true", help="5 rounds, 5 000 calls, 10**5 entries")
    ap.add_argument("--redis", metavar="URL", help="add tables 4 to 6: Redis hits and writes")
    ap.add_argument("--redis-only", action="store_true", help="with --redis: only the Redis tables")
    ap.add_argument(
        "--chart", metavar="FILE.png", help="also draw every table's medians into FILE.png"
    )
    args = ap.parse_args(argv)
    args.rounds = args.rounds or (5 if args.quick else 15)
    args.batch = args.batch or (5_000 if args.quick else 20_000)
    return args


if __name__ == "__main__":
    try:
        asyncio.run(main(parse()))
    except Exception:  # a broken contender must not hide the rows already printed
        traceback.print_exc()
    sys.exit(0)
