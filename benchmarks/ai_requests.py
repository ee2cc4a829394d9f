"""What a memory hit of ``@ai_cached`` costs: a plain text against a whole chat request.

    python benchmarks/ai_requests.py [--rounds N] [--batch N]

Two functions on one ``InMemoryCache``: ``summarize(text, options)``, keyed by a text of
16 000 characters (about 4 000 tokens) and ``{"temperature": 0}``, and ``chat(request)``
with ``request="request"``, keyed by a whole request dict (model, temperature, seed and
20 messages of 800 characters, user and assistant in turn: the same 16 000 characters of
text). Both return a small reply with a usage record. Each is warmed once (the miss),
then timed on hits in two scenarios:

- fresh objects (the headline): every call gets a new object equal in content, as a
  server parsing each HTTP body would; a batch of single-use copies
  (``json.loads(json.dumps(...))``, so a text is a new str with no cached hash) is built
  before each timer and used once.
- same object: the same text and options, the same request dict, every call.

Rounds are interleaved (text then chat, the order alternating by round), ``--batch``
calls each, the garbage collector off while timing. Per hit: thread CPU time and wall
time, medians over rounds, and chat over text. The exit code is 0 whatever the numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's memo first

from memo import InMemoryCache, ai_cached

TEXT_CHARS = 16_000
MESSAGES = 20
GOAL = 2.0  # chat hit / text hit, thread CPU, fresh objects

WORDS = (
    "the quarterly report shows revenue growth across every region while costs held "
    "steady and the board asked for a summary of risks opportunities and next steps "
)


def prose(n: int, start: int) -> str:
    """``n`` characters of text, starting at a different place for each ``start``."""
    words = WORDS * (n // len(WORDS) + 2)
    offset = (start * 37) % len(WORDS)
    return words[offset : offset + n]


def reply() -> dict[str, Any]:
    return {
        "model": "gpt-4o-mini",
        "choices": [{"message": {"content": "ok"}}],
        "usage": {"prompt_tokens": 4000, "completion_tokens": 50},
    }


async def timed(
    func: Callable[..., Awaitable[Any]], calls: list[tuple[Any, ...]]
) -> tuple[float, float]:
    """(thread CPU µs, wall µs) per call of ``func(*args)`` for each args in ``calls``."""
    gc.disable()
    try:
        w0, c0 = time.perf_counter_ns(), time.thread_time_ns()
        for args in calls:
            await func(*args)
        c1, w1 = time.thread_time_ns(), time.perf_counter_ns()
    finally:
        gc.enable()
    return (c1 - c0) / len(calls) / 1000, (w1 - w0) / len(calls) / 1000


async def main(args: argparse.Namespace) -> None:
    cache = InMemoryCache()
    computed = {"text": 0, "chat": 0}

    @ai_cached("summarize", cache=cache)
    async def summarize(text: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
        computed["text"] += 1
        return reply()

    @ai_cached("chat", request="request", cache=cache)
    async def chat(request: dict[str, Any]) -> dict[str, Any]:
        computed["chat"] += 1
        return reply()

    size = TEXT_CHARS // MESSAGES
    contents = [prose(size, i) for i in range(MESSAGES)]
    text = "".join(contents)
    options: dict[str, Any] = {"temperature": 0}
    request: dict[str, Any] = {
        "model": "gpt-4o-mini",
        "temperature": 0,
        "seed": 1,
        "messages": [
            {"role": "user" if i % 2 == 0 else "assistant", "content": c}
            for i, c in enumerate(contents)
        ],
    }
    await summarize(text, options)  # the misses
    await chat(request)

    def text_calls(fresh: bool) -> list[tuple[Any, ...]]:
        if not fresh:
            return [(text, options)] * args.batch
        dumped = json.dumps({"text": text, "options": options})  # an HTTP body
        bodies = [json.loads(dumped) for _ in range(args.batch)]
        return [(b["text"], b["options"]) for b in bodies]

    def chat_calls(fresh: bool) -> list[tuple[Any, ...]]:
        if not fresh:
            return [(request,)] * args.batch
        dumped = json.dumps(request)
        return [(json.loads(dumped),) for _ in range(args.batch)]

    funcs: dict[str, Callable[..., Awaitable[Any]]] = {"text": summarize, "chat": chat}
    builders = {"text": text_calls, "chat": chat_calls}
    print(
        f"@ai_cached memory hits, {len(text):,}-character text / {MESSAGES}-message request:"
        f" {args.rounds} interleaved rounds x {args.batch:,} calls, medians, µs per hit"
    )
    for scenario, fresh in (("fresh objects", True), ("same object", False)):
        cpu: dict[str, list[float]] = {"text": [], "chat": []}
        wall: dict[str, list[float]] = {"text": [], "chat": []}
        for r in range(args.rounds):
            for name in ("text", "chat") if r % 2 == 0 else ("chat", "text"):
                calls = builders[name](fresh)  # built outside the timer, used once
                c, w = await timed(funcs[name], calls)
                del calls
                cpu[name].append(c)
                wall[name].append(w)
        for name in ("text", "chat"):
            print(
                f"{scenario:15} {name} hit {statistics.median(cpu[name]):8.2f} µs cpu"
                f" {statistics.median(wall[name]):8.2f} µs wall"
                f"   (best {min(cpu[name]):.2f} cpu)"
            )
        ratio_cpu = statistics.median(cpu["chat"]) / statistics.median(cpu["text"])
        ratio_wall = statistics.median(wall["chat"]) / statistics.median(wall["text"])
        goal = f" (goal <= {GOAL:.1f}x)" if fresh else ""
        print(f"{scenario:15} chat / text: {ratio_cpu:.2f}x cpu{goal}, {ratio_wall:.2f}x wall")
    if computed != {"text": 1, "chat": 1}:
        print(f"  WARNING: timed calls missed: computed {computed} (each should be 1)")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--batch", type=int, default=2_000)
    return ap.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse()))
