"""The streaming AI example, driven through httpx's ASGI transport and run as a script."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from examples import ai_streaming
from tests._asgi import running

ROOT = Path(__file__).resolve().parent.parent

REQUEST: dict[str, Any] = {
    "model": "gpt-4o-mini",
    "messages": [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "What does memo cache?"},
    ],
    "temperature": 0,
    "stream": True,
    "stream_options": {"include_usage": True},
}


async def post(client: httpx.AsyncClient, request: dict[str, Any]) -> str:
    response = await client.post("/v1/chat/completions", json=request)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    return response.text


def events(body: str) -> list[Any]:
    """The data of each server-sent event, JSON-decoded except the ``[DONE]`` marker."""
    assert body.endswith("\n\n")
    out: list[Any] = []
    for event in body.split("\n\n")[:-1]:
        assert event.startswith("data: ")
        data = event.removeprefix("data: ")
        out.append(data if data == "[DONE]" else json.loads(data))
    return out


async def test_a_repeated_request_is_replayed_and_its_tokens_counted_as_saved() -> None:
    app = ai_streaming.create_app()
    async with running(app) as client:
        first = await post(client, REQUEST)
        second = await post(client, REQUEST)
        assert second == first
        assert app.state.client.calls == 1

        chunks = events(first)
        assert chunks[-1] == "[DONE]"
        assert first.endswith("data: [DONE]\n\n")
        text = "".join(c["choices"][0]["delta"]["content"] for c in chunks[:-2])
        assert text == "You asked: What does memo cache?"
        usage = chunks[-2]["usage"]
        assert chunks[-2]["choices"] == []
        assert usage == {"prompt_tokens": 6, "completion_tokens": 6}

        stats = (await client.get("/stats")).json()
        assert stats["upstream_calls"] == 1
        savings = stats["ai_savings"]
        assert savings["prompt_tokens"] == usage["prompt_tokens"]
        assert savings["completion_tokens"] == usage["completion_tokens"]
        assert savings["tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
        cost = (usage["prompt_tokens"] * 0.15 + usage["completion_tokens"] * 0.60) / 1e6
        assert savings["cost"] == pytest.approx(cost, abs=1e-6)  # stats round to 6 places
        assert savings["by_operation"]["chat"]["hits"] == 1


async def test_without_a_usage_chunk_a_hit_replays_but_counts_no_tokens() -> None:
    app = ai_streaming.create_app()
    request = {**REQUEST, "stream_options": {"include_usage": False}}
    async with running(app) as client:
        body = await post(client, request)
        chunks = events(body)
        assert chunks[-1] == "[DONE]"
        assert all(c["choices"] for c in chunks[:-1])  # no usage chunk unless asked for
        assert await post(client, request) == body
        stats = (await client.get("/stats")).json()
        assert stats["upstream_calls"] == 1
        assert stats["ai_savings"]["tokens"] == 0  # a hit without usage saves nothing countable


async def test_fields_that_do_not_shape_the_reply_still_hit() -> None:
    app = ai_streaming.create_app()
    async with running(app) as client:
        first = await post(client, REQUEST)
        again = await post(
            client, {**REQUEST, "request_id": "req-2", "user": "someone-else", "timeout": 30}
        )
        assert again == first
        assert app.state.client.calls == 1
        stats = (await client.get("/stats")).json()
        assert stats["ai_savings"]["by_operation"]["chat"]["hits"] == 1


async def test_a_different_message_goes_upstream_again() -> None:
    app = ai_streaming.create_app()
    async with running(app) as client:
        first = await post(client, REQUEST)
        other = {**REQUEST, "messages": [{"role": "user", "content": "And what not?"}]}
        second = await post(client, other)
        assert second != first
        assert "And what not?" in "".join(
            c["choices"][0]["delta"]["content"] for c in events(second)[:-2]
        )
        assert app.state.client.calls == 2
        stats = (await client.get("/stats")).json()
        assert (stats["upstream_calls"], stats["ai_savings"]["tokens"]) == (2, 0)


async def test_concurrent_identical_requests_reach_the_model_once() -> None:
    app = ai_streaming.create_app()
    async with running(app) as client:
        bodies = await asyncio.gather(*(post(client, REQUEST) for _ in range(5)))
        assert len(set(bodies)) == 1
        assert events(bodies[0])[-1] == "[DONE]"
        assert app.state.client.calls == 1


@pytest.mark.slow
def test_the_example_runs_as_a_script() -> None:
    out = subprocess.run(
        [sys.executable, "examples/ai_streaming.py"], capture_output=True, text=True, cwd=ROOT
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "second request: 7 chunks, upstream calls: 1" in out.stdout
    assert "saved 10 tokens" in out.stdout
