"""FastAPI dependencies and a lifespan for memo caches.

::

    from fastapi import Depends, FastAPI
    from memo import CacheInterface
    from memo.integrations.fastapi import cache_lifespan, get_web_cache_service

    app = FastAPI(lifespan=cache_lifespan)

    @app.get("/users/{user_id}")
    async def read_user(user_id: int, cache: CacheInterface = Depends(get_web_cache_service)):
        ...

Each application gets one web cache (``CacheFactory.for_web_app``) and one AI cache
(``CacheFactory.for_ai_app``), built at the first request that asks for it (under a
lock, so concurrent first requests build one) and kept on ``app.state``. Both take
their Redis URL from ``CACHE_REDIS_URL`` unless options say otherwise, and the AI cache
honours ``ENABLE_AI_CACHE``. Options for the factory methods are given with
``make_cache_lifespan(web={...}, ai={...})``. At shutdown the lifespan closes both, and
the caches ``@cached(preset=...)`` built (``memo.aclose_all()``).

The factory methods, rather than ``CACHE_PRESET``, decide these caches' figures: a
dependency named "web" or "AI" should give that kind of cache whatever preset the
decorators use. ``CacheFactory().from_env()`` is one line away for the other choice.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

try:
    from fastapi import FastAPI, Request
except ImportError as exc:  # pragma: no cover - exercised in a subprocess
    raise ImportError(
        'memo.integrations.fastapi needs FastAPI: pip install "memo[fastapi]"'
    ) from exc

from memo._slots import aclose_all
from memo.ai import AIResponseCache
from memo.cache import Cache
from memo.factory import CacheFactory

__all__ = [
    "AppCaches",
    "cache_lifespan",
    "get_ai_cache_service",
    "get_web_cache_service",
    "make_cache_lifespan",
]

_STATE_ATTRIBUTE = "memo_caches"

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[Any]]


class AppCaches:
    """The caches of one application, built on first use and closed together."""

    def __init__(
        self, web: Mapping[str, Any] | None = None, ai: Mapping[str, Any] | None = None
    ) -> None:
        self.web_options = dict(web or {})
        self.ai_options = dict(ai or {})
        self.web: Cache | None = None
        self.ai: AIResponseCache | None = None
        self._lock: asyncio.Lock | None = None

    def _locked(self) -> asyncio.Lock:
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    async def web_cache(self) -> Cache:
        if self.web is None:
            async with self._locked():
                if self.web is None:
                    self.web = await CacheFactory().for_web_app(**self.web_options)
        return self.web

    async def ai_cache(self) -> AIResponseCache:
        if self.ai is None:
            async with self._locked():
                if self.ai is None:
                    self.ai = await CacheFactory().for_ai_app(**self.ai_options)
        return self.ai

    async def aclose(self) -> None:
        caches = [c for c in (self.web, self.ai) if c is not None]
        self.web = self.ai = None
        for cache in caches:
            await cache.aclose()


def app_caches(app: Any) -> AppCaches:
    """The ``AppCaches`` of ``app`` (made on first use)."""
    caches = getattr(app.state, _STATE_ATTRIBUTE, None)
    if caches is None:
        caches = AppCaches()
        setattr(app.state, _STATE_ATTRIBUTE, caches)
    return caches


async def get_web_cache_service(request: Request) -> Cache:
    """Dependency: the application's web cache (Redis with a memory tier; in memory when
    no Redis URL is configured)."""
    return await app_caches(request.app).web_cache()


async def get_ai_cache_service(request: Request) -> AIResponseCache:
    """Dependency: the application's AI response cache."""
    return await app_caches(request.app).ai_cache()


def make_cache_lifespan(
    *,
    web: Mapping[str, Any] | None = None,
    ai: Mapping[str, Any] | None = None,
    inner: Lifespan | None = None,
) -> Lifespan:
    """A lifespan that configures the app's caches and closes them at shutdown.

    Args:
        web, ai: keyword arguments for ``CacheFactory.for_web_app`` / ``for_ai_app``.
        inner: the application's own lifespan, run inside this one (its shutdown runs
            before the caches close, so it can still use them).
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[Any]:
        caches = AppCaches(web, ai)
        setattr(app.state, _STATE_ATTRIBUTE, caches)
        try:
            if inner is None:
                yield None
            else:
                async with inner(app) as state:
                    yield state
        finally:
            await caches.aclose()
            await aclose_all()

    return lifespan


#: ``FastAPI(lifespan=cache_lifespan)``: default options, no inner lifespan.
cache_lifespan: Lifespan = make_cache_lifespan()
