"""Checked by mypy (tests/test_project.py), never run: decorated signatures survive.

Each ``# type: ignore[...]`` marks a call that must be rejected; mypy's
``warn_unused_ignores`` turns a call that is wrongly accepted into a failure.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from typing_extensions import assert_type

from memo import MISSING, Cache, ai_cached, cached
from memo._sentinel import MissingType


@cached(ttl=60)
async def get_user(user_id: int, *, verbose: bool = False) -> dict[str, int]:
    return {"id": user_id}


@cached
async def bare(x: str) -> str:
    return x


class Summarizer:
    @ai_cached(operation="summarize")
    async def summarize(self, text: str, options: dict[str, Any]) -> dict[str, str]:
        return {"summary": text}

    @cached(ttl=60)
    async def lookup(self, item_id: int) -> str:
        return str(item_id)


@ai_cached("chat", request="request")
async def stream(request: dict[str, Any]) -> AsyncIterator[str]:
    yield "chunk"


async def stream_checks() -> None:
    async for chunk in stream({"model": "m"}):
        assert_type(chunk, str)
    assert_type(stream.key_for({"model": "m"}), str)
    stream(1)  # type: ignore[arg-type]


async def checks() -> None:
    assert_type(await get_user(1), dict[str, int])
    assert_type(await get_user(user_id=1, verbose=True), dict[str, int])
    assert_type(get_user.key_for(1), str)
    assert_type(await get_user.invalidate(1), bool)
    assert_type(await get_user.refresh(1), dict[str, int])
    peeked = await get_user.peek(1)
    assert_type(peeked, dict[str, int] | MissingType)
    if peeked is not MISSING:
        assert_type(peeked, dict[str, int])
    assert_type(await get_user.invalidate_all(), int)
    assert_type(await bare("x"), str)

    await get_user("1")  # type: ignore[arg-type]
    await get_user(1, True)  # type: ignore[call-arg]
    await get_user(1, verbos=True)  # type: ignore[call-arg]
    get_user.key_for("1")  # type: ignore[arg-type]
    await bare(1)  # type: ignore[arg-type]

    service = Summarizer()
    assert_type(await service.summarize("text", {"n": 1}), dict[str, str])
    assert_type(await service.lookup(3), str)
    assert_type(await service.lookup.peek(3), str | MissingType)
    await service.lookup("3")  # type: ignore[arg-type]
    await service.summarize(text=1, options={})  # type: ignore[arg-type]


async def cache_handles_resolve_to_a_cache() -> None:
    @cached(ttl=60, preset="simple")
    async def preset_fn(x: int) -> int:
        return x

    resolved: Cache = preset_fn.cache.resolve()
    assert resolved is not None
