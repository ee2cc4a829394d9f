"""``memo``: inspect and invalidate a memo cache from a shell.

The tool builds its cache the way ``CacheFactory.from_env()`` does (``CACHE_PRESET``,
``CACHE_REDIS_URL``, ``CACHE_NAMESPACE``, ``CACHE_CUSTOM_CONFIG``), with the command-line
flags winning, but talks to Redis directly (no memory tier) and refuses to fall back to
memory when Redis is unreachable: an operator asking about Redis wants Redis's answer.

Commands::

    memo health                    probe the cache: write, read back, delete
    memo stats                     the fleet's counters (one row per process), stored
                                   keys, Redis server figures, AI savings
    memo top [--iterations N]      a live view of the fleet (rich; Ctrl-C ends it)
    memo keys PATTERN [--limit N]  stored keys matching a glob (SCAN, never KEYS)
    memo get KEY                   the decoded value and its remaining TTL
    memo invalidate PATTERN        delete matching keys (asks first unless --yes)
    memo invalidate --tag TAG      delete the entries stored with a tag
    memo presets                   the preset table

Keys and patterns are relative to the namespace (``memo:{namespace}:`` is added). Add
``--json`` (before or after the command) for one JSON document on stdout.

Exit codes: 0 done (health: healthy); 1 nothing found or nothing done (get: no value;
keys: no match; invalidate: nothing matched, nothing removed or declined; health:
degraded); 2 usage or configuration error (health: no Redis URL, nothing to check);
3 Redis unreachable, refusing the credentials or failing (health: unhealthy).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import dataclasses
import datetime as dt
import json
import os
import sys
from collections.abc import Sequence
from decimal import Decimal
from typing import Any, TextIO
from uuid import UUID

from memo._fleet import read_fleet
from memo._presets import PRESET_VALUES
from memo._views import SAVINGS_SECTIONS, fleet_lines, savings_lines
from memo.backends.base import SharedHashes
from memo.cache import Cache
from memo.config import config_from_env
from memo.exceptions import (
    BackendAuthError,
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    ConfigError,
)
from memo.factory import build_cache

__all__ = ["main"]

OK, NOT_FOUND, USAGE, UNAVAILABLE = 0, 1, 2, 3

#: Keys counted by ``stats`` and ``invalidate`` before saying "at least".
COUNT_CAP = 1_000_000

#: Figures of Redis's INFO that ``stats`` shows.
SERVER_FIGURES = (
    "redis_version",
    "uptime_in_seconds",
    "connected_clients",
    "used_memory",
    "used_memory_human",
    "maxmemory_policy",
    "keyspace_hits",
    "keyspace_misses",
    "evicted_keys",
    "expired_keys",
)

_EPILOG = """\
environment: CACHE_PRESET, CACHE_REDIS_URL, CACHE_NAMESPACE, CACHE_CUSTOM_CONFIG
global options (--json, --preset, --redis-url, --namespace) go before or after COMMAND
exit codes: 0 done; 1 nothing found, nothing removed or declined (health: degraded);
            2 usage or configuration error (health: no Redis URL);
            3 Redis unreachable or refusing the credentials (health: unhealthy)
"""

#: What to fix when no Redis URL is configured.
_NO_URL = "no Redis URL: set CACHE_REDIS_URL or pass --redis-url"


class Output:
    """Where results go: text for people, or one JSON document with --json."""

    def __init__(self, as_json: bool, out: TextIO, err: TextIO) -> None:
        self.as_json = as_json
        self.out = out
        self.err = err

    def result(self, document: Any, text: str) -> None:
        if self.as_json:
            json.dump(document, self.out, indent=2, default=_jsonable, sort_keys=True)
            self.out.write("\n")
        elif text:
            self.out.write(text.rstrip("\n") + "\n")

    def note(self, message: str) -> None:
        one_line = " ".join(part.strip() for part in message.splitlines())
        self.err.write(f"memo: {one_line}\n")


def _jsonable(value: Any) -> Any:
    """How a decoded value that JSON cannot hold is shown."""
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, (UUID, Decimal)):
        return str(value)
    if isinstance(value, (set, frozenset)):
        items = list(value)
        try:
            return sorted(items)
        except TypeError:
            return items
    if isinstance(value, (bytes, bytearray)):
        return {"base64": base64.b64encode(value).decode("ascii")}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return dump()
    return repr(value)


def _global_options(parser: argparse.ArgumentParser, *, after_command: bool) -> None:
    """The options every command takes, before the command or after it.

    After the command they default to SUPPRESS: a command's parser then sets only the
    options given after it, and leaves those given before it as they were.
    """

    def default(value: Any) -> Any:
        return argparse.SUPPRESS if after_command else value

    group = parser.add_argument_group("global options")
    group.add_argument(
        "--json", action="store_true", default=default(False), help="print one JSON document"
    )
    group.add_argument(
        "--preset", default=default(None), help="the preset (default: CACHE_PRESET, else simple)"
    )
    group.add_argument(
        "--redis-url", default=default(None), help="the Redis URL (default: CACHE_REDIS_URL)"
    )
    group.add_argument(
        "--namespace", default=default(None), help="the namespace (default: CACHE_NAMESPACE)"
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="memo",
        description="Inspect and invalidate a memo cache.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _global_options(parser, after_command=False)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("health", help="write, read back and delete a probe value")
    commands.add_parser("stats", help="counters, stored keys and Redis server figures")
    keys = commands.add_parser("keys", help="stored keys matching a glob pattern")
    keys.add_argument("pattern", help="a glob relative to the namespace, e.g. 'user:*'")
    keys.add_argument("--limit", type=int, default=100, help="the most keys to list (100)")
    get = commands.add_parser("get", help="the decoded value stored under a key")
    get.add_argument("key", help="a key relative to the namespace")
    inv = commands.add_parser("invalidate", help="delete keys by pattern or by tag")
    target = inv.add_mutually_exclusive_group(required=True)
    target.add_argument("pattern", nargs="?", help="a glob relative to the namespace")
    target.add_argument("--tag", help="delete the entries stored with this tag")
    inv.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    commands.add_parser("presets", help="the preset table")
    top = commands.add_parser("top", help="a live view of the fleet (needs memo[top])")
    top.add_argument("--iterations", type=int, default=None, help="refreshes, then exit")
    top.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes")
    for command in commands.choices.values():
        _global_options(command, after_command=True)
    return parser


def _build(args: argparse.Namespace) -> Cache:
    env: dict[str, str] | None = None
    if args.preset is not None:
        env = {**os.environ, "CACHE_PRESET": args.preset}
    config = config_from_env(env)
    changes: dict[str, Any] = {"enable_memory_cache": False, "fail_on_connection_error": True}
    if args.redis_url is not None:
        changes["redis_url"] = args.redis_url
    if args.namespace is not None:
        changes["namespace"] = args.namespace
    # The tool says itself when it has no Redis URL; the library's own warning about a
    # memory-only cache would repeat it.
    return build_cache(config.replace(**changes), warn=False)


def _where(cache: Cache) -> str:
    remote = cache.remote_server()
    place = remote.masked_url if remote is not None else "process memory"
    return f"{place}, namespace {cache.namespace!r}"


def _failure(cache: Cache, exc: BackendError) -> str:
    """What went wrong with Redis, with advice a shell user can follow.

    The library's own messages name constructor arguments (``redis_url``,
    ``fail_on_connection_error``) that this tool sets for the user; these name the
    flags and variables instead. The URL is masked: no password is ever shown.
    """
    remote = cache.remote_server()
    where = f"Redis at {remote.masked_url}" if remote is not None else "the cache"
    if isinstance(exc, BackendAuthError):
        return (
            f"{where} refused the credentials: authentication failed; check the user name "
            f"and password in the URL (--redis-url or CACHE_REDIS_URL)"
        )
    if isinstance(exc, BackendTimeout):
        return (
            f"{where} did not answer in time: check that it runs and is not overloaded, "
            f"and that --redis-url or CACHE_REDIS_URL points at it (a slow server may need "
            f'a longer "operation_timeout" in CACHE_CUSTOM_CONFIG)'
        )
    if isinstance(exc, BackendUnavailable):
        return (
            f"{where} does not answer: start it, or fix --redis-url or CACHE_REDIS_URL "
            f"if it points at the wrong host, port or database"
        )
    return f"{where} answered with an error: {exc}"


async def _health(cache: Cache, out: Output, args: argparse.Namespace) -> int:
    remote = cache.remote_server()
    if remote is None:
        # The CLI's own cache in this process's memory would report healthy: true of
        # it, and of nothing an operator asks about.
        reason = f"nothing to check: {_NO_URL}"
        out.result({"status": "unconfigured", "reason": reason, "backend": None}, "")
        out.note(reason)
        return USAGE
    try:
        await remote.check()
    except BackendAuthError as exc:
        # The health check alone would say only that Redis does not answer.
        reason = _failure(cache, exc)
        report = {"status": "unhealthy", "reason": reason, "backend": cache.backend.name}
        out.result(report, f"unhealthy: {reason}")
        return UNAVAILABLE
    except BackendError:
        pass  # the health check itself says that Redis does not answer
    report = await cache.health_check()
    latency = f" ({report['latency_ms']} ms)" if "latency_ms" in report else ""
    out.result(report, f"{report['status']}: {report['reason']}{latency}")
    return {"healthy": OK, "degraded": NOT_FOUND}.get(report["status"], UNAVAILABLE)


async def _stats(cache: Cache, out: Output, args: argparse.Namespace) -> int:
    stats = await cache.get_cache_stats()
    stored = len(await cache.keys("*", limit=COUNT_CAP))
    stats["stored_keys"] = stored
    stats["stored_keys_capped"] = stored >= COUNT_CAP
    remote = cache.remote_server()
    if remote is not None:
        info = await remote.server_info()
        stats["server"] = {k: info[k] for k in SERVER_FIGURES if k in info}
    stats["counters_of"] = "this process"
    if isinstance(remote, SharedHashes):
        # The counters that matter are the fleet's: this process has served nothing.
        stats["fleet"] = fleet = await read_fleet(remote.hashes, cache.prefix)
        stats.update(fleet["totals"], counters_of="fleet")
    lines = [
        f"cache: {_where(cache)}",
        f"stored keys: {'at least ' * (stored >= COUNT_CAP)}{stored}",
    ]
    for name, value in stats.items():
        if name == "fleet":
            lines += fleet_lines(value)
        elif name in SAVINGS_SECTIONS:
            lines += savings_lines(SAVINGS_SECTIONS[name], value)
        elif isinstance(value, dict):
            inner = ", ".join(f"{k}={v}" for k, v in value.items())
            lines.append(f"{name}: {inner}")
        elif name not in ("stored_keys", "stored_keys_capped"):
            lines.append(f"{name}: {value}")
    out.result(stats, "\n".join(lines))
    return OK


async def _keys(cache: Cache, out: Output, args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise ConfigError(f"--limit={args.limit}: list at least 1 key")
    found = await cache.keys(args.pattern, limit=args.limit)
    out.result(found, "\n".join(found))
    if not found and not out.as_json:
        out.note(f"no key matches {args.pattern!r} in {_where(cache)}")
    return OK if found else NOT_FOUND


async def _get(cache: Cache, out: Output, args: argparse.Namespace) -> int:
    # The stored bytes, not cache.get(): an operator looking at a key must see a stale
    # value or bytes memo cannot read, and looking must change nothing (a read through
    # the cache deletes corrupt bytes and counts a hit or a miss).
    stored = await cache.read_stored(args.key)
    if stored is None:
        out.result({"key": args.key, "found": False}, "")
        out.note(f"no value stored under {args.key!r} in {_where(cache)}")
        return NOT_FOUND
    entry = stored.entry
    if entry is None:
        document = {
            "key": args.key,
            "found": True,
            "decoded": False,
            "bytes": stored.size,
            "error": stored.error,
            "ttl": stored.ttl,
        }
        out.result(document, f"{stored.size} bytes that memo cannot decode: {stored.error}")
        out.note(f"left in place; `memo invalidate {args.key} --yes` deletes it")
        return NOT_FOUND
    fresh_for = (entry.fresh_until_ms - cache.now_ms()) / 1000.0
    document = {
        "key": args.key,
        "found": True,
        "decoded": True,
        "fresh": fresh_for > 0,
        "ttl": stored.ttl,
        "value": entry.value,
    }
    pretty = json.dumps(entry.value, indent=2, default=_jsonable, ensure_ascii=False)
    if fresh_for > 0:
        age = f"fresh for {fresh_for:.1f} s"
    else:
        age = f"stale for {-fresh_for:.1f} s (served only as a stale value)"
    kept = "no expiry" if stored.ttl is None else f"stored for {stored.ttl:.1f} s more"
    out.result(document, f"{pretty}\n({type(entry.value).__name__}, {age}, {kept})")
    return OK


async def _invalidate(cache: Cache, out: Output, args: argparse.Namespace) -> int:
    what = f"tag {args.tag!r}" if args.tag is not None else f"pattern {args.pattern!r}"
    nothing = f"nothing matches {what} in {_where(cache)}: nothing deleted"
    if not args.yes:
        if args.tag is not None:
            count = len(await cache.tag_members(args.tag))
        else:
            count = len(await cache.keys(args.pattern, limit=COUNT_CAP))
        if count == 0:  # nothing to confirm: asking "Delete 0 key(s)?" helps nobody
            out.result({"removed": 0, "declined": False}, "")
            out.note(nothing)
            return NOT_FOUND
        out.err.write(f"Delete {count} key(s) matching {what} in {_where(cache)}? [y/N] ")
        out.err.flush()
        answer = sys.stdin.readline().strip().lower()
        if answer not in ("y", "yes"):
            out.result({"removed": 0, "declined": True}, "nothing deleted")
            return NOT_FOUND
    if args.tag is not None:
        removed = await cache.invalidate_tags(args.tag)
    else:
        removed = await cache.invalidate_pattern(args.pattern)
    if removed == 0:  # a wrong namespace or pattern must not pass for success in a script
        out.result({"removed": 0, "declined": False}, "")
        out.note(nothing)
        return NOT_FOUND
    out.result({"removed": removed, "declined": False}, f"deleted {removed} key(s)")
    return OK


def _presets(out: Output) -> int:
    rows: dict[str, Any] = {}
    lines = [f"{'preset':<16}{'ttl s':>7}{'memory':>8}{'compress':>10}{'level':>7}  AI"]
    for name, p in PRESET_VALUES.items():
        ops = dict(p.operation_ttls)
        rows[name] = {
            "enabled": p.enabled,
            "default_ttl": p.default_ttl if p.enabled else None,
            "memory_cache_size": p.memory_cache_size if p.enabled else None,
            "compression_threshold": p.compression_threshold if p.enabled else None,
            "compression_level": p.compression_level if p.enabled else None,
            "text_hash_threshold": p.text_hash_threshold,
            "operation_ttls": ops,
        }
        if not p.enabled:
            lines.append(f"{name:<16}{'caching off (NullCache)':>32}")
            continue
        ai = "no"
        if p.ai:
            ai = f"hash > {p.text_hash_threshold} chars; " + ", ".join(
                f"{op} {ttl}" for op, ttl in ops.items()
            )
        lines.append(
            f"{name:<16}{p.default_ttl:>7}{p.memory_cache_size:>8}"
            f"{p.compression_threshold:>10}{p.compression_level:>7}  {ai}"
        )
    out.result(rows, "\n".join(lines))
    return OK


async def _top(cache: Cache, out: Output, args: argparse.Namespace) -> int:
    try:
        from memo._top import run_top
    except ImportError:  # rich is missing
        out.note('memo top draws with rich: pip install "memo[top]"')
        return USAGE
    return await run_top(cache, out.out, iterations=args.iterations, interval=args.interval)


_COMMANDS = {
    "top": _top,
    "health": _health,
    "stats": _stats,
    "keys": _keys,
    "get": _get,
    "invalidate": _invalidate,
}


async def _run(args: argparse.Namespace, out: Output) -> int:
    cache = _build(args)
    cache.reporting.interval = 0  # the CLI reads the fleet's figures; it is not a member
    try:
        if args.command != "health":
            # A health check reports an outage itself, and does not fail.
            remote = cache.remote_server()
            if remote is None:
                out.note(f"{_NO_URL}; using {_where(cache)}")
            else:
                # Raises the error that says why (refused credentials, no answer, too
                # slow); connect() would report a slow server as one that does not answer.
                await remote.check()
            await cache.connect()
        return await _COMMANDS[args.command](cache, out, args)
    except BackendError as exc:
        out.note(_failure(cache, exc))
        return UNAVAILABLE
    finally:
        await cache.aclose()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``memo`` command; return its exit code."""
    args = _parser().parse_args(argv)
    out = Output(args.json, sys.stdout, sys.stderr)
    if args.command == "presets":
        return _presets(out)
    try:
        return asyncio.run(_run(args, out))
    except ConfigError as exc:
        out.note(str(exc))
        return USAGE
    except KeyboardInterrupt:
        if args.command == "top":
            return OK  # Ctrl-C is how a live view ends
        out.note("interrupted")
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
