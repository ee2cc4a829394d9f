"""Streamed chat completions through memo: the first request streams from the model, a
repeat is replayed from the cache, and ``/stats`` shows the tokens and money it saved.

Serve it with ``uvicorn examples.ai_streaming:app`` (uvicorn is not a memo dependency) and
POST an OpenAI-style request to ``/v1/chat/completions``; or run
``python examples/ai_streaming.py`` for a short demo without a server. The model is a
local fake, so neither needs a network or an API key.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from fastapi.responses import StreamingResponse

from memo import AISettings, InMemoryCache, ai_cached

#: Dollars per million prompt / completion tokens: turns saved tokens into saved money.
MODEL_PRICES = {"gpt-4o-mini": (0.15, 0.60)}


class FakeChatClient:
    """Stands in for an OpenAI-compatible client (``chat.completions.create``); counts
    the requests that reach the model."""

    def __init__(self) -> None:
        self.calls = 0

    async def create(self, **request: Any) -> AsyncIterator[dict[str, Any]]:
        self.calls += 1
        return self._chunks(request)

    async def _chunks(self, request: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        question = request["messages"][-1]["content"]
        words = f"You asked: {question}".split()
        for i, word in enumerate(words):
            await asyncio.sleep(0.01)  # a real model takes a while per token
            delta = {"content": word if i == 0 else " " + word}
            yield {
                "id": "chatcmpl-1",
                "model": request["model"],
                "choices": [{"index": 0, "delta": delta}],
            }
        # OpenAI reports a stream's usage only when asked, in a last chunk with no choices.
        if request.get("stream_options", {}).get("include_usage"):
            prompt = sum(len(str(m["content"]).split()) for m in request["messages"])
            usage = {"prompt_tokens": prompt, "completion_tokens": len(words)}
            yield {"id": "chatcmpl-1", "model": request["model"], "choices": [], "usage": usage}


def create_app() -> FastAPI:
    """One application with its own client, cache and service (tests build several)."""
    app = FastAPI()
    client = FakeChatClient()
    cache = InMemoryCache(ai=AISettings(model_prices=MODEL_PRICES))

    # Defined here because the decorator takes its cache when the class is made.
    class ChatService:
        # Keyed on the whole request: model, messages, temperature, seed ... Fields that
        # cannot change the reply (stream, timeout, user, request_id) are left out, so
        # retries and other users asking the same thing share one answer.
        @ai_cached("chat", request="request", cache=cache)
        async def complete(self, request: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
            async for chunk in await client.create(**request):
                yield chunk

    service = ChatService()
    app.state.client, app.state.cache, app.state.service = client, cache, service

    @app.post("/v1/chat/completions")
    async def chat_completions(request: dict[str, Any]) -> StreamingResponse:
        async def events() -> AsyncIterator[str]:
            # A client that hangs up stops this generator; if nobody else follows the
            # stream, memo stops the model too and stores nothing half-finished.
            async for chunk in service.complete(request):
                yield f"data: {json.dumps(chunk)}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    @app.get("/stats")
    async def stats() -> dict[str, Any]:
        cache_stats = await cache.get_cache_stats()
        return {"ai_savings": cache_stats["ai_savings"], "upstream_calls": client.calls}

    return app


app = create_app()


async def demo() -> None:
    """Two identical requests through the service: one reaches the model."""
    demo_app = create_app()
    request = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "What does memo cache?"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    for attempt in ("first", "second"):
        chunks = [chunk async for chunk in demo_app.state.service.complete(request)]
        calls = demo_app.state.client.calls
        print(f"{attempt} request: {len(chunks)} chunks, upstream calls: {calls}")
    savings = (await demo_app.state.cache.get_cache_stats())["ai_savings"]
    print(f"saved {savings['tokens']} tokens (${savings['cost']:.6f})")


if __name__ == "__main__":
    asyncio.run(demo())
