"""HTTP caching: through a real uvicorn server and httpx, and in process for the details."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
import xxhash
from fastapi import Depends, FastAPI, Header, HTTPException, Response
from fastapi.responses import StreamingResponse

import memo
from examples import fastapi_app
from memo import InMemoryCache
from memo.cache import Cache
from memo.exceptions import ConfigError
from memo.integrations.fastapi import cache_lifespan, get_web_cache_service
from memo.integrations.http_cache import PAGE_PREFIX, CacheRule, HTTPCacheMiddleware
from memo.testing import FakeClock
from tests._asgi import running as in_process

ROOT = Path(__file__).resolve().parent.parent
PAGE_KEY = re.compile(r"http:[A-Za-z0-9_.%-]+:[0-9a-f]{32}")


def strong_etag(body: bytes) -> str:
    return f'"{xxhash.xxh3_128_hexdigest(body)}"'


def make_app(cache: Cache | None = None) -> tuple[FastAPI, Counter[str]]:
    """An app whose handlers count their runs; pages in ``cache`` (None: the app's web
    cache, reached by the admin endpoints through the FastAPI dependency)."""
    runs: Counter[str] = Counter()
    app = FastAPI(lifespan=cache_lifespan)
    rules = [
        CacheRule("/items/{item_id}", ttl=60, tags=("item:{item_id}",), vary=("Accept-Language",)),
        CacheRule("/cookie"),
        CacheRule("/missing/{n}"),
        CacheRule("/errors/{n}", cache_errors=True),
        CacheRule("/private"),
        CacheRule("/gzip"),
        CacheRule("/stream"),
        CacheRule("/search", max_age=0),
        CacheRule("/me", vary=("Authorization",)),
        CacheRule("/files/{name:path}", name="files"),
    ]
    app.add_middleware(HTTPCacheMiddleware, rules=rules, cache=cache)

    @app.get("/items/{item_id}")
    async def read_item(item_id: int, accept_language: str = Header("en")) -> dict[str, Any]:
        runs["item"] += 1
        return {"id": item_id, "lang": accept_language, "run": runs["item"]}

    @app.post("/items/{item_id}")
    async def post_item(item_id: int) -> dict[str, Any]:
        runs["post"] += 1
        return {"id": item_id, "posted": runs["post"]}

    @app.get("/cookie")
    async def cookie(response: Response) -> dict[str, int]:
        runs["cookie"] += 1
        response.set_cookie("session", "abc")
        return {"run": runs["cookie"]}

    @app.get("/missing/{n}")
    async def missing(n: int) -> None:
        runs["missing"] += 1
        raise HTTPException(404, "no such thing")

    @app.get("/errors/{n}")
    async def errors(n: int) -> None:
        runs["errors"] += 1
        raise HTTPException(404, "no such thing either")

    @app.get("/private")
    async def private(response: Response) -> dict[str, int]:
        runs["private"] += 1
        response.headers["Cache-Control"] = "private, max-age=30"
        return {"run": runs["private"]}

    @app.get("/gzip")
    async def gzip(response: Response) -> dict[str, int]:
        runs["gzip"] += 1
        response.headers["Vary"] = "Accept-Encoding"
        return {"run": runs["gzip"]}

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        runs["stream"] += 1

        async def chunks() -> AsyncIterator[bytes]:
            yield b"one,"
            yield b"two"

        return StreamingResponse(chunks(), media_type="text/plain")

    @app.get("/search")
    async def search(q: list[str] | None = None) -> dict[str, Any]:
        runs["search"] += 1
        return {"q": q, "run": runs["search"]}

    @app.get("/me")
    async def me(authorization: str = Header("")) -> dict[str, Any]:
        runs["me"] += 1
        return {"who": authorization, "run": runs["me"]}

    @app.get("/files/{name:path}")
    async def files(name: str) -> dict[str, Any]:
        runs["files"] += 1
        return {"name": name}

    @app.post("/admin/tags/{tag}")
    async def drop_tag(tag: str, web: Cache = Depends(get_web_cache_service)) -> int:
        return await (cache or web).invalidate_tags(tag)

    @app.post("/admin/pattern")
    async def drop_pattern(web: Cache = Depends(get_web_cache_service)) -> int:
        return await (cache or web).invalidate_pattern(PAGE_PREFIX + "*")

    @app.get("/admin/keys")
    async def keys(web: Cache = Depends(get_web_cache_service)) -> list[str]:
        return await (cache or web).keys(PAGE_PREFIX + "*")

    return app, runs


@contextmanager
def serving(app: FastAPI) -> Iterator[httpx.Client]:
    """``app`` behind a real uvicorn server on a free loopback port, and a client on it."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, lifespan="on", log_level="warning", ws="none", http="h11")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        while not server.started:  # polling for the start is the only wait
            if not thread.is_alive():
                raise RuntimeError("uvicorn stopped before it started serving")
            time.sleep(0.01)
        base = f"http://127.0.0.1:{sock.getsockname()[1]}"
        with httpx.Client(base_url=base) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join()
        sock.close()


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The app's web cache in memory, or in a real Redis (``CACHE_REDIS_URL``)."""
    if request.param == "redis":
        monkeypatch.setenv("CACHE_REDIS_URL", request.getfixturevalue("redis_server").url)
    return str(request.param)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def cache(clock: FakeClock) -> AsyncIterator[InMemoryCache]:
    c = InMemoryCache(clock=clock, default_ttl=60)
    yield c
    await c.aclose()


# ---------------------------------------------------------------- through uvicorn


def test_a_revalidation_with_the_etag_is_a_304_without_running_the_handler(
    backend: str,
) -> None:
    app, runs = make_app()
    with serving(app) as client:
        first = client.get("/items/1")
        assert 200 == first.status_code
        assert strong_etag(first.content) == first.headers["etag"]
        assert "public, max-age=60" == first.headers["cache-control"]
        assert "Accept-Language" == first.headers["vary"]

        again = client.get("/items/1", headers={"If-None-Match": first.headers["etag"]})
        assert 304 == again.status_code
        assert b"" == again.content
        assert first.headers["etag"] == again.headers["etag"]
        assert again.headers["cache-control"].startswith("public, max-age=")
        assert 1 == runs["item"]

        hit = client.get("/items/1")
        assert (200, first.content) == (hit.status_code, hit.content)
        assert "age" in hit.headers and 1 == runs["item"]
        stale = client.get("/items/1", headers={"If-None-Match": '"something-else"'})
        assert (200, first.content, 1) == (stale.status_code, stale.content, runs["item"])
        [key] = client.get("/admin/keys").json()
        assert PAGE_KEY.fullmatch(key) and key.startswith("http:items.item_id:")


def test_a_different_value_of_a_vary_header_is_a_different_entry(backend: str) -> None:
    app, runs = make_app()
    with serving(app) as client:
        english = client.get("/items/2", headers={"Accept-Language": "en"})
        french = client.get("/items/2", headers={"Accept-Language": "fr"})
        assert ("en", "fr") == (english.json()["lang"], french.json()["lang"])
        assert english.headers["etag"] != french.headers["etag"]
        assert 2 == runs["item"]
        assert english.json() == client.get("/items/2", headers={"Accept-Language": "en"}).json()
        assert french.json() == client.get("/items/2", headers={"Accept-Language": "fr"}).json()
        assert 2 == runs["item"]


def test_post_is_never_cached(backend: str) -> None:
    app, runs = make_app()
    with serving(app) as client:
        page = client.get("/items/3")
        posts = [client.post("/items/3") for _ in range(3)]
        assert [1, 2, 3] == [p.json()["posted"] for p in posts]
        assert all("etag" not in p.headers for p in posts)
        assert 3 == runs["post"]
        assert page.json() == client.get("/items/3").json()  # the GET page is untouched
        assert 1 == runs["item"]


def test_a_response_with_set_cookie_is_not_stored(backend: str) -> None:
    app, runs = make_app()
    with serving(app) as client:
        first = client.get("/cookie")
        second = client.get("/cookie")
        assert ({"run": 1}, {"run": 2}) == (first.json(), second.json())
        assert 2 == runs["cookie"]
        assert "session=abc" in second.headers["set-cookie"]
        assert "etag" not in first.headers and "cache-control" not in first.headers
        assert [] == client.get("/admin/keys").json()


def test_a_client_no_cache_runs_the_handler_and_replaces_the_page(backend: str) -> None:
    app, runs = make_app()
    with serving(app) as client:
        assert 1 == client.get("/items/4").json()["run"]
        fresh = client.get("/items/4", headers={"Cache-Control": "no-cache"})
        assert (2, 2) == (fresh.json()["run"], runs["item"])
        assert 2 == client.get("/items/4").json()["run"]  # the fresh response was stored
        older = client.get("/items/4", headers={"Pragma": "no-cache"})
        assert (3, 3) == (older.json()["run"], runs["item"])


def test_a_client_no_store_runs_the_handler_and_stores_nothing(backend: str) -> None:
    app, runs = make_app()
    with serving(app) as client:
        assert 1 == client.get("/items/5").json()["run"]
        private = client.get("/items/5", headers={"Cache-Control": "no-store"})
        assert (2, 2) == (private.json()["run"], runs["item"])
        assert "etag" not in private.headers
        assert 1 == client.get("/items/5").json()["run"]  # still the first page
        assert 2 == runs["item"]


def test_head_is_answered_from_the_get_page(backend: str) -> None:
    app, runs = make_app()
    with serving(app) as client:
        head = client.head("/items/6")  # a miss: runs the GET handler once
        assert (200, b"", 1) == (head.status_code, head.content, runs["item"])
        get = client.get("/items/6")
        assert 1 == runs["item"]
        assert head.headers["etag"] == get.headers["etag"] == strong_etag(get.content)
        assert str(len(get.content)) == head.headers["content-length"]
        again = client.head("/items/6")
        assert (200, b"", 1) == (again.status_code, again.content, runs["item"])
        assert "age" in again.headers
        revalidated = client.head("/items/6", headers={"If-None-Match": get.headers["etag"]})
        assert 304 == revalidated.status_code


def test_invalidating_a_tag_drops_that_items_pages_only(backend: str) -> None:
    app, runs = make_app()
    with serving(app) as client:
        client.get("/items/42", headers={"Accept-Language": "en"})
        client.get("/items/42", headers={"Accept-Language": "fr"})
        client.get("/items/7")
        assert 3 == runs["item"]
        assert 2 == client.post("/admin/tags/item:42").json()
        assert 4 == client.get("/items/42", headers={"Accept-Language": "en"}).json()["run"]
        assert 5 == client.get("/items/42", headers={"Accept-Language": "fr"}).json()["run"]
        assert 3 == client.get("/items/7").json()["run"]  # still cached
        assert 5 == runs["item"]


def test_invalidating_the_page_pattern_drops_every_page(backend: str) -> None:
    app, runs = make_app()
    with serving(app) as client:
        for n in (1, 2, 3):
            client.get(f"/items/{n}")
        assert 3 == len(client.get("/admin/keys").json())
        assert 3 == runs["item"]
        assert 3 == client.post("/admin/pattern").json()
        assert [] == client.get("/admin/keys").json()
        assert [4, 5, 6] == [client.get(f"/items/{n}").json()["run"] for n in (1, 2, 3)]


def test_errors_are_stored_only_when_the_rule_asks(backend: str) -> None:
    app, runs = make_app()
    with serving(app) as client:
        assert [404, 404] == [client.get("/missing/1").status_code for _ in range(2)]
        assert 2 == runs["missing"]
        kept = [client.get("/errors/1") for _ in range(2)]
        assert [404, 404] == [r.status_code for r in kept]
        assert kept[0].json() == kept[1].json() == {"detail": "no such thing either"}
        assert 1 == runs["errors"]
        assert "etag" not in kept[1].headers  # an error is no representation to revalidate
        star = client.get("/errors/1", headers={"If-None-Match": "*"})
        assert 404 == star.status_code  # preconditions apply to 2xx answers only


# ---------------------------------------------------------------- in process


async def test_age_and_max_age_follow_the_clock_and_the_page_expires_with_its_ttl(
    cache: InMemoryCache, clock: FakeClock
) -> None:
    app, runs = make_app(cache)
    async with in_process(app) as client:
        await client.get("/items/1")
        clock.advance(25)
        hit = await client.get("/items/1")
        assert ("25", "public, max-age=35") == (hit.headers["age"], hit.headers["cache-control"])
        assert 1 == runs["item"]
        clock.advance(35)
        assert 2 == (await client.get("/items/1")).json()["run"]


async def test_max_age_caps_what_clients_are_told(cache: InMemoryCache) -> None:
    app, runs = make_app(cache)
    async with in_process(app) as client:
        first = await client.get("/search")
        assert "public, max-age=0" == first.headers["cache-control"]
        second = await client.get("/search", headers={"If-None-Match": first.headers["etag"]})
        assert (304, 1) == (second.status_code, runs["search"])


async def test_the_query_is_keyed_sorted_by_name_with_each_names_values_in_order(
    cache: InMemoryCache,
) -> None:
    app, runs = make_app(cache)
    async with in_process(app) as client:
        await client.get("/search?q=a&x=1")
        await client.get("/search?x=1&q=a")
        assert 1 == runs["search"]
        await client.get("/search?q=a&q=b")
        await client.get("/search?q=b&q=a")
        assert 3 == runs["search"]


async def test_requests_with_authorization_pass_through_unless_the_rule_varies_on_it(
    cache: InMemoryCache,
) -> None:
    app, runs = make_app(cache)
    async with in_process(app) as client:
        for _ in range(2):
            await client.get("/items/1", headers={"Authorization": "Bearer a"})
        assert 2 == runs["item"] and [] == await cache.keys("http:*")

        alice = [await client.get("/me", headers={"Authorization": "a"}) for _ in range(2)]
        bob = await client.get("/me", headers={"Authorization": "b"})
        assert ("a", "a", "b") == tuple(r.json()["who"] for r in [*alice, bob])
        assert 2 == runs["me"]
        assert alice[0].headers["cache-control"].startswith("private, ")


async def test_responses_that_are_not_pages_pass_through_untouched(
    cache: InMemoryCache,
) -> None:
    app, runs = make_app(cache)
    async with in_process(app) as client:
        for _ in range(2):
            private = await client.get("/private")
            gzip = await client.get("/gzip")
            stream = await client.get("/stream")
        assert "private, max-age=30" == private.headers["cache-control"]
        assert "Accept-Encoding" == gzip.headers["vary"] and "etag" not in gzip.headers
        assert b"one,two" == stream.content
        assert (2, 2, 2) == (runs["private"], runs["gzip"], runs["stream"])
        head = await client.head("/stream")
        assert (200, b"") == (head.status_code, head.content)
        assert [] == await cache.keys("http:*")


async def test_keys_stay_safe_whatever_the_path(cache: InMemoryCache) -> None:
    app, runs = make_app(cache)
    async with in_process(app) as client:
        await client.get("/files/ünï cödé/*?[x]")
        await client.get("/files/ünï cödé/*?[x]")
        assert 1 == runs["files"]
        [key] = await cache.keys("http:*")
        assert PAGE_KEY.fullmatch(key) and key.startswith("http:files:")


async def test_bypass_and_disable_turn_pages_off(cache: InMemoryCache) -> None:
    app, runs = make_app(cache)
    async with in_process(app) as client:
        with memo.bypass():
            await client.get("/items/1")
        memo.disable()
        await client.get("/items/1")
        memo.enable()
        assert 2 == runs["item"] and [] == await cache.keys("http:*")


async def test_a_stored_value_that_is_not_a_page_is_a_miss(cache: InMemoryCache) -> None:
    app, runs = make_app(cache)
    async with in_process(app) as client:
        await client.get("/items/1")
        [key] = await cache.keys("http:*")
        await cache.set(key, {"not": "a page"})
        assert 2 == (await client.get("/items/1")).json()["run"]
        assert 2 == runs["item"]


def test_rules_are_checked_when_they_are_made() -> None:
    with pytest.raises(ConfigError, match="starting with '/'"):
        CacheRule("items/{item_id}")
    with pytest.raises(ConfigError, match="Unknown path convertor"):
        CacheRule("/items/{item_id:nope}")
    with pytest.raises(ConfigError, match=r"names \{user_id\}"):
        CacheRule("/items/{item_id}", tags=("user:{user_id}",))
    with pytest.raises(ConfigError, match="vary='\\*'"):
        CacheRule("/items", vary=("*",))
    with pytest.raises(ConfigError, match="request header name"):
        CacheRule("/items", vary=("Accept Language",))
    with pytest.raises(ConfigError, match="ttl=0"):
        CacheRule("/items", ttl=0)
    with pytest.raises(ConfigError, match="max_age"):
        CacheRule("/items", max_age=-1)
    with pytest.raises(ConfigError, match="at least one"):
        HTTPCacheMiddleware(FastAPI(), rules=[])
    assert "http:items.item_id:*" == CacheRule("/items/{item_id:int}").pattern
    assert "http:root:*" == CacheRule("/").pattern
    assert "http:catalog:*" == CacheRule("/items/{item_id}", name="catalog").pattern
    assert ("a", "b") == CacheRule("/x/{a}/{b}", tags=["a", "b"]).tags


async def test_the_example_drops_an_items_pages_when_it_is_updated() -> None:
    app = fastapi_app.create_app()
    catalog = app.state.catalog
    async with in_process(app) as client:
        english = await client.get("/items/3")
        assert english.json() == (await client.get("/items/3")).json()
        french = await client.get("/items/3", headers={"Accept-Language": "fr"})
        assert ("hello", "bonjour") == (english.json()["greeting"], french.json()["greeting"])
        assert 2 == catalog.renders
        assert {"id": 3, "pages_dropped": 2} == (await client.put("/items/3")).json()
        await client.get("/items/3")
        assert 3 == catalog.renders


@pytest.mark.slow
def test_without_fastapi_the_error_names_the_extra() -> None:
    code = (
        "import sys; sys.modules['fastapi'] = None\n"
        "try:\n    import memo.integrations.http_cache\n"
        "except ImportError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert 'pip install "memo[fastapi]"' in out.stdout
    assert "http_cache" in out.stdout
