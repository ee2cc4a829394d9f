"""What makes a cache an AI cache: text hashing, per-operation TTLs, the on/off switch.

A ``Cache`` always carries one ``AISettings`` (the defaults when it was built for no AI
use), so ``@ai_cached`` and ``AIResponseCache`` read the same figures from the cache
they share.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from memo._canonical import DEFAULT_TEXT_HASH_THRESHOLD, check_text_hash_threshold
from memo._savings import check_prices
from memo._ttl import TTL, ttl_to_ms
from memo._validate import check_bool
from memo.exceptions import ConfigError

__all__ = ["AISettings"]


@dataclass(frozen=True)
class AISettings:
    """AI features of a cache.

    Args:
        text_hash_threshold: texts longer than this many characters enter keys as a hash.
        operation_ttls: seconds (or timedeltas) per operation, ``{"summarize": 7200}``;
            an operation not listed uses the cache's ``default_ttl``.
        enabled: False (``ENABLE_AI_CACHE=false``) runs AI calls uncached, counted as
            bypassed.
        model_prices: model name -> (price per million prompt tokens, per million
            completion tokens), ``{"gpt-4o": (2.5, 10.0)}``: stats turn the tokens that
            hits saved into money. A model priced under a name it starts with takes that
            price (``gpt-4o`` prices ``gpt-4o-2024-08-06``).
    """

    text_hash_threshold: int = DEFAULT_TEXT_HASH_THRESHOLD
    operation_ttls: Mapping[str, TTL] = field(default_factory=lambda: MappingProxyType({}))
    enabled: bool = True
    model_prices: Mapping[str, tuple[float, float]] = field(
        default_factory=lambda: MappingProxyType({})
    )
    #: ``operation_ttls`` in milliseconds, converted once (read per store).
    operation_ttls_ms: Mapping[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_text_hash_threshold(self.text_hash_threshold)
        check_bool("enable_ai_cache", self.enabled)
        ttls = self.operation_ttls
        if not isinstance(ttls, Mapping):
            raise ConfigError(
                f"operation_ttls={ttls!r}: pass a mapping of operation name to seconds, "
                f'such as {{"summarize": 7200}}'
            )
        checked: dict[str, TTL] = {}
        in_ms: dict[str, int] = {}
        for operation, ttl in ttls.items():
            if not isinstance(operation, str) or not operation:
                raise ConfigError(
                    f"operation_ttls: {operation!r} is not an operation name; use "
                    f"non-empty strings such as 'summarize'"
                )
            in_ms[operation] = ttl_to_ms(ttl, f"operation_ttls[{operation!r}]")
            checked[operation] = ttl
        object.__setattr__(self, "operation_ttls", MappingProxyType(checked))
        object.__setattr__(self, "model_prices", MappingProxyType(check_prices(self.model_prices)))
        object.__setattr__(self, "operation_ttls_ms", MappingProxyType(in_ms))

    def operation_ttl_ms(self, operation: str | None) -> int | None:
        """The TTL of ``operation`` in milliseconds, or None when it has none of its own."""
        return None if operation is None else self.operation_ttls_ms.get(operation)
