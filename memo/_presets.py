"""The preset table: the single source of every preset's figures.

``memo.config`` builds configuration objects from it; ``memo._slots`` builds the
decorators' process-wide caches from those.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType

from memo.exceptions import ConfigError

__all__ = ["PRESET_VALUES", "PresetValues", "preset_values"]


@dataclass(frozen=True)
class PresetValues:
    """The figures of one preset (None where a preset turns caching off)."""

    name: str
    default_ttl: int
    memory_cache_size: int
    compression_threshold: int
    compression_level: int
    text_hash_threshold: int | None = None
    operation_ttls: MappingProxyType[str, int] = field(default_factory=lambda: MappingProxyType({}))
    enabled: bool = True

    @property
    def ai(self) -> bool:
        return self.text_hash_threshold is not None


def _ops(**ttls: int) -> MappingProxyType[str, int]:
    return MappingProxyType(dict(ttls))


PRESET_VALUES: MappingProxyType[str, PresetValues] = MappingProxyType(
    {
        p.name: p
        for p in (
            PresetValues("disabled", 900, 25, 5000, 1, enabled=False),
            PresetValues("minimal", 900, 25, 5000, 1),
            PresetValues("simple", 3600, 100, 1000, 6),
            PresetValues("development", 600, 50, 2000, 3),
            PresetValues("production", 7200, 500, 500, 9),
            PresetValues(
                "ai-development",
                1800,
                100,
                1000,
                6,
                text_hash_threshold=500,
                operation_ttls=_ops(
                    summarize=1800, sentiment=900, key_points=1200, questions=1500, qa=900
                ),
            ),
            PresetValues(
                "ai-production",
                14400,
                1000,
                300,
                9,
                text_hash_threshold=1000,
                operation_ttls=_ops(
                    summarize=14400, sentiment=7200, key_points=10800, questions=9600, qa=7200
                ),
            ),
        )
    }
)


def preset_values(name: str) -> PresetValues:
    """The figures of preset ``name``; an unknown name lists the valid ones."""
    try:
        return PRESET_VALUES[name]
    except (KeyError, TypeError):
        raise ConfigError(
            f"preset={name!r} is not a preset: choose one of {', '.join(PRESET_VALUES)}"
        ) from None
