"""Writes that announce themselves: a Redis write and the PUBLISH naming its keys.

A write and its announcement go as one command. Pipelined instead, announcing cost 91 µs
a write (median) over memo's unannounced SET; as a script, 23 to 46 µs in three runs
(benchmarks/redis_writes.py). PUBLISH goes through pcall, so that a server refusing it
(an ACL) still applies the write and says so in the reply. Where the server refuses
scripts, the write and the PUBLISH are pipelined; where it refuses PUBLISH, announcing
stops, once, with a warning that says what that costs and how to fix it.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoPermissionError, NoScriptError, ResponseError

from memo.backends._messages import encode_keys, encode_pattern, new_origin

__all__ = [
    "LISTENER_RECHECK",
    "ScriptCall",
    "WriteAnnouncer",
    "is_script_refusal",
    "run_script_calls",
    "script_sha1",
]

#: Seconds a count of no channel listeners lets writes go unannounced (see announcing).
LISTENER_RECHECK = 1.0

_log = logging.getLogger("memo")

# Both reply {what the write returned, 'OK' or PUBLISH's error}.
# Every script takes the channel and the message as ARGV[1] and ARGV[2].
_SET_AND_ANNOUNCE = """
redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
local sent = redis.pcall('PUBLISH', ARGV[1], ARGV[2])
if type(sent) == 'table' and sent.err then return {1, sent.err} end
return {1, 'OK'}
"""
# KEYS: the entries, then their leases (voided with them); ARGV[3]: how many entries.
_UNLINK_AND_ANNOUNCE = """
local n = tonumber(ARGV[3])
local entries, leases = {}, {}
for i = 1, #KEYS do
  if i <= n then entries[#entries + 1] = KEYS[i] else leases[#leases + 1] = KEYS[i] end
end
local removed = redis.call('UNLINK', unpack(entries))
if #leases > 0 then redis.call('UNLINK', unpack(leases)) end
local sent = redis.pcall('PUBLISH', ARGV[1], ARGV[2])
if type(sent) == 'table' and sent.err then return {removed, sent.err} end
return {removed, 'OK'}
"""
_SHA1: dict[str, str] = {}


def is_script_refusal(reply: object) -> bool:
    """Whether ``reply`` is the server refusing scripts themselves (an ACL without EVALSHA
    or SCRIPT), not a script refused something else (a key pattern, say)."""
    if not isinstance(reply, ResponseError):
        return False
    text = str(reply).lower()
    denied = isinstance(reply, NoPermissionError) or text.startswith("noperm")
    return denied and any(name in text for name in ("evalsha", "script", "eval"))


def script_sha1(script: str) -> str:
    """The SHA1 Redis names ``script`` by (computed once per script)."""
    sha = _SHA1.get(script)
    if sha is None:
        sha = _SHA1[script] = hashlib.sha1(script.encode()).hexdigest()
    return sha


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


#: One call of a script: its keys and its arguments.
ScriptCall = tuple[Sequence[str], Sequence[Any]]


async def run_script_calls(
    c: Any, script: str, calls: Sequence[ScriptCall], *, refused: Callable[[], None]
) -> list[Any]:
    """Calls of ``script`` pipelined in one round trip (on a cluster, one per node);
    their replies in order, each its own error or not. The server lacking the script
    (new or restarted) gets it loaded, and only the calls it refused are sent again: the
    others ran. ``refused`` is told when the server refuses scripts themselves.

    EVALSHA goes as a plain command: redis-py's cluster pipeline blocks ``evalsha()``
    but routes the command by its keys, which must share a slot."""
    sha = script_sha1(script)
    replies: list[Any] = [None] * len(calls)
    todo = list(range(len(calls)))
    for loaded in (False, True):
        async with c.pipeline(transaction=False) as pipe:
            for i in todo:
                keys, args = calls[i]
                pipe.execute_command("EVALSHA", sha, len(keys), *keys, *args)
            executed = await pipe.execute(raise_on_error=False)
            for i, reply in zip(todo, executed, strict=True):
                replies[i] = reply
        todo = [i for i in todo if isinstance(replies[i], NoScriptError)]
        if not todo:
            break
        if not loaded:
            await c.script_load(script)  # on a cluster, redis-py loads it on every primary
    if any(is_script_refusal(reply) for reply in replies):
        refused()
    return replies


class WriteAnnouncer:
    """Sends one backend's writes with their announcements on ``channel``.

    ``enabled`` is whether writes are announced at all; it turns False for good when the
    server refuses PUBLISH. ``origin`` marks this backend's messages (its own memory tier
    skips them) and is made again in a forked child.
    """

    def __init__(
        self,
        channel: str,
        *,
        enabled: bool,
        masked_url: str,
        scrub: Callable[[str], str],
        count_listeners: Callable[[], Awaitable[int]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.channel = channel
        self.enabled = enabled
        self.origin = new_origin()
        self._masked_url = masked_url
        self._scrub = scrub
        self._scripts = True  # until the server refuses EVALSHA
        self._count_listeners = count_listeners
        self._clock = clock
        self._unheard_until = 0.0  # writes go unannounced until then: nobody listened
        self._counted_until = 0.0  # no new count is asked for before then

    def announcing(self) -> bool:
        """Whether the next write is announced.

        Always, while ``enabled``, unless ``count_listeners`` is given (memory tiers are
        told by the server, ``_tracking.py``): then only while somebody listens on the
        channel. A count of none vouches for ``LISTENER_RECHECK`` seconds from when it
        was asked; past that, writes are announced again until a new count says none,
        so a listener subscribing now misses no write made after that long (it flushes
        its tier once more then: see ``InvalidationListener``)."""
        if not self.enabled:
            return False
        return self._count_listeners is None or self._clock() >= self._unheard_until

    async def count_if_due(self) -> None:
        """Count the channel's listeners if the last count is over ``LISTENER_RECHECK``
        seconds old: awaited by a write before it decides (one caller of the second
        pays the round trip; no task is left behind in a loop that ends)."""
        count = self._count_listeners
        if count is None or not self.enabled:
            return
        asked_at = self._clock()
        if asked_at < self._counted_until:
            return
        self._counted_until = asked_at + LISTENER_RECHECK  # the others do not ask too
        try:
            listeners = await count()
        except Exception:
            self._counted_until = 0.0
            return
        self._unheard_until = asked_at + LISTENER_RECHECK if listeners == 0 else 0.0

    @property
    def scripts_allowed(self) -> bool:
        """False once the server has refused EVALSHA (an ACL without scripts)."""
        return self._scripts

    def scripts_refused(self) -> None:
        """The server refused a script: pipeline from now on, and say so once."""
        if self._scripts:
            self._scripts = False
            _log.info("memo: scripts refused by Redis at %s; pipelining", self._masked_url)

    def new_origin(self) -> None:
        """In a forked child: siblings forked from one parent must not take each other's
        announcements for their own (and the parent's count of listeners is not ours)."""
        self.origin = new_origin()
        self._counted_until = self._unheard_until = 0.0

    def keys_message(self, keys: Sequence[str]) -> bytes:
        return encode_keys(self.origin, keys)

    def pattern_message(self, pattern: str) -> bytes:
        return encode_pattern(self.origin, pattern)

    async def set(self, c: Redis, key: str, value: bytes, ttl_ms: int) -> Any:
        """SET with PX, announced."""
        return await self._write(
            c, _SET_AND_ANNOUNCE, [key], (value, ttl_ms), lambda p: p.set(key, value, px=ttl_ms)
        )

    async def set_many(self, c: Redis, items: Mapping[str, bytes], ttl_ms: int) -> None:
        """SETs with PX, pipelined; announced (with one PUBLISH) when announcing."""
        async with c.pipeline(transaction=False) as pipe:
            for key, value in items.items():
                pipe.set(key, value, px=ttl_ms)
            if not self.announcing():
                await pipe.execute()
                return
            pipe.execute_command("PUBLISH", self.channel, self.keys_message(list(items)))
            await self.execute(pipe)

    async def unlink(self, c: Redis, keys: list[str], leases: list[str]) -> int:
        """UNLINK of ``keys`` and of ``leases`` (not counted), announced when announcing;
        how many of ``keys`` were there."""

        def pipelined(p: Any) -> None:
            p.unlink(*keys)
            p.unlink(*leases)

        if not self.announcing():
            async with c.pipeline(transaction=False) as pipe:
                pipelined(pipe)
                found, _ = await pipe.execute()
                return int(found)
        reply = await self._write(
            c, _UNLINK_AND_ANNOUNCE, [*keys, *leases], (len(keys),), pipelined, announced=keys
        )
        return int(reply)

    async def unlink_groups(self, c: Any, groups: Sequence[tuple[list[str], list[str]]]) -> int:
        """UNLINK on a cluster: each group is (entries, leases) of one slot, unlinked and
        announced by one script (the single-server ``unlink`` per slot), all pipelined;
        unannounced, or where scripts are refused, plain UNLINKs pipelined (and one
        PUBLISH). How many of the entries were there."""
        scripted = self.announcing() and self._scripts
        calls: list[ScriptCall] = []
        plain: list[tuple[bool, tuple[str, ...]]] = []  # (counted, command)
        for entries, leases in groups:
            if entries and scripted:
                message = self.keys_message(entries)
                calls.append(([*entries, *leases], (self.channel, message, len(entries))))
                continue
            if entries:
                plain.append((True, ("UNLINK", *entries)))
            if leases:
                plain.append((False, ("UNLINK", *leases)))
        removed = 0
        if calls:
            refused = self.scripts_refused
            for reply in await run_script_calls(c, _UNLINK_AND_ANNOUNCE, calls, refused=refused):
                if isinstance(reply, Exception):
                    raise reply
                removed += int(reply[0])
                if reply[1] not in (b"OK", "OK"):
                    self.refused(ResponseError(_text(reply[1])))
        if not plain:
            return removed
        announced = [k for entries, _ in groups for k in entries] if self.announcing() else []
        async with c.pipeline(transaction=False) as pipe:
            for _, command in plain:
                pipe.execute_command(*command)
            if announced and not scripted:
                pipe.execute_command("PUBLISH", self.channel, self.keys_message(announced))
                written = await self.execute(pipe)
            else:
                written = await pipe.execute()
        return removed + sum(
            int(w) for (counted, _), w in zip(plain, written, strict=True) if counted
        )

    async def _write(
        self,
        c: Redis,
        script: str,
        keys: list[str],
        args: tuple[Any, ...],
        write: Callable[[Any], object],
        *,
        announced: list[str] | None = None,
    ) -> Any:
        """One write of ``keys`` and its announcement of ``announced`` (default: the
        keys): one EVALSHA of ``script``, or, where scripts are refused, ``write`` and
        PUBLISH pipelined. The first write's reply."""
        message = self.keys_message(keys if announced is None else announced)
        if self._scripts:
            reply = await self.script(c, script, keys, (self.channel, message, *args))
            if reply is not None:
                result, status = reply
                if status not in (b"OK", "OK"):
                    self.refused(ResponseError(_text(status)))
                return result
        async with c.pipeline(transaction=False) as pipe:
            write(pipe)
            pipe.execute_command("PUBLISH", self.channel, message)
            return (await self.execute(pipe))[0]

    async def script(self, c: Redis, script: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """EVALSHA (loading the script when the server lacks it); None when scripts are
        refused (an ACL without them), after which this backend pipelines instead."""
        try:
            try:
                return await c.evalsha(script_sha1(script), len(keys), *keys, *args)
            except NoScriptError:
                await c.script_load(script)  # a new or restarted server
                return await c.evalsha(script_sha1(script), len(keys), *keys, *args)
        except ResponseError as exc:
            if not is_script_refusal(exc):
                raise
            self.scripts_refused()
            return None

    async def execute(self, pipe: Any) -> list[Any]:
        """Run a pipeline ending in PUBLISH; the writes' results. A refused PUBLISH (an
        ACL without it, say) does not fail the write: announcing stops, once, loudly."""
        results: list[Any] = await pipe.execute(raise_on_error=False)
        written, published = results[:-1], results[-1]
        for result in written:
            if isinstance(result, Exception):
                raise result
        if isinstance(published, Exception):
            self.refused(published)
        return written

    def refused(self, exc: Exception) -> None:
        """The server refused PUBLISH: stop announcing, and say so once."""
        if self.enabled:
            self.enabled = False
            _log.warning(
                "memo: Redis at %s refused PUBLISH on %s (%s): other processes' memory "
                "tiers will not hear of this process's writes and keep their copies for "
                "up to memory_max_ttl; allow PUBLISH on that channel, or set "
                "invalidation_channel=False where memory tiers are not shared",
                self._masked_url,
                self.channel,
                self._scrub(f"{type(exc).__name__}: {exc}"),
            )
