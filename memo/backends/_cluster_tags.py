"""Tag sets on a Redis Cluster: each tag's set in a slot of its own.

On one server a script writes an entry and its tags' sets together (``_leases.py``). On a
cluster the set of a tag lives wherever its name hashes, so that a tag's members (and a
function's keys) still spread over every primary; no script can touch both. The order of
the steps keeps the promise instead:

* A computation enters its lease in its tags' sets *before* taking the lease, and its
  entry *before* the leased store. An invalidation reads the set, so whatever it does
  not void (the lease) it deletes (the entry), or it finds neither because the
  computation started after it had read the set, and then computed from new data.
* ``invalidate`` reads the set, deletes the members and voids their leases (grouped by
  slot, each group announced in the same script), and only then removes from the set
  the members it read, each only if its score (its expiry) is still the one it read: a
  member entered again meanwhile stays. A failure half-way raises and leaves the set as
  it was, so calling again finishes the job.

Members are scored by expiry and pruned as the set is written, as on one server.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from memo.backends._announce import WriteAnnouncer, run_script_calls
from memo.backends._batching import Call, CallBatcher
from memo.backends._cluster_keys import entry_of_lease
from memo.backends._leases import NOW_MS
from memo.exceptions import BackendError

__all__ = ["ClusterTagSets"]

# KEYS: a tag's set. ARGV: member (a lease), ms, '1' = only if already there (renewal).
_ENTER = (
    NOW_MS
    + """
local ms = tonumber(ARGV[2])
if ARGV[3] == '1' then
  redis.call('ZADD', KEYS[1], 'XX', now_ms() + ms, ARGV[1])
else
  redis.call('ZADD', KEYS[1], now_ms() + ms, ARGV[1])
end
if redis.call('PTTL', KEYS[1]) < ms then redis.call('PEXPIRE', KEYS[1], ms) end
return 1
"""
)
# KEYS: a tag's set. ARGV: the entry, its lease, ttl ms.
_RECORD = (
    NOW_MS
    + """
local now, ttl = now_ms(), tonumber(ARGV[3])
redis.call('ZREM', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
return 1
"""
)
# KEYS: a tag's set. ARGV: member, score, member, score ... as read: each removed only
# if its score is still that one.
_FORGET = """
local removed = 0
for i = 1, #ARGV, 2 do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    removed = removed + redis.call('ZREM', KEYS[1], ARGV[i])
  end
end
return removed
"""
_FORGET_CHUNK = 500  # members per _FORGET call

Runner = Callable[..., Awaitable[Any]]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class ClusterTagSets:
    """The tag-set steps of a cluster backend. ``run`` runs a command under the
    backend's deadline and breaker; ``unlink`` deletes keys with their leases, grouped
    by slot and announced."""

    def __init__(
        self,
        announcer: WriteAnnouncer,
        run: Runner,
        unlink: Callable[[Sequence[str]], Awaitable[int]],
    ) -> None:
        self._run = run
        self._unlink = unlink
        refused = announcer.scripts_refused

        def batched(script: str, what: str) -> CallBatcher:
            async def send(calls: list[Call]) -> list[Any]:
                replies: list[Any] = await run(
                    what, lambda c: run_script_calls(c, script, calls, refused=refused)
                )
                return replies

            return CallBatcher(send)

        self._enters = batched(_ENTER, "TAG ENTER")
        self._records = batched(_RECORD, "TAG RECORD")

    def forget_after_fork(self) -> None:
        self._enters.forget_after_fork()
        self._records.forget_after_fork()

    @staticmethod
    async def _all(calls: list[Awaitable[Any]], what: str) -> None:
        for reply in await asyncio.gather(*calls):
            if isinstance(reply, Exception):
                raise BackendError(f"Redis {what} failed: {type(reply).__name__}: {reply}")

    async def enter(
        self, tag_sets: Sequence[str], lease: str, lease_ms: int, *, renew: bool = False
    ) -> None:
        """Put ``lease`` in each tag's set (or, renewing, extend it where it still is)."""
        args = (lease, lease_ms, "1" if renew else "0")
        await self._all([self._enters.call((s,), args) for s in tag_sets], "TAG ENTER")

    async def record(self, tag_sets: Sequence[str], entry: str, lease: str, ttl_ms: int) -> None:
        """Put ``entry`` in each tag's set, in place of its lease."""
        args = (entry, lease, ttl_ms)
        await self._all([self._records.call((s,), args) for s in tag_sets], "TAG RECORD")

    async def invalidate(self, tag_set: str) -> tuple[int, list[str]]:
        """Delete the tag's entries and void the leases of its computations; how many
        entries were there, and which entries the set named."""
        read = await self._run(
            "TAG READ",
            # Scores as the server wrote them, to be compared with ZSCORE's own text.
            lambda c: c.zrange(tag_set, 0, -1, withscores=True, score_cast_func=_text),
            read=True,
        )
        pairs = [(_text(member), score) for member, score in read]
        # A lease member names its entry too: its computation may have stored since the
        # set was read (entering the entry in a set this read no longer sees), so the
        # entry goes with the lease, or the store is refused for want of it.
        entries = list(dict.fromkeys(entry_of_lease(m) for m, _ in pairs))
        removed = await self._unlink(entries) if entries else 0
        for start in range(0, len(pairs), _FORGET_CHUNK):
            args = [part for pair in pairs[start : start + _FORGET_CHUNK] for part in pair]
            (reply,) = await self._run(
                "TAG FORGET",
                lambda c, a=args: run_script_calls(
                    c, _FORGET, [((tag_set,), a)], refused=lambda: None
                ),
            )
            if isinstance(reply, Exception):
                raise BackendError(f"Redis TAG FORGET failed: {type(reply).__name__}: {reply}")
        return removed, entries
