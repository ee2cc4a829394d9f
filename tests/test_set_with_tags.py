"""``cache.set(key, value, tags=...)``: a value set by hand joins its tags as a decorated
call's result does; on Redis value and tags are one server-side step."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from memo import GenericRedisCache, InMemoryCache
from memo.exceptions import BackendError, ConfigError
from tests.redis_harness import RedisServer


async def test_a_value_set_with_tags_goes_with_them_in_memory() -> None:
    cache = InMemoryCache()
    await cache.set("page:1", "one", tags=("item:1", "pages"))
    await cache.set("page:2", "two", tags="item:2")
    assert await cache.invalidate_tags("item:1") == 1
    assert (await cache.get("page:1"), await cache.get("page:2")) == (None, "two")
    assert await cache.invalidate_tags("item:2") == 1


async def test_on_redis_the_tags_live_in_the_servers_tag_sets(redis_server: RedisServer) -> None:
    writer, other = GenericRedisCache(redis_server.url), GenericRedisCache(redis_server.url)
    try:
        await writer.set("page:1", {"html": "<p>1</p>"}, ttl=60, tags=("item:1",))
        server = redis.Redis.from_url(redis_server.url)
        tag_sets = [k for k in server.keys("memo:default:__tagset__:*")]
        assert len(tag_sets) == 1
        assert server.zrange(tag_sets[0], 0, -1) == [b"memo:default:page:1"]
        assert await other.invalidate_tags("item:1") == 1  # another process, say
        assert await writer.get("page:1") is None
        assert server.exists("memo:default:page:1") == 0
    finally:
        await writer.aclose()
        await other.aclose()


async def test_a_tag_must_be_a_non_empty_str() -> None:
    cache = InMemoryCache()
    with pytest.raises(ConfigError, match="each tag is a non-empty str"):
        await cache.set("k", 1, tags=("",))
    with pytest.raises(ConfigError, match="each tag is a non-empty str"):
        await cache.set("k", 1, tags=(42,))  # type: ignore[arg-type]


async def test_a_tagged_set_overtaken_by_its_tags_invalidation_leaves_no_older_value(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The invalidation lands between the set's lease and its store (another process, in
    real life): the store is refused by Redis, and the value it was replacing, older
    than the invalidation, must not stay either."""
    cache, other = GenericRedisCache(redis_server.url), GenericRedisCache(redis_server.url)
    try:
        await cache.set("k", "OLD", ttl=60)
        real_store = cache.leasing.store

        async def invalidated_first(*args: Any, **kwargs: Any) -> bool:
            await other.invalidate_tags("A")
            return await real_store(*args, **kwargs)

        monkeypatch.setattr(cache.leasing, "store", invalidated_first)
        await cache.set("k", "NEW", ttl=60, tags=("A",))
        assert await other.get("k") is None
        assert redis_server.client().exists("memo:default:k") == 0
    finally:
        await cache.aclose()
        await other.aclose()


async def test_a_strict_cache_raises_when_the_tagged_store_fails(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = GenericRedisCache(
        redis_server.url, fail_on_connection_error=True, operation_timeout=0.2
    )
    try:
        await cache.connect()
        real_store = cache.leasing.store

        async def paused_first(*args: Any, **kwargs: Any) -> bool:
            redis_server.pause()  # the server stops answering after the lease was taken
            try:
                return await real_store(*args, **kwargs)
            finally:
                redis_server.resume()

        monkeypatch.setattr(cache.leasing, "store", paused_first)
        with pytest.raises(BackendError):
            await cache.set("k", "v", ttl=60, tags=("A",))
    finally:
        await cache.aclose()
