"""How decorated functions carry their helpers, and how methods bind them.

A plain function wrapper gets the helpers as attributes. An instance method is wrapped
in ``CachedMethod``, a descriptor: ``obj.method`` is a ``BoundCachedMethod`` whose
helpers know ``obj``, so that ``obj.method.invalidate(42)`` drops the entry of
``obj.method(42)``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from memo._plan import CallPlan
    from memo.cache import Cache

__all__ = [
    "BoundCachedMethod",
    "BoundCachedStreamMethod",
    "CachedMethod",
    "CachedStreamMethod",
    "attach_helpers",
]


def attach_helpers(target: Any, plan: CallPlan, leading: tuple[Any, ...] = ()) -> None:
    """Give a function-style wrapper its helper methods (``invalidate``, ``peek`` …)."""

    def key_for(*args: Any, **kwargs: Any) -> str:
        return plan.key_for(leading + args, kwargs)

    async def invalidate(*args: Any, **kwargs: Any) -> bool:
        return await plan.invalidate(leading + args, kwargs)

    async def refresh(*args: Any, **kwargs: Any) -> Any:
        return await plan.refresh(leading + args, kwargs)

    async def peek(*args: Any, **kwargs: Any) -> Any:
        return await plan.peek(leading + args, kwargs)

    target.key_for = key_for
    target.invalidate = invalidate
    target.refresh = refresh
    target.peek = peek
    target.invalidate_all = plan.invalidate_all
    target.stats = plan.stats.as_dict
    target._memo_plan = plan


class CachedMethod:
    """An instance method under ``@cached``: binds ``self`` for the call and the helpers."""

    def __init__(self, call: Callable[..., Coroutine[Any, Any, Any]], plan: CallPlan) -> None:
        self._call = call
        self._memo_plan = plan
        self.cache = plan.cache_handle()
        functools.update_wrapper(self, plan.func)

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        if instance is None:
            return self
        return BoundCachedMethod(self, instance)

    async def __call__(self, instance: Any, *args: Any, **kwargs: Any) -> Any:
        return await self._call(instance, *args, **kwargs)

    def key_for(self, instance: Any, *args: Any, **kwargs: Any) -> str:
        return self._memo_plan.key_for((instance, *args), kwargs)

    async def invalidate(self, instance: Any, *args: Any, **kwargs: Any) -> bool:
        return await self._memo_plan.invalidate((instance, *args), kwargs)

    async def refresh(self, instance: Any, *args: Any, **kwargs: Any) -> Any:
        return await self._memo_plan.refresh((instance, *args), kwargs)

    async def peek(self, instance: Any, *args: Any, **kwargs: Any) -> Any:
        return await self._memo_plan.peek((instance, *args), kwargs)

    async def invalidate_all(self) -> int:
        return await self._memo_plan.invalidate_all()

    def stats(self) -> dict[str, Any]:
        return self._memo_plan.stats.as_dict()

    def __repr__(self) -> str:
        return f"<cached method {self._memo_plan.func.__qualname__}>"


class BoundCachedMethod:
    """``obj.method`` for a cached instance method."""

    __slots__ = ("__self__", "_method")

    def __init__(self, method: CachedMethod, instance: Any) -> None:
        self._method = method
        self.__self__ = instance

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return await self._method._call(self.__self__, *args, **kwargs)

    @property
    def __func__(self) -> CachedMethod:
        return self._method

    @property
    def __wrapped__(self) -> Any:
        return self._method.__wrapped__.__get__(self.__self__)  # type: ignore[attr-defined]

    @property
    def cache(self) -> Cache:
        return self._method._memo_plan.cache_handle()  # type: ignore[no-any-return]

    def key_for(self, *args: Any, **kwargs: Any) -> str:
        return self._method.key_for(self.__self__, *args, **kwargs)

    async def invalidate(self, *args: Any, **kwargs: Any) -> bool:
        return await self._method.invalidate(self.__self__, *args, **kwargs)

    async def refresh(self, *args: Any, **kwargs: Any) -> Any:
        return await self._method.refresh(self.__self__, *args, **kwargs)

    async def peek(self, *args: Any, **kwargs: Any) -> Any:
        return await self._method.peek(self.__self__, *args, **kwargs)

    async def invalidate_all(self) -> int:
        return await self._method.invalidate_all()

    def stats(self) -> dict[str, Any]:
        return self._method.stats()

    def __repr__(self) -> str:
        name = self._method._memo_plan.func.__qualname__
        return f"<bound cached method {name} of {self.__self__!r}>"


class CachedStreamMethod(CachedMethod):
    """An instance method that is a stream (an async generator): calling it returns the
    stream at once, as calling the undecorated method would."""

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        if instance is None:
            return self
        return BoundCachedStreamMethod(self, instance)

    def __call__(self, instance: Any, *args: Any, **kwargs: Any) -> Any:
        return self._call(instance, *args, **kwargs)


class BoundCachedStreamMethod(BoundCachedMethod):
    """``obj.method`` for a cached stream method."""

    __slots__ = ()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._method._call(self.__self__, *args, **kwargs)
