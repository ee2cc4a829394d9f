"""Which Redis replies may still be copied into a memory tier.

A reply can be overtaken on its way: a read whose GET ran before a write (here or in
another process) may come back after that write's invalidation, and two writes of one
key may reach Redis in either order. Copying such a reply would keep the value just
replaced. So every change heard, every write of this process and every change of trust
leaves a mark here, and a reply may fill memory only if nothing marked its key since it
was asked for.

``generation`` moves when any key may be concerned (a pattern, a flush, trust lost or
regained); ``invalidated[key]`` is the ``sequence`` number of the last mark naming key;
``writing[key]`` counts this process's writes of key in flight; ``reading`` holds the
reads in flight.

A change heard while no read or write is in flight needs no mark: whatever is asked
afterwards is asked after the change, so its reply already carries it. That is the
common case for a tier hearing other processes' writes, and ``heard_one`` skips the
mark there (it runs for every invalidation a tracking tier hears).
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["Asked", "FillGuard"]

_REMEMBERED = 10_000  # keys whose last mark is remembered


class Asked:
    """A read in flight: the marks as they stood when it was asked for."""

    __slots__ = ("generation", "sequence")

    def __init__(self, generation: int, sequence: int) -> None:
        self.generation = generation
        self.sequence = sequence


class FillGuard:
    """The marks of one memory tier (see the module doc)."""

    def __init__(self) -> None:
        self.generation = 0
        self.sequence = 0
        self.invalidated: dict[str, int] = {}
        self.writing: dict[str, int] = {}
        # One token per read in flight (set operations hold under threads, a counter's
        # += would not): empty, no reply is on its way.
        self.reading: set[Asked] = set()

    def everything(self) -> None:
        """Any key may have changed: no reply under way may fill memory."""
        self.generation += 1

    def forget(self) -> None:
        """Forget every mark: safe only if every reply under way is refused too."""
        self.invalidated.clear()
        self.generation += 1

    def heard_one(self, key: str) -> None:
        """A change of ``key`` was heard: mark it if a reply or write may be overtaken."""
        if not self.reading and not self.writing:
            return  # nothing under way: see the module doc
        self.sequence += 1
        if len(self.invalidated) > _REMEMBERED:
            self.forget()
        self.invalidated[key] = self.sequence

    def mark(self, keys: Iterable[str]) -> int:
        """Replies under way for ``keys`` may not fill memory; the mark's number."""
        self.sequence += 1
        if len(self.invalidated) > _REMEMBERED:
            self.forget()
        for key in keys:
            self.invalidated[key] = self.sequence
        return self.sequence

    def heard(self, keys: Iterable[str]) -> None:
        """Changes of ``keys`` were heard: ``heard_one`` for each."""
        if self.reading or self.writing:
            self.mark(keys)

    def asked(self) -> Asked:
        """Taken when a read is asked for; ``may_fill`` compares against it. The read
        counts as in flight until ``answered`` (call it in a ``finally``)."""
        asked = Asked(self.generation, self.sequence)
        self.reading.add(asked)
        return asked

    def answered(self, asked: Asked) -> None:
        self.reading.discard(asked)

    def may_fill(self, key: str, asked: Asked) -> bool:
        return (
            asked.generation == self.generation
            and self.invalidated.get(key, 0) <= asked.sequence
            and key not in self.writing
        )

    # A write marks its keys when it starts and again when it ends (replies asked for
    # before the second mark do not fill memory), and may copy its own value only if
    # nothing else marked the key in between: no change heard, no other write from this
    # process, no pattern, no change of trust.

    def begin_write(self, keys: Iterable[str]) -> tuple[int, int]:
        mark = self.mark(keys)
        writing = self.writing
        for key in keys:
            writing[key] = writing.get(key, 0) + 1
        return mark, self.generation

    def end_write(self, keys: Iterable[str], begun: tuple[int, int], fills: bool) -> set[str]:
        """Close a write; the keys whose value it may copy (none unless ``fills``)."""
        mark, generation = begun
        writing, invalidated = self.writing, self.invalidated
        alone = fills and generation == self.generation
        fillable = set()
        for key in keys:
            if alone and invalidated.get(key) == mark and writing.get(key) == 1:
                fillable.add(key)
            left = writing.get(key, 1) - 1
            if left:
                writing[key] = left
            else:
                writing.pop(key, None)
        self.mark(keys)
        return fillable
