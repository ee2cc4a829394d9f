"""What AI cache hits saved: tokens by operation and model, and money from a price table.

A hit on a reply that carries a usage record (``usage.prompt_tokens`` and
``usage.completion_tokens`` as OpenAI-style APIs return them, ``input_tokens`` and
``output_tokens`` as Anthropic's do, on a dict or an object) saved one upstream call of
that many tokens. A streamed reply's usage is the last chunk that carries one (OpenAI
sends it in the final chunk when asked to with ``stream_options``). A decorator's
``usage=`` function reads other shapes.

Counting a hit adds three ints; the money is worked out only when stats are read, from
the cache's price table (``AISettings.model_prices``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

from memo.exceptions import ConfigError

__all__ = [
    "ModelPrices",
    "SavingsLedger",
    "check_prices",
    "custom_usage",
    "price_for",
    "shared_rows",
    "shared_savings_key",
    "summarize",
    "usage_of",
]

#: Model name -> (US dollars per million prompt tokens, per million completion tokens).
ModelPrices = Mapping[str, tuple[float, float]]

#: (model or None, prompt tokens, completion tokens)
Usage = tuple[str | None, int, int]

#: Token counts above this are not believed (no reply is that long): not counted, so a
#: wild value can never overflow the server's 64-bit counters.
MAX_TOKENS = 1 << 40

_PROMPT = ("prompt_tokens", "input_tokens")
_COMPLETION = ("completion_tokens", "output_tokens")


def _get(record: Any, name: str) -> Any:
    if type(record) is dict or isinstance(record, Mapping):
        return record.get(name)
    return getattr(record, name, None)


def _count(record: Any, names: tuple[str, ...]) -> int:
    for name in names:
        value = _get(record, name)
        if type(value) is int and 0 <= value <= MAX_TOKENS:
            return value
    return 0


def _one(reply: Any) -> Usage | None:
    usage = _get(reply, "usage")
    if usage is None:
        return None
    prompt, completion = _count(usage, _PROMPT), _count(usage, _COMPLETION)
    if not prompt and not completion:
        return None
    model = _get(reply, "model")
    return (model if type(model) is str else None, prompt, completion)


def _last(chunks: list[Any]) -> Usage | None:
    for chunk in reversed(chunks):
        found = _one(chunk)
        if found is not None:
            if found[0] is None:  # the usage chunk may not name the model; another may
                model = next((m for c in chunks if type(m := _get(c, "model")) is str), None)
                found = (model, found[1], found[2])
            return found
    return None


def usage_of(reply: Any) -> Usage | None:
    """The usage a stored reply records (for a list of streamed chunks, the last chunk
    with one), or None."""
    if type(reply) is list:
        try:
            return _last(reply)
        except Exception:  # chunks whose attributes raise save nothing countable
            return None
    if type(reply) is dict:  # the common shape, read without the general lookups
        usage = reply.get("usage")
        if usage is None:  # a reply that records none (what _one would find too)
            return None
        if type(usage) is dict:
            prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
            if (
                type(prompt) is int
                and type(completion) is int
                and 0 <= prompt <= MAX_TOKENS
                and 0 <= completion <= MAX_TOKENS
            ):
                model = reply.get("model")
                return (model if type(model) is str else None, prompt, completion)
    try:
        return _one(reply)
    except Exception:  # a reply whose attributes raise saves nothing countable
        return None


def custom_usage(read: Callable[[Any], Any]) -> Callable[[Any], Usage | None]:
    """Wrap a user's ``usage=`` function: it returns (prompt, completion) tokens, or a
    usage record (a dict or object with the usual names), or None."""

    def usage(reply: Any) -> Usage | None:
        try:  # a hit never fails for what its usage function returns
            found = read(reply)
            if found is None:
                return None
            if isinstance(found, tuple) and len(found) == 2:
                pair = found
            else:
                pair = (_count(found, _PROMPT), _count(found, _COMPLETION))
            if not all(type(n) is int and 0 <= n <= MAX_TOKENS for n in pair):
                return None  # not token counts (a float, a bool, a negative, a string)
            model = None if type(reply) is list else _get(reply, "model")
        except Exception:
            return None
        return (model if type(model) is str else None, pair[0], pair[1])

    return usage


def check_prices(prices: Any, name: str = "model_prices") -> dict[str, tuple[float, float]]:
    """``prices`` checked: model name -> (per million prompt, per million completion)."""
    if prices is None:
        return {}
    if not isinstance(prices, Mapping):
        raise ConfigError(
            f"{name}={prices!r}: pass a mapping of model name to (dollars per million "
            f'prompt tokens, per million completion tokens), e.g. {{"gpt-4o": (2.5, 10.0)}}'
        )
    out: dict[str, tuple[float, float]] = {}
    for model, price in prices.items():
        pair = tuple(price) if isinstance(price, (tuple, list)) else ()
        ok = isinstance(model, str) and model and len(pair) == 2
        if not ok or not all(
            isinstance(p, (int, float)) and not isinstance(p, bool) and p >= 0 for p in pair
        ):
            raise ConfigError(
                f"{name}[{model!r}]={price!r}: give a model name and a pair of prices "
                f"(dollars per million prompt tokens, per million completion tokens), "
                f"both >= 0, e.g. (2.5, 10.0)"
            )
        out[model] = (float(pair[0]), float(pair[1]))
    return out


def price_for(prices: ModelPrices, model: str | None) -> tuple[float, float] | None:
    """The prices of ``model``: its own, else those of the longest name it starts with
    (``gpt-4o`` prices ``gpt-4o-2024-08-06``), else None."""
    if model is None:
        return None
    found = prices.get(model)
    if found is not None:
        return found
    best = max((name for name in prices if model.startswith(name)), key=len, default=None)
    return None if best is None else prices[best]


#: Where a cache's savings counters live in Redis: beside its prefix, not under it, so
#: that no pattern of the cache's keys (``invalidate_all``) reaches them.
def shared_savings_key(prefix: str) -> str:
    return prefix.rstrip(":") + "#ai_savings"


_FIELDS = ("hits", "prompt_tokens", "completion_tokens")
_SEP = "\t"


def _field(operation: str, model: str | None, what: str) -> str:
    # Names come from replies: a separator inside one would split the field wrongly.
    return _SEP.join((operation.replace(_SEP, " "), (model or "").replace(_SEP, " "), what))


class SavingsLedger:
    """Tokens saved by hits, by (operation, model).

    With ``shared`` set (a cache on Redis), what is recorded is also kept as pending
    counts, which the cache adds to the server's figures now and then
    (``take_pending``; ``give_back`` when the server could not take them).
    """

    def __init__(self) -> None:
        self._counts: dict[tuple[str, str | None], list[int]] = {}
        self._pending: dict[str, int] = {}
        self._lock = threading.Lock()
        self.shared = False

    def record(self, operation: str, usage: Usage) -> None:
        model, prompt, completion = usage
        # Like every counter of memo's stats, updated without a lock (a hit must stay
        # cheap): threads racing on one row may lose a count, never corrupt one.
        if model is not None and _SEP in model:
            model = model.replace(_SEP, " ")
        row = self._counts.get((operation, model))
        if row is None:
            row = self._counts.setdefault((operation, model), [0, 0, 0])
        row[0] += 1
        row[1] += prompt
        row[2] += completion
        if self.shared:  # pending counts go to the server: none may be lost
            with self._lock:
                pending = self._pending
                for what, amount in zip(_FIELDS, (1, prompt, completion), strict=True):
                    if amount:
                        field = _field(operation, model, what)
                        pending[field] = pending.get(field, 0) + amount

    @property
    def pending(self) -> bool:
        return bool(self._pending)

    def take_pending(self) -> dict[str, int]:
        with self._lock:
            taken, self._pending = self._pending, {}
        return taken

    def give_back(self, counts: dict[str, int]) -> None:
        with self._lock:
            for field, amount in counts.items():
                self._pending[field] = self._pending.get(field, 0) + amount

    def reset(self) -> None:
        self._counts.clear()
        with self._lock:
            self._pending.clear()

    def summary(self, prices: ModelPrices) -> dict[str, Any]:
        """Totals and one row per operation (see ``summarize``)."""
        rows = [(op, model, c[0], c[1], c[2]) for (op, model), c in list(self._counts.items())]
        return summarize(rows, prices)


def shared_rows(counts: Mapping[str, int]) -> list[tuple[str, str | None, int, int, int]]:
    """The rows of a shared hash of counters (as ``SavingsLedger`` writes them)."""
    rows: dict[tuple[str, str | None], list[int]] = {}
    for field, amount in counts.items():
        parts = field.split(_SEP)
        if len(parts) != 3 or parts[2] not in _FIELDS:
            continue  # not ours: left alone
        row = rows.setdefault((parts[0], parts[1] or None), [0, 0, 0])
        row[_FIELDS.index(parts[2])] += amount
    return [(op, model, r[0], r[1], r[2]) for (op, model), r in rows.items()]


def summarize(
    rows: list[tuple[str, str | None, int, int, int]], prices: ModelPrices
) -> dict[str, Any]:
    """Totals and one row per operation: hits with usage, prompt, completion and all
    tokens saved, and the money (None where a model has no price)."""
    by_operation: dict[str, dict[str, Any]] = {}
    for op, model, hits, prompt, completion in sorted(rows, key=lambda r: (r[0], r[1] or "")):
        row = by_operation.setdefault(
            op,
            {"hits": 0, "prompt_tokens": 0, "completion_tokens": 0, "tokens": 0, "cost": 0.0},
        )
        row["hits"] += hits
        row["prompt_tokens"] += prompt
        row["completion_tokens"] += completion
        row["tokens"] += prompt + completion
        price = price_for(prices, model)
        if price is None or row["cost"] is None:
            row["cost"] = None  # some tokens have no price: no honest total
        else:
            row["cost"] += (prompt * price[0] + completion * price[1]) / 1_000_000
    total: dict[str, Any] = {
        "prompt_tokens": sum(r["prompt_tokens"] for r in by_operation.values()),
        "completion_tokens": sum(r["completion_tokens"] for r in by_operation.values()),
    }
    total["tokens"] = total["prompt_tokens"] + total["completion_tokens"]
    costs = [r["cost"] for r in by_operation.values()]
    total["cost"] = None if None in costs else round(sum(costs), 6)
    for row in by_operation.values():
        if row["cost"] is not None:
            row["cost"] = round(row["cost"], 6)
    total["by_operation"] = by_operation
    return total
