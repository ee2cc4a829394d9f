"""@cached and @ai_cached: options, helpers, methods, switches."""

from __future__ import annotations

import asyncio
import inspect
import logging
from datetime import timedelta
from typing import Any

import pytest

import memo
from memo import MISSING, ConfigError, InMemoryCache, KeyDerivationError, ai_cached, cached
from memo.testing import FakeClock
from tests._counting import Counter


async def test_a_second_call_is_served_from_the_cache(cache: InMemoryCache) -> None:
    runs = Counter()

    @cached(ttl=60, cache=cache)
    async def get_user(user_id: int) -> dict[str, Any]:
        runs()
        return {"id": user_id, "name": "alice"}

    assert await get_user(1) == {"id": 1, "name": "alice"}
    assert await get_user(1) == {"id": 1, "name": "alice"}
    assert runs.calls == 1
    assert {k: get_user.stats()[k] for k in ("hits", "misses")} == {"hits": 1, "misses": 1}


async def test_a_value_expires_after_its_ttl(cache: InMemoryCache, clock: FakeClock) -> None:
    runs = Counter()

    @cached(ttl=10, cache=cache)
    async def load(x: int) -> int:
        return runs()

    assert await load(1) == 1
    clock.advance(9.999)
    assert await load(1) == 1
    clock.advance(0.001)
    assert await load(1) == 2


async def test_ttl_accepts_a_timedelta(cache: InMemoryCache, clock: FakeClock) -> None:
    runs = Counter()

    @cached(ttl=timedelta(minutes=1), cache=cache)
    async def load(x: int) -> int:
        return runs()

    await load(1)
    clock.advance(59)
    assert await load(1) == 1
    clock.advance(1)
    assert await load(1) == 2


async def test_ttl_none_uses_the_cache_default(clock: FakeClock) -> None:
    cache = InMemoryCache(clock=clock, default_ttl=5)
    runs = Counter()

    @cached(cache=cache)
    async def load(x: int) -> int:
        return runs()

    await load(1)
    clock.advance(4.9)
    assert await load(1) == 1
    clock.advance(0.1)
    assert await load(1) == 2


@pytest.mark.parametrize("bad", [0, -1, 366 * 24 * 3600, float("nan"), "60", True])
def test_an_out_of_range_ttl_is_refused_at_decoration(bad: object) -> None:
    with pytest.raises(ConfigError, match="ttl"):
        cached(ttl=bad)  # type: ignore[call-overload]


def test_decorating_a_plain_function_is_a_type_error_that_says_what_to_do() -> None:
    with pytest.raises(TypeError, match="async def"):

        @cached(ttl=60)
        def sync(x: int) -> int:
            return x


def test_cache_and_preset_together_are_a_type_error(cache: InMemoryCache) -> None:
    with pytest.raises(TypeError, match="not both"):
        cached(ttl=60, cache=cache, preset="simple")


def test_an_unknown_preset_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match="ai-production"):
        cached(ttl=60, preset="fastest")


async def test_bare_decorator_caches_with_the_default_cache() -> None:
    runs = Counter()

    @cached
    async def bare_default_example(x: int) -> int:
        return runs()

    assert await bare_default_example(1) == await bare_default_example(1)
    assert runs.calls == 1
    assert bare_default_example.cache.resolve() is memo.default_cache()


async def test_the_decorated_function_keeps_its_identity() -> None:
    @cached(ttl=60)
    async def documented(user_id: int, *, verbose: bool = False) -> int:
        """Docs survive."""
        return user_id

    assert documented.__name__ == "documented"
    assert documented.__doc__ == "Docs survive."
    assert inspect.iscoroutinefunction(documented)
    assert list(inspect.signature(documented).parameters) == ["user_id", "verbose"]
    assert await documented.__wrapped__(5) == 5


async def test_helpers_invalidate_refresh_peek_and_key_for(cache: InMemoryCache) -> None:
    runs = Counter()

    @cached(ttl=60, cache=cache)
    async def load(x: int) -> int:
        return runs()

    assert MISSING is await load.peek(1)
    assert await load(1) == 1
    assert await load.peek(1) == 1
    assert runs.calls == 1  # peek never computes
    assert load.key_for(1) == load.key_for(x=1)
    assert await cache.get(load.key_for(1)) == 1

    assert await load.refresh(1) == 2
    assert await load(1) == 2
    assert await load.invalidate(1) is True
    assert await load.invalidate(1) is False
    assert await load(1) == 3

    await load(2)
    assert await load.invalidate_all() == 2
    assert MISSING is await load.peek(1)
    assert MISSING is await load.peek(2)


async def test_invalidate_all_leaves_other_functions_alone(cache: InMemoryCache) -> None:
    @cached(ttl=60, cache=cache)
    async def one(x: int) -> int:
        return x

    @cached(ttl=60, cache=cache)
    async def one_more(x: int) -> int:
        return x

    await one(1)
    await one_more(1)
    await one.invalidate_all()

    assert MISSING is await one.peek(1)
    assert await one_more.peek(1) == 1


async def test_namespace_heads_the_key_and_groups_functions(cache: InMemoryCache) -> None:
    @cached(ttl=60, cache=cache, namespace="users")
    async def profile(user_id: int) -> str:
        return "p"

    @cached(ttl=60, cache=cache, namespace="users")
    async def settings(user_id: int) -> str:
        return "s"

    @cached(ttl=60, cache=cache)
    async def unrelated(user_id: int) -> str:
        return "u"

    await profile(1)
    await settings(1)
    await unrelated(1)

    assert profile.key_for(1).startswith("users:")
    assert await cache.invalidate_pattern("users:*") == 2
    assert await unrelated.peek(1) == "u"


async def test_version_separates_entries(cache: InMemoryCache) -> None:
    async def load(x: int) -> str:
        return "v"

    v1 = cached(ttl=60, cache=cache, version=1)(load)
    v2 = cached(ttl=60, cache=cache, version=2)(load)

    assert v1.key_for(1) != v2.key_for(1)
    await v1(1)
    assert MISSING is await v2.peek(1)


async def test_ignored_arguments_do_not_enter_the_key(cache: InMemoryCache) -> None:
    runs = Counter()

    @cached(ttl=60, cache=cache, ignore=("db",))
    async def load(user_id: int, db: object) -> int:
        return runs()

    assert await load(1, object()) == 1
    assert await load(1, object()) == 1


async def test_an_argument_without_a_stable_encoding_names_itself_and_the_way_out(
    cache: InMemoryCache,
) -> None:
    @cached(ttl=60, cache=cache)
    async def load(user_id: int, db: object) -> int:
        return 1

    with pytest.raises(KeyDerivationError, match="db") as info:
        await load(1, object())
    assert "ignore" in str(info.value)


async def test_a_key_callable_chooses_the_key_material(cache: InMemoryCache) -> None:
    runs = Counter()

    @cached(ttl=60, cache=cache, key=lambda request: request["user"])
    async def handle(request: dict[str, Any]) -> int:
        return runs()

    assert await handle({"user": 1, "trace": "a"}) == 1
    assert await handle({"user": 1, "trace": "b"}) == 1
    assert await handle({"user": 2, "trace": "a"}) == 2


async def test_none_is_not_stored_unless_asked(cache: InMemoryCache, clock: FakeClock) -> None:
    runs = Counter()

    @cached(ttl=60, cache=cache)
    async def find(x: int) -> None:
        runs()

    @cached(ttl=60, cache=cache, none_ttl=5)
    async def find_remembering(x: int) -> None:
        runs()

    await find(1)
    await find(1)
    assert runs.calls == 2

    await find_remembering(1)
    await find_remembering(1)
    assert runs.calls == 3
    clock.advance(5)
    await find_remembering(1)
    assert runs.calls == 4


async def test_condition_decides_what_is_stored(cache: InMemoryCache) -> None:
    runs = Counter()

    @cached(ttl=60, cache=cache, condition=lambda r: r["ok"])
    async def call(x: int) -> dict[str, bool]:
        runs()
        return {"ok": x > 0}

    await call(-1)
    await call(-1)
    await call(1)
    await call(1)
    assert runs.calls == 3


async def test_jitter_shortens_ttls_within_the_fraction(cache: InMemoryCache) -> None:
    @cached(ttl=100, cache=cache, jitter=0.2)
    async def load(x: int) -> int:
        return x

    for x in range(50):
        await load(x)
    ttls = [await cache.ttl(load.key_for(x)) for x in range(50)]

    assert all(t is not None and 80 <= t <= 100 for t in ttls)
    assert len({round(t or 0, 1) for t in ttls}) > 1


async def test_every_caller_of_a_stale_key_is_served_at_once_while_one_refresh_runs(
    cache: InMemoryCache, clock: FakeClock
) -> None:
    gate = asyncio.Event()
    runs = Counter()

    @cached(ttl=10, cache=cache, stale_ttl=30)
    async def load(x: int) -> int:
        n = runs()
        if n > 1:
            await gate.wait()
        return n

    assert await load(1) == 1
    clock.advance(15)  # past ttl, inside the stale window
    served = await asyncio.gather(*(load(1) for _ in range(100)))
    assert [1] * 100 == served  # nobody waited for the refresh
    assert 2 == runs.calls  # the one refresh is running, held on the gate
    gate.set()
    full = cache.prefix + load.key_for(1)
    for _ in range(100):  # the refresh is a background task: let it finish
        if cache.flights.running(full) is None:
            break
        await asyncio.sleep(0)
    assert 2 == await load(1)
    assert 100 == load.stats()["stale_served"]
    assert 1 == load.stats()["refreshes"]  # one refresh started for the 100 callers
    assert 2 == runs.calls

    clock.advance(10 + 30 + 1)  # past the refreshed value's stale window too: a plain miss
    assert await load(1) == 3


async def test_a_failing_refresh_keeps_the_stale_value_only_with_stale_if_error(
    cache: InMemoryCache, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    broken = False

    @cached(ttl=10, cache=cache, stale_ttl=30, stale_if_error=True)
    async def load(x: int) -> str:
        if broken:
            raise ConnectionError("upstream down")
        return "good"

    @cached(ttl=10, cache=cache, stale_ttl=30)
    async def strict(x: int) -> str:
        if broken:
            raise ConnectionError("upstream down")
        return "good"

    assert ("good", "good") == (await load(1), await strict(1))
    clock.advance(15)
    broken = True
    assert ("good", "good") == (await load(1), await strict(1))  # served stale at once
    keys = [cache.prefix + fn.key_for(1) for fn in (load, strict)]
    for _ in range(100):  # the two background refreshes run, and fail
        if all(cache.flights.running(key) is None for key in keys):
            break
        await asyncio.sleep(0)
    assert 2 == sum("background refresh" in r.getMessage() for r in caplog.records)
    assert "good" == await load(1)  # kept: the stale value is still served
    with pytest.raises(ConnectionError):
        await strict(1)  # dropped: the next caller computes, and sees the error


async def test_early_refresh_recomputes_a_hot_key_before_it_expires(
    cache: InMemoryCache, clock: FakeClock
) -> None:
    runs = Counter()

    @cached(ttl=10, cache=cache, early_refresh=True)
    async def load(x: int) -> int:
        clock.advance(1)  # the computation "takes" one second
        return runs()

    assert await load(1) == 1
    # Fresh for 9 more seconds; with a near-zero random draw XFetch always refreshes.
    load._memo_plan._rand = lambda: 1e-12  # type: ignore[attr-defined]
    clock.advance(5)
    assert await load(1) == 1  # the caller is served at once
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert await load.peek(1) == 2

    load._memo_plan._rand = lambda: 0.999999  # type: ignore[attr-defined]
    assert await load(1) == 2
    await asyncio.sleep(0)
    assert runs.calls == 2


async def test_tags_invalidate_every_entry_stored_with_them(cache: InMemoryCache) -> None:
    @cached(ttl=60, cache=cache, tags=("user:{user_id}",))
    async def profile(user_id: int) -> str:
        return f"profile-{user_id}"

    @cached(ttl=60, cache=cache, tags=("user:{user_id}",))
    async def orders(user_id: int, page: int = 1) -> str:
        return f"orders-{user_id}-{page}"

    await profile(1)
    await orders(1)
    await orders(1, page=2)
    await profile(2)

    assert await cache.invalidate_tags("user:1") == 3
    assert MISSING is await profile.peek(1)
    assert MISSING is await orders.peek(1, page=2)
    assert await profile.peek(2) == "profile-2"


def test_a_tag_naming_an_unknown_parameter_is_refused() -> None:
    with pytest.raises(ConfigError, match="userid"):

        @cached(ttl=60, tags=("user:{userid}",))
        async def profile(user_id: int) -> str:
            return ""


async def test_an_unencodable_result_is_returned_not_cached_and_logged_once(
    cache: InMemoryCache, caplog: pytest.LogCaptureFixture
) -> None:
    class Opaque:
        pass

    runs = Counter()

    @cached(ttl=60, cache=cache)
    async def load(x: int) -> Opaque:
        runs()
        return Opaque()

    with caplog.at_level(logging.WARNING, logger="memo"):
        assert isinstance(await load(1), Opaque)
        assert isinstance(await load(1), Opaque)

    assert runs.calls == 2
    assert sum("not cached" in r.getMessage() for r in caplog.records) == 1
    assert load.stats()["errors"] == 2


async def test_mutating_a_returned_value_never_changes_the_next_hit(
    cache: InMemoryCache,
) -> None:
    @cached(ttl=60, cache=cache)
    async def load(x: int) -> dict[str, Any]:
        return {"tags": ["a"], "nested": {"n": 1}}

    first = await load(1)
    first["tags"].append("changed")
    first["nested"]["n"] = 2
    second = await load(1)
    second["tags"].clear()

    assert await load(1) == {"tags": ["a"], "nested": {"n": 1}}


async def test_bypass_runs_calls_uncached_in_its_block_only(cache: InMemoryCache) -> None:
    runs = Counter()

    @cached(ttl=60, cache=cache)
    async def load(x: int) -> int:
        return runs()

    assert await load(1) == 1
    with memo.bypass():
        assert await load(1) == 2
        assert await load(9) == 3
    assert await load(1) == 1
    assert MISSING is await load.peek(9)
    assert load.stats()["bypassed"] == 2
    assert (await cache.get_cache_stats())["bypassed"] == 2


async def test_bypass_is_scoped_to_its_task(cache: InMemoryCache) -> None:
    runs = Counter()
    inside = asyncio.Event()
    release = asyncio.Event()

    @cached(ttl=60, cache=cache)
    async def load(x: int) -> int:
        return runs()

    async def bypassing() -> None:
        with memo.bypass():
            inside.set()
            await release.wait()

    await load(1)
    task = asyncio.create_task(bypassing())
    await inside.wait()
    assert await load(1) == 1  # another task still reads the cache
    release.set()
    await task


async def test_disable_and_enable_switch_caching_process_wide(cache: InMemoryCache) -> None:
    runs = Counter()

    @cached(ttl=60, cache=cache)
    async def load(x: int) -> int:
        return runs()

    await load(1)
    memo.disable()
    assert await load(1) == 2
    memo.enable()
    assert await load(1) == 1


class UserService:
    def __init__(self, region: str) -> None:
        self.region = region
        self.runs = 0

    @cached(ttl=60)
    async def get(self, user_id: int) -> str:
        self.runs += 1
        return f"user-{user_id}"

    @classmethod
    @cached(ttl=60)
    async def by_class(cls, user_id: int) -> str:
        return f"{cls.__name__}-{user_id}"

    @cached(ttl=60)
    @classmethod
    async def by_class_outer(cls, user_id: int) -> str:
        return f"{cls.__name__}-outer-{user_id}"

    @staticmethod
    @cached(ttl=60)
    async def static(user_id: int) -> str:
        return f"static-{user_id}"


async def test_instance_methods_share_entries_across_instances() -> None:
    a, b = UserService("eu"), UserService("us")

    assert await a.get(1) == "user-1"
    assert await b.get(1) == "user-1"
    assert (a.runs, b.runs) == (1, 0)
    assert a.get.key_for(1) == b.get.key_for(1) == UserService.get.key_for(a, 1)
    assert await b.get.invalidate(1) is True
    assert MISSING is await a.get.peek(1)
    assert await a.get(1) == "user-1"
    assert a.runs == 2


async def test_class_and_static_methods_are_cached_in_either_decorator_order() -> None:
    assert await UserService.by_class(1) == "UserService-1"
    assert await UserService.by_class.peek(1) == "UserService-1"
    assert await UserService.by_class_outer(2) == "UserService-outer-2"
    assert await UserService.by_class_outer.peek(2) == "UserService-outer-2"
    assert await UserService.static(3) == "static-3"
    assert await UserService.static.peek(3) == "static-3"


async def test_an_instance_defining_memo_key_contributes_it(cache: InMemoryCache) -> None:
    class Account:
        def __init__(self, account_id: int) -> None:
            self.account_id = account_id

        def __memo_key__(self) -> int:
            return self.account_id

        @cached(ttl=60, cache=cache)
        async def balance(self) -> int:
            return self.account_id * 100

    assert await Account(1).balance() == 100
    assert await Account(2).balance() == 200
    assert Account(1).balance.key_for() != Account(2).balance.key_for()
    assert await Account(1).balance.peek() == 100


async def test_two_live_functions_claiming_one_key_space_log_a_warning(
    cache: InMemoryCache, caplog: pytest.LogCaptureFixture
) -> None:
    def make() -> Any:
        @cached(ttl=60, cache=cache)
        async def handler(x: int) -> int:
            return x

        return handler

    with caplog.at_level(logging.WARNING, logger="memo"):
        first = make()
        second = make()

    assert first is not second
    assert any(
        "handler" in r.getMessage() and "namespace=" in r.getMessage() for r in caplog.records
    )


async def test_ai_cached_uses_text_and_options_and_normalizes_options(
    cache: InMemoryCache,
) -> None:
    runs = Counter()

    class Service:
        @ai_cached(operation="summarize", cache=cache)
        async def summarize(self, text: str, options: dict[str, Any]) -> dict[str, int]:
            return {"run": runs()}

    service = Service()
    first = await service.summarize("doc", {"max_length": 100.0, "style": None})
    assert first == await service.summarize("doc", {"max_length": 100})
    assert first != await service.summarize("doc", {"max_length": "100"})
    assert service.summarize.key_for("doc", {}).startswith("ai:summarize:v1:")


def test_ai_cached_names_missing_text_or_options_parameters() -> None:
    with pytest.raises(ConfigError, match="text"):

        @ai_cached(operation="qa")
        async def answer(question: str, options: dict[str, Any]) -> str:
            return ""

        _ = answer

    with pytest.raises(ConfigError, match="operation"):
        ai_cached(operation="")
