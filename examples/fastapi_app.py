"""A FastAPI service using memo: dependency-injected caches, a decorated endpoint,
HTTP-cached pages and Prometheus metrics at ``/metrics``.

Serve it with an ASGI server, e.g. ``uvicorn examples.fastapi_app:app`` (uvicorn is not
a memo dependency). Without ``CACHE_REDIS_URL`` the caches live in process memory; with
it, in Redis with a memory tier in front.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import Depends, FastAPI, Header
from prometheus_client import make_asgi_app
from pydantic import BaseModel

from memo import AIResponseCache, CacheInterface, cached
from memo.cache import Cache
from memo.integrations.fastapi import (
    cache_lifespan,
    get_ai_cache_service,
    get_web_cache_service,
)
from memo.integrations.http_cache import CacheRule, HTTPCacheMiddleware
from memo.integrations.prometheus import register as register_metrics


class Database:
    """Stands in for a real database; counts its queries."""

    def __init__(self) -> None:
        self.queries = 0

    async def load_user(self, user_id: int) -> dict[str, Any]:
        self.queries += 1
        await asyncio.sleep(0)  # a real query awaits I/O here
        return {"id": user_id, "name": f"user-{user_id}"}


class SummarizeRequest(BaseModel):
    text: str
    options: dict[str, Any] = {}


class Model:
    """Stands in for an AI model; counts its (expensive) calls."""

    def __init__(self) -> None:
        self.calls = 0

    async def summarize(self, text: str, options: dict[str, Any]) -> dict[str, Any]:
        self.calls += 1
        limit = int(options.get("max_length", 40))
        return {"summary": text[:limit]}


class Catalog:
    """Stands in for a product catalog; counts how often a page had to be rendered."""

    def __init__(self) -> None:
        self.renders = 0

    def render(self, item_id: int, language: str) -> dict[str, Any]:
        self.renders += 1
        greeting = {"fr": "bonjour"}.get(language[:2], "hello")
        return {"id": item_id, "name": f"item-{item_id}", "greeting": greeting}


#: Item pages are cached whole, per language, and dropped with their item's tag.
ITEM_PAGES = CacheRule(
    "/items/{item_id}", ttl=300, tags=("item:{item_id}",), vary=("Accept-Language",)
)

REPORT_RUNS = [0]  # how many reports were computed, across applications


@cached(ttl=600, preset="simple", namespace="reports")
async def yearly_report(year: int, detailed: bool = False) -> dict[str, Any]:
    """An expensive report, cached in the process-wide ``simple`` preset cache."""
    REPORT_RUNS[0] += 1
    return {"year": year, "detailed": detailed, "total": year * 10}


def create_app() -> FastAPI:
    """One application, with its own database stand-in, model and caches."""
    app = FastAPI(lifespan=cache_lifespan)
    db = Database()
    model = Model()
    catalog = Catalog()
    app.state.db = db
    app.state.model = model
    app.state.catalog = catalog
    # Pages go to the app's web cache, the one get_web_cache_service gives endpoints.
    app.add_middleware(HTTPCacheMiddleware, rules=[ITEM_PAGES])
    # Prometheus scrapes /metrics: every memo cache of the process, read at each scrape.
    register_metrics()
    app.mount("/metrics", make_asgi_app())

    @app.get("/users/{user_id}")
    async def read_user(
        user_id: int, cache: CacheInterface = Depends(get_web_cache_service)
    ) -> dict[str, Any]:
        key = f"user:profile:{user_id}"
        profile = await cache.get(key)
        if profile is not None:
            return {**profile, "from_cache": True}
        profile = await db.load_user(user_id)
        await cache.set(key, profile, ttl=1800)
        return {**profile, "from_cache": False}

    @app.post("/summarize")
    async def summarize(
        request: SummarizeRequest, ai: AIResponseCache = Depends(get_ai_cache_service)
    ) -> dict[str, Any]:
        cached_response = await ai.get_cached_response(request.text, "summarize", request.options)
        if cached_response is not None:
            return {**cached_response, "from_cache": True}
        response = await model.summarize(request.text, request.options)
        await ai.cache_response(request.text, "summarize", request.options, response)
        return {**response, "from_cache": False}

    @app.get("/items/{item_id}")
    async def read_item(item_id: int, accept_language: str = Header("en")) -> dict[str, Any]:
        return catalog.render(item_id, accept_language)

    @app.put("/items/{item_id}")
    async def update_item(
        item_id: int, cache: Cache = Depends(get_web_cache_service)
    ) -> dict[str, Any]:
        # ... write the item, then drop its pages (every language) from the HTTP cache.
        return {"id": item_id, "pages_dropped": await cache.invalidate_tags(f"item:{item_id}")}

    # A decorated function as a path operation: FastAPI reads its original signature.
    app.get("/reports/{year}")(yearly_report)

    @app.get("/cache/health")
    async def cache_health(cache: CacheInterface = Depends(get_web_cache_service)) -> Any:
        return await cache.health_check()

    @app.get("/cache/stats")
    async def cache_stats(cache: CacheInterface = Depends(get_web_cache_service)) -> Any:
        return await cache.get_cache_stats()

    return app


app = create_app()
