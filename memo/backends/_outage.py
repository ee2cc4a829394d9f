"""Which parts of a remote backend are out, and what a memory tier drops when one is back.

One server is out or not: a scope of ``""``, the whole remote. A cluster loses nodes one
at a time, and a lost node is an outage of the keys it serves only: its errors carry
the node as their scope (``BackendError.scope``) and ``Backend.outage_scope(key)`` says
which node a key's answer came from. While any part is out the memory tier is asked
after the remote and serves its copies of what the remote cannot answer; when a part
answers again, only that part's copies are dropped (other processes may have written
them meanwhile), and the copies of the nodes still out keep serving.
"""

from __future__ import annotations

from memo.backends.base import Backend
from memo.exceptions import BackendError

__all__ = ["EVERYTHING", "OutageScopes"]

#: ``answered``'s word for "drop every copy".
EVERYTHING = "*"


class OutageScopes:
    """The scopes of ``remote`` that are out (``""``: the whole remote, or a command
    that spans it)."""

    def __init__(self, remote: Backend) -> None:
        self.down: set[str] = set()
        self._remote = remote

    def failed(self, exc: BackendError | None) -> None:
        self.down.add("" if exc is None else exc.scope)

    def answered(self, key: str | None) -> str | None:
        """A command (of ``key``, or of none in particular) was answered: what the
        memory tier must drop now. None: nothing; ``EVERYTHING``; else a scope, whose
        keys are to be dropped."""
        down = self.down
        scope = "" if key is None else self._remote.outage_scope(key)
        if "" in down:  # out as a whole: any answer means it is back
            down.clear()
            return EVERYTHING
        if scope in down:
            down.discard(scope)
            return scope
        gone = {part for part in down if not self._remote.serves(part)}
        if gone:  # a node no longer in the remote (failed over): its keys moved
            down.difference_update(gone)
            return EVERYTHING
        return None
