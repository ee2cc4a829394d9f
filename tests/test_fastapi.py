"""The FastAPI integration and its example app, driven through httpx's ASGI transport."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import redis as sync_redis
from fastapi import Depends, FastAPI

import memo
from examples import fastapi_app
from memo import AIResponseCache, GenericRedisCache, InMemoryCache
from memo.integrations.fastapi import (
    app_caches,
    cache_lifespan,
    get_web_cache_service,
    make_cache_lifespan,
)
from tests._asgi import running

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def redis_url(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str | None:
    """None (memory) or a real server's URL, exported as CACHE_REDIS_URL."""
    if request.param == "memory":
        return None
    url: str = request.getfixturevalue("redis_server").url
    monkeypatch.setenv("CACHE_REDIS_URL", url)
    return url


@pytest.mark.slow
def test_without_fastapi_the_error_names_the_extra() -> None:
    code = (
        "import sys; sys.modules['fastapi'] = None\n"
        "try:\n    import memo.integrations.fastapi\n"
        "except ImportError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert 'pip install "memo[fastapi]"' in out.stdout


async def test_the_example_serves_the_second_request_from_the_cache(
    redis_url: str | None,
) -> None:
    app = fastapi_app.create_app()
    async with running(app) as client:
        first = (await client.get("/users/7")).json()
        second = (await client.get("/users/7")).json()
        assert (first["from_cache"], second["from_cache"]) == (False, True)
        assert first["name"] == second["name"] == "user-7"
        assert app.state.db.queries == 1
        cache = app_caches(app).web
        # With a URL, Redis with a memory tier; without one, memory only.
        assert isinstance(cache, GenericRedisCache) == (redis_url is not None)
        assert isinstance(cache, InMemoryCache) == (redis_url is None)
        if redis_url is not None:
            stored = sync_redis.Redis.from_url(redis_url).exists(cache.prefix + "user:profile:7")
            assert stored == 1

        stats = (await client.get("/cache/stats")).json()
        assert (stats["hits"], stats["misses"], stats["hit_ratio"]) == (1, 1, 0.5)
        health = (await client.get("/cache/health")).json()
        assert health["status"] == "healthy"
        metrics = (await client.get("/metrics/")).text
        label = f'cache="{cache.namespace}/{cache.backend.name}'
        hits = [line for line in metrics.splitlines() if line.startswith("memo_cache_hits_total{")]
        assert any(label in line and line.endswith(" 1.0") for line in hits), hits
    assert cache._closed  # shutdown closed it
    assert app_caches(app).web is None


async def test_the_ai_endpoint_uses_the_ai_cache(redis_url: str | None) -> None:
    app = fastapi_app.create_app()
    body = {"text": "A long report about caching. " * 30, "options": {"max_length": 20}}
    async with running(app) as client:
        first = (await client.post("/summarize", json=body)).json()
        second = (await client.post("/summarize", json=body)).json()
        assert (first["from_cache"], second["from_cache"]) == (False, True)
        assert first["summary"] == second["summary"] == body["text"][:20]
        assert app.state.model.calls == 1
        ai = app_caches(app).ai
        assert isinstance(ai, AIResponseCache)
        key = ai.build_key(body["text"], "summarize", body["options"])
        assert 7190 < (await ai.ttl(key) or 0) <= 7200  # for_ai_app's summarize TTL


async def test_a_decorated_path_function_keeps_its_signature_for_fastapi() -> None:
    app = fastapi_app.create_app()
    before = fastapi_app.REPORT_RUNS[0]
    async with running(app) as client:
        first = await client.get("/reports/2025", params={"detailed": "true"})
        again = await client.get("/reports/2025", params={"detailed": "true"})
        other = await client.get("/reports/2025")
        assert first.json() == again.json() == {"year": 2025, "detailed": True, "total": 20250}
        assert other.json()["detailed"] is False
        assert fastapi_app.REPORT_RUNS[0] - before == 2
        assert (await client.get("/reports/nope")).status_code == 422  # validated as an int
    assert memo._slots.built_caches() == []  # the lifespan closed the preset cache too


async def test_one_cache_per_application_built_once_under_concurrent_first_requests() -> None:
    seen: list[int] = []

    def make() -> FastAPI:
        app = FastAPI(lifespan=cache_lifespan)

        @app.get("/which")
        async def which(cache: Any = Depends(get_web_cache_service)) -> int:
            seen.append(id(cache))
            return id(cache)

        return app

    one, two = make(), make()
    async with running(one) as a, running(two) as b:
        answers = await asyncio.gather(*(a.get("/which") for _ in range(20)))
        other = (await b.get("/which")).json()
    ids = {r.json() for r in answers}
    assert len(ids) == 1 and other not in ids


async def test_factory_options_and_an_inner_lifespan() -> None:
    events: list[str] = []

    @asynccontextmanager
    async def own(app: FastAPI) -> AsyncIterator[None]:
        events.append("start")
        yield
        cache = app_caches(app).web
        events.append(f"stop, cache open: {cache is not None and not cache._closed}")

    app = FastAPI(
        lifespan=make_cache_lifespan(web={"default_ttl": 120, "namespace": "shop"}, inner=own)
    )

    @app.get("/ttl")
    async def ttl(cache: GenericRedisCache = Depends(get_web_cache_service)) -> list[Any]:
        return [cache.default_ttl_ms, cache.prefix]

    async with running(app) as client:
        assert (await client.get("/ttl")).json() == [120_000, "memo:shop:"]
    assert events == ["start", "stop, cache open: True"]


def test_the_dependencies_import_from_memo_itself() -> None:
    from memo import cache_lifespan as lifespan
    from memo import get_ai_cache_service, get_web_cache_service

    assert lifespan is cache_lifespan
    assert get_web_cache_service is memo.integrations.fastapi.get_web_cache_service
    assert callable(get_ai_cache_service)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        memo.nope  # noqa: B018
