"""Leases and tag sets in Redis: the server-side steps that keep many processes honest.

Each step is one Lua script, so it is atomic on the server and costs one round trip:

* ``acquire``: ``SET lease token NX PX ms``; a lease taken is also entered in the set of
  each tag the computation will store under, so that invalidating the tag voids it.
* ``renew``: extend a lease still the caller's (and its place in its tags' sets).
* ``store``: store the computed value only while the lease is still the caller's (a
  delete of the key, a pattern delete reaching it or an invalidation of one of its tags
  voided it otherwise) and the entry is still the version the computation replaced
  (absent, or the stale value it read, compared by the envelope's stamp, so a write by
  anyone in between wins); record tag membership in the same step (a sorted set per
  tag, scored by expiry, pruned of expired members as it is written) and announce it.
* ``invalidate_tag``: delete every member of a tag, void the members' leases and the
  leases of computations under way for it, drop the set, announce the entries: one
  command whatever the keyspace.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from redis.asyncio import Redis

from memo.backends._announce import WriteAnnouncer, run_script_calls
from memo.backends._batching import Call, CallBatcher
from memo.backends.base import LEASE_SUFFIX
from memo.exceptions import BackendError

__all__ = ["NOW_MS", "LeaseCommands"]

#: The server's clock in milliseconds, for scripts (they replicate by effects: TIME is
#: allowed).
NOW_MS = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""

# KEYS: the lease, the entry, then the sets of the computation's tags.
# ARGV: token, lease ms, stamp offset, stamp ('' = the caller read no entry), force ('1':
#       an explicit refresh, which takes the lease whoever holds it, whatever is stored).
# Replies 1 (taken), 0 (someone else holds it) or 2 (the entry is no longer what the caller
# read: a value was stored meanwhile, and it should read that instead of computing).
# The tag sets are written first: a script is not rolled back, and a lease must never
# exist without its place in its tags' sets.
_ACQUIRE = (
    NOW_MS
    + """
local force = ARGV[5] == '1'
local offset, stamp = tonumber(ARGV[3]), ARGV[4]
if force then
  -- whatever is there
elseif stamp == '' then
  if redis.call('EXISTS', KEYS[2]) == 1 then return 2 end
elseif redis.call('GETRANGE', KEYS[2], offset, offset + #stamp - 1) ~= stamp then
  return 2
end
local ms = tonumber(ARGV[2])
if not force and redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local until_ms = now_ms() + ms
for i = 3, #KEYS do
  redis.call('ZADD', KEYS[i], until_ms, KEYS[1])
  if redis.call('PTTL', KEYS[i]) < ms then redis.call('PEXPIRE', KEYS[i], ms) end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ms)
return 1
"""
)
_RENEW = (
    NOW_MS
    + """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local ms = tonumber(ARGV[2])
redis.call('PEXPIRE', KEYS[1], ms)
local until_ms = now_ms() + ms
for i = 2, #KEYS do
  redis.call('ZADD', KEYS[i], 'XX', until_ms, KEYS[1])
  if redis.call('PTTL', KEYS[i]) < ms then redis.call('PEXPIRE', KEYS[i], ms) end
end
return 1
"""
)
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
# KEYS: entry, lease, then the tags' sets.
# ARGV: token ('' = forced: no lease needed, any lease voided), value, ttl ms,
#       stamp offset (-1 = forced: whatever is stored), stamp ('' = the entry must be
#       absent), channel, message ('' = not announced).
_STORE = (
    NOW_MS
    + """
if ARGV[1] ~= '' and redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[2])
local offset = tonumber(ARGV[4])
local stamp = ARGV[5]
if offset < 0 then
  -- forced: an explicit refresh stores whatever is there
elseif stamp == '' then
  if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
elseif redis.call('GETRANGE', KEYS[1], offset, offset + #stamp - 1) ~= stamp then
  return 0
end
local ttl = tonumber(ARGV[3])
redis.call('SET', KEYS[1], ARGV[2], 'PX', ttl)
if #KEYS > 2 then
  local now = now_ms()
  for i = 3, #KEYS do
    redis.call('ZREM', KEYS[i], KEYS[2])
    redis.call('ZADD', KEYS[i], now + ttl, KEYS[1])
    redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now)
    if redis.call('PTTL', KEYS[i]) < ttl then redis.call('PEXPIRE', KEYS[i], ttl) end
  end
end
if ARGV[7] ~= '' then redis.pcall('PUBLISH', ARGV[6], ARGV[7]) end
return 1
"""
)
# KEYS: the tag's set. ARGV: lease suffix, channel, origin ('' = not announced).
_INVALIDATE_TAG = """
local members = redis.call('ZRANGE', KEYS[1], 0, -1)
redis.call('DEL', KEYS[1])
local suffix = ARGV[1]
local removed = 0
local entries = {}
for i = 1, #members, 500 do
  local chunk, voided = {}, {}
  for j = i, math.min(i + 499, #members) do
    local key = members[j]
    if string.sub(key, -#suffix) == suffix then
      voided[#voided + 1] = key
    else
      chunk[#chunk + 1] = key
      voided[#voided + 1] = key .. suffix
      entries[#entries + 1] = key
    end
  end
  if #chunk > 0 then
    removed = removed + redis.call('UNLINK', unpack(chunk))
    if ARGV[3] ~= '' then redis.pcall('PUBLISH', ARGV[2], cjson.encode({ARGV[3], 0, chunk})) end
  end
  redis.call('UNLINK', unpack(voided))
end
return {removed, entries}
"""


def _checked(what: str, reply: Any) -> Any:
    """A pipelined call's reply; its own error, as memo's, when the server refused it."""
    if isinstance(reply, Exception):
        raise BackendError(f"Redis {what} failed: {type(reply).__name__}: {reply}") from reply
    return reply


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


#: Runs a command under the backend's deadline, breaker and error translation.
Runner = Callable[[str, Callable[[Redis], Awaitable[Any]]], Awaitable[Any]]


class LeaseCommands:
    """A backend's lease and tag-set commands: the scripts above, loaded as needed, sent
    through the backend's ``run`` (deadline, breaker, error translation), lease
    acquisitions and stores of concurrent misses batched into shared round trips."""

    def __init__(
        self,
        announcer: WriteAnnouncer,
        run: Runner,
        *,
        lease_key: Callable[[str], str] = lambda key: key + LEASE_SUFFIX,
    ) -> None:
        self._announcer = announcer
        self._run = run
        self.lease_key = lease_key  # where a key's lease lives (beside it, on a cluster)
        self._acquires = CallBatcher(lambda calls: run("LEASE", self._many(_ACQUIRE, calls)))
        self._stores = CallBatcher(lambda calls: run("LEASED SET", self._many(_STORE, calls)))

    def forget_after_fork(self) -> None:
        self._acquires.forget_after_fork()
        self._stores.forget_after_fork()

    async def _one(self, c: Redis, script: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        reply = await self._announcer.script(c, script, keys, args)
        if reply is None:
            raise BackendError(
                "the server refuses scripts, so memo cannot take leases or keep tag sets "
                "there: allow EVALSHA and SCRIPT LOAD for memo's user"
            )
        return reply

    def _many(self, script: str, calls: list[Call]) -> Callable[[Redis], Awaitable[list[Any]]]:
        """Calls of ``script`` pipelined in one round trip; their replies, in order."""
        refused = self._announcer.scripts_refused
        return lambda c: run_script_calls(c, script, calls, refused=refused)

    async def acquire(
        self,
        key: str,
        token: str,
        lease_ms: int,
        tag_sets: Sequence[str],
        expect: tuple[int, bytes] | None,
    ) -> int:
        keys = [self.lease_key(key), key, *tag_sets]
        offset, stamp = expect if expect is not None else (-1, b"")
        force = "0" if expect is not None else "1"
        reply = await self._acquires.call(keys, (token, lease_ms, offset, stamp, force))
        return int(_checked("LEASE", reply))

    async def renew(self, key: str, token: str, lease_ms: int, tag_sets: Sequence[str]) -> bool:
        keys, args = [self.lease_key(key), *tag_sets], (token, lease_ms)
        return bool(await self._run("LEASE RENEW", lambda c: self._one(c, _RENEW, keys, args)))

    async def release(self, key: str, token: str) -> None:
        keys, args = [self.lease_key(key)], (token,)
        await self._run("LEASE RELEASE", lambda c: self._one(c, _RELEASE, keys, args))

    async def store(
        self,
        key: str,
        value: bytes,
        ttl_ms: int,
        token: str,
        expect: tuple[int, bytes],
        tag_sets: Sequence[str],
    ) -> bool:
        announcer = self._announcer
        await announcer.count_if_due()
        message = announcer.keys_message([key]) if announcer.announcing() else b""
        offset, stamp = expect
        keys = [key, self.lease_key(key), *tag_sets]
        args = (token, value, ttl_ms, offset, stamp, announcer.channel, message)
        return bool(_checked("LEASED SET", await self._stores.call(keys, args)))

    async def invalidate_tag(self, tag_set: str) -> tuple[int, list[str]]:
        announcer = self._announcer
        origin = announcer.origin if announcer.announcing() else ""
        args = (LEASE_SUFFIX, announcer.channel, origin)
        removed, entries = await self._run(
            "TAG INVALIDATE", lambda c: self._one(c, _INVALIDATE_TAG, [tag_set], args)
        )
        return int(removed), [_text(k) for k in entries]
