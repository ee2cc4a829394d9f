"""Concurrent writes of one event loop go to Redis together, as one pipeline.

Each write used to be its own round trip (one EVALSHA of the announcing script, or a
plain SET): a burst of writes (a cold start, a fan-out of stores) queued on the
connection pool and could miss the deadline. As with reads and lease scripts (the
mechanism is _batching.py), a lone write goes out at once, exactly as before;
writes made while one is in flight join the next batch: announced, one script that sets
them all and publishes one message naming every key (one message for every listening
process to decode, not one per key), applied by Redis whole or not at all; otherwise one
pipeline of SETs. Each write gets its own reply: one refused by the server fails alone.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from memo.backends._announce import ScriptCall, WriteAnnouncer, run_script_calls
from memo.backends._batching import Call, CallBatcher
from memo.backends._redis_errors import translate_error

__all__ = ["WriteBatcher"]

# KEYS: the entries. ARGV: channel, message, then (ttl ms, value) per entry. Replies one
# status per write ('OK' or its error) and PUBLISH's status last.
_SETS_AND_ANNOUNCE = """
local replies = {}
for i = 1, #KEYS do
  local r = redis.pcall('SET', KEYS[i], ARGV[2 + 2 * i], 'PX', ARGV[1 + 2 * i])
  if type(r) == 'table' and r.err then replies[i] = r.err else replies[i] = 'OK' end
end
local sent = redis.pcall('PUBLISH', ARGV[1], ARGV[2])
if type(sent) == 'table' and sent.err then replies[#KEYS + 1] = sent.err
else replies[#KEYS + 1] = 'OK' end
return replies
"""


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


#: Runs a command under the backend's deadline, breaker and error translation.
Runner = Callable[[str, Callable[[Redis], Awaitable[Any]]], Awaitable[Any]]

#: Writes per round trip: a larger burst goes as several, one after the other.
MAX_BATCH = 1000


class WriteBatcher:
    """A backend's ``set``: alone when nothing is in flight, else in the next batch.

    Args:
        announcer: sends the lone write (announced or not) and says whether to announce.
        run: the backend's runner (deadline, breaker, error translation), one per batch.
        set_one: sends a lone, unannounced SET on the client it is given.
        where: the server's masked URL, for the error of a write refused in a batch.
        scrub: removes the password from the server's text.
        timeout: the operation deadline, named in translated errors.
        slot_of: a key's cluster slot, on a cluster (one script touches one slot, so an
            announced batch goes as one script per slot, pipelined); None elsewhere.
    """

    def __init__(
        self,
        announcer: WriteAnnouncer,
        run: Runner,
        *,
        set_one: Callable[[Redis, str, bytes, int], Awaitable[None]],
        where: str,
        scrub: Callable[[str], str],
        timeout: float,
        slot_of: Callable[[str], int] | None = None,
    ) -> None:
        self._slot_of = slot_of
        self._announcer = announcer
        self._run = run
        self._set_one = set_one
        self._where = where
        self._scrub = scrub
        self._timeout = timeout
        self._batcher = CallBatcher(self._send, max_batch=MAX_BATCH)

    def forget_after_fork(self) -> None:
        self._batcher.forget_after_fork()

    async def set(self, key: str, value: bytes, ttl_ms: int) -> None:
        reply = await self._batcher.call((key,), (value, ttl_ms))
        if isinstance(reply, Exception):  # this write alone was refused
            error, _ = translate_error(
                reply, what="SET", where=self._where, scrub=self._scrub, timeout=self._timeout
            )
            raise error from reply

    async def _send(self, calls: list[Call]) -> list[Any]:
        announcer = self._announcer
        await announcer.count_if_due()
        if len(calls) == 1:  # alone: today's single command, the script when announcing
            ((key,), (value, ttl_ms)) = calls[0]
            if not announcer.announcing():
                await self._run("SET", lambda c: self._set_one(c, key, value, ttl_ms))
            else:
                await self._run("SET+PUBLISH", lambda c: announcer.set(c, key, value, ttl_ms))
            return [None]
        what = "SET (batched)"
        replies: list[Any] = await self._run(what, lambda c: self._pipeline(c, calls))
        return replies

    async def _pipeline(self, c: Redis, calls: list[Call]) -> list[Any]:
        """The SETs of ``calls`` (and the PUBLISH of their keys when announcing) in one
        round trip; per write None, or the server's error for that write alone.

        Announced, they go as one script, so that Redis applies them and the
        announcement together or not at all: a pipeline cut short by the deadline could
        leave writes applied whose PUBLISH never went, and other processes' memory tiers
        holding what they replaced. Pipelined only where the server refuses scripts."""
        announcer = self._announcer
        announcing = announcer.announcing()  # read once: the PUBLISH is sent or not for all
        if announcing and announcer.scripts_allowed and self._slot_of is not None:
            return await self._per_slot(c, calls)
        if announcing and announcer.scripts_allowed:
            keys = [key for (key,), _ in calls]
            args: list[Any] = [announcer.channel, announcer.keys_message(keys)]
            for _, (value, ttl_ms) in calls:
                args += (ttl_ms, value)
            try:
                reply = await announcer.script(c, _SETS_AND_ANNOUNCE, keys, args)
            except ResponseError:
                # The server refused the script as a whole (an ACL denying one of its
                # keys, say): each write goes alone, so that only the refused one fails.
                return [await self._alone(c, call) for call in calls]
            if reply is not None:
                *written, published = reply
                if published not in (b"OK", "OK"):
                    announcer.refused(ResponseError(_text(published)))
                return [None if r in (b"OK", "OK") else ResponseError(_text(r)) for r in written]
        async with c.pipeline(transaction=False) as pipe:
            for (key,), (value, ttl_ms) in calls:
                # Not pipe.set(): its keyword handling cost 2 µs of about 28 a write.
                pipe.execute_command("SET", key, value, "PX", ttl_ms)
            if announcing:
                keys = [key for (key,), _ in calls]
                pipe.execute_command("PUBLISH", announcer.channel, announcer.keys_message(keys))
            results: list[Any] = await pipe.execute(raise_on_error=False)
        if announcing:
            published = results.pop()
            if isinstance(published, Exception):  # refused (an ACL): announcing stops, once
                announcer.refused(published)
        return [result if isinstance(result, Exception) else None for result in results]

    async def _per_slot(self, c: Redis, calls: list[Call]) -> list[Any]:
        """Announced writes on a cluster: one script per slot (its writes and the
        announcement of their keys), all pipelined; per write None or its error."""
        assert self._slot_of is not None
        announcer = self._announcer
        groups: dict[int, list[int]] = {}
        for i, ((key,), _) in enumerate(calls):
            groups.setdefault(self._slot_of(key), []).append(i)
        scripted: list[ScriptCall] = []
        for members in groups.values():
            keys = [calls[i][0][0] for i in members]
            args: list[Any] = [announcer.channel, announcer.keys_message(keys)]
            for i in members:
                value, ttl_ms = calls[i][1]
                args += (ttl_ms, value)
            scripted.append((keys, args))
        replies = await run_script_calls(
            c, _SETS_AND_ANNOUNCE, scripted, refused=announcer.scripts_refused
        )
        results: list[Any] = [None] * len(calls)
        for members, reply in zip(groups.values(), replies, strict=True):
            if isinstance(reply, Exception):
                for i in members:
                    results[i] = reply
                continue
            *written, published = reply
            if published not in (b"OK", "OK"):
                announcer.refused(ResponseError(_text(published)))
            for i, r in zip(members, written, strict=True):
                results[i] = None if r in (b"OK", "OK") else ResponseError(_text(r))
        return results

    async def _alone(self, c: Redis, call: Call) -> Any:
        """One write, announced, on its own: None, or the server's error for it."""
        (key,), (value, ttl_ms) = call
        try:
            await self._announcer.set(c, key, value, ttl_ms)
        except ResponseError as exc:
            return exc
        return None
