"""The static type of a decorated function: its own signature plus the helpers.

``@cached`` returns a ``CachedFunction[P, R]``: calls are checked against the original
parameters ``P`` (ParamSpec), and so are the helpers that take the same arguments. The
``__get__`` overloads let a type checker bind ``self`` when the decorated function is a
method, as it would for a plain function.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, Protocol, TypeVar, overload

if TYPE_CHECKING:
    from memo._sentinel import MissingType
    from memo.cache import Cache

__all__ = ["CacheDecorator", "CachedFunction", "CachedStream"]

P = ParamSpec("P")
P2 = ParamSpec("P2")
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)
S = TypeVar("S")


class CachedFunction(Protocol[P, R_co]):
    """An async function under ``@cached`` / ``@ai_cached``."""

    @property
    def __wrapped__(self) -> Callable[P, Coroutine[Any, Any, R_co]]: ...

    @property
    def cache(self) -> Cache: ...

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, R_co]: ...

    def key_for(self, *args: P.args, **kwargs: P.kwargs) -> str:
        """The key of this call, relative to the cache's prefix."""
        ...

    def invalidate(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, bool]:
        """Drop the entry of this call; True when there was one."""
        ...

    def refresh(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, R_co]:
        """Recompute this call and store the result."""
        ...

    def peek(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, R_co | MissingType]:
        """The cached value of this call, or ``MISSING``; never computes."""
        ...

    def invalidate_all(self) -> Coroutine[Any, Any, int]:
        """Drop every entry of this function; return how many."""
        ...

    def stats(self) -> dict[str, Any]:
        """This function's counters."""
        ...

    @overload
    def __get__(
        self, instance: None, owner: type[Any] | None = None
    ) -> CachedFunction[P, R_co]: ...
    @overload
    def __get__(
        self: CachedFunction[Concatenate[S, P2], R], instance: S, owner: type[Any] | None = None
    ) -> CachedFunction[P2, R]: ...


class CachedStream(Protocol[P, R_co]):
    """An async generator under ``@cached`` / ``@ai_cached``: a call is a stream of
    ``R_co`` chunks; ``peek`` and ``refresh`` give the stored list of chunks."""

    @property
    def cache(self) -> Cache: ...

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> AsyncIterator[R_co]: ...

    def key_for(self, *args: P.args, **kwargs: P.kwargs) -> str: ...

    def invalidate(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, bool]: ...

    def refresh(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, Sequence[R_co]]: ...

    def peek(
        self, *args: P.args, **kwargs: P.kwargs
    ) -> Coroutine[Any, Any, Sequence[R_co] | MissingType]: ...

    def invalidate_all(self) -> Coroutine[Any, Any, int]: ...

    def stats(self) -> dict[str, Any]: ...

    @overload
    def __get__(self, instance: None, owner: type[Any] | None = None) -> CachedStream[P, R_co]: ...
    @overload
    def __get__(
        self: CachedStream[Concatenate[S, P2], R], instance: S, owner: type[Any] | None = None
    ) -> CachedStream[P2, R]: ...


class CacheDecorator(Protocol):
    """What ``@cached(...)`` and ``@ai_cached(...)`` return: a decorator of an async
    function (a cached function) or of an async generator (a cached stream)."""

    @overload
    def __call__(self, func: Callable[P, AsyncIterator[R]], /) -> CachedStream[P, R]: ...
    @overload
    def __call__(self, func: Callable[P, Awaitable[R]], /) -> CachedFunction[P, R]: ...
