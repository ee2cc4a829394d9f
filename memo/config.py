"""Configuration: presets, environment variables and a builder, all ending in ``CacheConfig``.

Precedence, strongest first: an explicit argument to a factory method > the builder >
``CACHE_CUSTOM_CONFIG`` > the other environment variables > the preset. The environment
is read when a configuration is built, never at import.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from memo._ai_settings import AISettings
from memo._env import env_flag
from memo._options import REDIS_MEMORY_MAX_TTL, CodecOptions, MemoryOptions
from memo._presets import PRESET_VALUES, PresetValues, preset_values
from memo._redis_options import RedisOptions, RedisURL
from memo._ttl import TTL, ttl_to_ms
from memo._validate import check_bool
from memo.exceptions import ConfigError

__all__ = [
    "PRESETS",
    "CacheConfig",
    "CacheConfigBuilder",
    "config_from_env",
    "get_preset",
]

#: Names accepted in CACHE_CUSTOM_CONFIG besides the field names.
ALIASES = {"l1_cache_size": "memory_cache_size"}

#: The fields handed to RedisOptions as they are.
_REDIS_FIELDS = (
    "connect_timeout",
    "operation_timeout",
    "max_connections",
    "use_tls",
    "ssl_ca_certs",
    "ssl_certfile",
    "ssl_keyfile",
    "invalidation_channel",
    "coherence",
    "invalidation_batch",
    "stats_interval",
)


_SIMPLE = PRESET_VALUES["simple"]


@dataclass(frozen=True)
class CacheConfig:
    """Everything needed to build a cache. Validated on construction.

    ``preset`` records where the values came from; the defaults are the ``simple``
    preset's, and the options objects' for what presets do not set. A configuration with
    ``text_hash_threshold`` set has AI features (an AI cache is built from it). Each
    knob is checked by the options object of the layer that uses it
    (``codec_options()``, ``memory_options()``, ``redis_options()``, ``ai_settings()``),
    so an error names the field as spelled here.
    """

    preset: str = _SIMPLE.name
    enabled: bool = True
    redis_url: str | None = None
    namespace: str = "default"
    default_ttl: TTL = _SIMPLE.default_ttl
    enable_memory_cache: bool = True
    memory_cache_size: int = _SIMPLE.memory_cache_size
    memory_max_ttl: float = REDIS_MEMORY_MAX_TTL
    memory_max_bytes: int = MemoryOptions.memory_max_bytes
    compression_threshold: int = _SIMPLE.compression_threshold
    compression_level: int = _SIMPLE.compression_level
    max_value_size: int = CodecOptions.max_value_size
    signing_key: bytes | str | None = field(default=None, repr=False)
    fail_on_connection_error: bool = False
    use_tls: bool = False
    ssl_ca_certs: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    connect_timeout: float = RedisOptions.connect_timeout
    operation_timeout: float = RedisOptions.operation_timeout
    max_connections: int = RedisOptions.max_connections
    text_hash_threshold: int | None = None
    operation_ttls: Mapping[str, TTL] = field(default_factory=lambda: MappingProxyType({}))
    model_prices: Mapping[str, tuple[float, float]] = field(
        default_factory=lambda: MappingProxyType({})
    )
    enable_ai_cache: bool = True
    invalidation_channel: bool = True
    coherence: str = RedisOptions.coherence
    invalidation_batch: float = RedisOptions.invalidation_batch
    stats_interval: float = RedisOptions.stats_interval

    def __post_init__(self) -> None:
        # Each knob is checked by the options object of its layer; building them here
        # makes a bad configuration fail where it is written.
        ttl_to_ms(self.default_ttl, "default_ttl")
        for flag in ("enabled", "enable_memory_cache", "fail_on_connection_error"):
            check_bool(flag, getattr(self, flag))
        ai = self.ai_settings()
        object.__setattr__(self, "operation_ttls", ai.operation_ttls)
        object.__setattr__(self, "model_prices", ai.model_prices)
        self.codec_options()
        MemoryOptions(**self._memory_fields())
        RedisOptions(
            RedisURL.parse(self.redis_url or "redis://localhost"),
            **{name: getattr(self, name) for name in _REDIS_FIELDS},
        )

    @classmethod
    def from_fields(cls, fields: Mapping[str, Any], *, source: str = "config") -> CacheConfig:
        """A configuration from a mapping of field names (``l1_cache_size`` accepted for
        ``memory_cache_size``); an unknown name is an error naming ``source``."""
        return cls(**check_fields(fields, source=source))

    def _memory_fields(self) -> dict[str, Any]:
        return {
            "memory_cache_size": self.memory_cache_size,
            "memory_max_bytes": self.memory_max_bytes,
            "memory_max_ttl": self.memory_max_ttl,
        }

    def codec_options(self) -> CodecOptions:
        """The codec's part of this configuration."""
        return CodecOptions(
            compression_threshold=self.compression_threshold,
            compression_level=self.compression_level,
            max_value_size=self.max_value_size,
            signing_key=self.signing_key,  # type: ignore[arg-type]  # a str is encoded there
        )

    def memory_options(self) -> MemoryOptions:
        """The memory tier's part (``memory_max_ttl`` applies in front of Redis only)."""
        fields = self._memory_fields()
        if self.redis_url is None:
            fields["memory_max_ttl"] = None
        return MemoryOptions(**fields)

    def redis_options(self) -> RedisOptions | None:
        """The Redis connection's part, or None without a ``redis_url``."""
        if self.redis_url is None:
            return None
        return RedisOptions(
            RedisURL.parse(self.redis_url),
            **{name: getattr(self, name) for name in _REDIS_FIELDS},
        )

    def ai_settings(self) -> AISettings:
        """The AI features (the defaults when the configuration has none)."""
        threshold = self.text_hash_threshold
        return AISettings(
            text_hash_threshold=(
                AISettings.text_hash_threshold if threshold is None else threshold
            ),
            operation_ttls=self.operation_ttls,
            enabled=self.enable_ai_cache,
            model_prices=self.model_prices,
        )

    @property
    def has_ai_features(self) -> bool:
        """True when the configuration has AI features (an AI cache is built from it).

        ``enable_ai_cache=False`` (``ENABLE_AI_CACHE=false``) keeps the features but turns
        AI caching off: AI-cached calls then run uncached, counted as bypassed.
        """
        return self.text_hash_threshold is not None

    def replace(self, **changes: Any) -> CacheConfig:
        """A copy with ``changes`` applied (validated again); unknown names are errors."""
        return dataclasses.replace(self, **check_fields(changes, source="configuration"))

    def __repr__(self) -> str:
        shown = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.repr}
        if self.signing_key is not None:
            shown["signing_key"] = "***"
        if self.redis_url:
            shown["redis_url"] = RedisURL.parse(self.redis_url).masked
        shown["operation_ttls"] = dict(self.operation_ttls)
        shown["model_prices"] = dict(self.model_prices)
        return "CacheConfig(" + ", ".join(f"{k}={v!r}" for k, v in shown.items()) + ")"


def _from_values(values: PresetValues) -> CacheConfig:
    return CacheConfig(
        preset=values.name,
        enabled=values.enabled,
        default_ttl=values.default_ttl,
        memory_cache_size=values.memory_cache_size,
        compression_threshold=values.compression_threshold,
        compression_level=values.compression_level,
        text_hash_threshold=values.text_hash_threshold,
        operation_ttls=values.operation_ttls,
    )


#: Every preset as a CacheConfig (without a Redis URL: that comes from the environment).
PRESETS: Mapping[str, CacheConfig] = MappingProxyType(
    {name: _from_values(v) for name, v in PRESET_VALUES.items()}
)


def get_preset(name: str) -> CacheConfig:
    """The configuration of preset ``name``; an unknown name lists the valid ones."""
    preset_values(name)  # raises the ConfigError listing valid names
    return PRESETS[name]


def check_fields(fields: Mapping[str, Any], *, source: str) -> dict[str, Any]:
    """``fields`` with aliases resolved (``l1_cache_size`` is ``memory_cache_size``);
    a name that is not a ``CacheConfig`` field is an error naming ``source``."""
    known = {f.name for f in dataclasses.fields(CacheConfig)}
    out: dict[str, Any] = {}
    for key, value in fields.items():
        name = ALIASES.get(key, key)
        if name not in known:
            raise ConfigError(
                f"{source}: unknown field {key!r}; known fields: "
                f"{', '.join(sorted(known | set(ALIASES)))}"
            )
        out[name] = value
    return out


def parse_custom_config(raw: str) -> dict[str, Any]:
    """The fields of a ``CACHE_CUSTOM_CONFIG`` JSON object, aliases resolved."""
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"CACHE_CUSTOM_CONFIG is not valid JSON ({exc.msg} at line {exc.lineno}, "
            f"column {exc.colno}): it must be a JSON object such as "
            f'{{"default_ttl": 3600}}'
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(f"CACHE_CUSTOM_CONFIG must be a JSON object, not {type(data).__name__}")
    fields = check_fields(data, source="CACHE_CUSTOM_CONFIG")
    if "preset" in fields:
        raise ConfigError("CACHE_CUSTOM_CONFIG: choose the preset with CACHE_PRESET, not 'preset'")
    return fields


def configured_redis_url(environ: Mapping[str, str] | None = None) -> str | None:
    """``CACHE_REDIS_URL``, or None when it is unset or empty."""
    env = os.environ if environ is None else environ
    return env.get("CACHE_REDIS_URL", "").strip() or None


def configured_ai_caching(environ: Mapping[str, str] | None = None) -> bool:
    """``ENABLE_AI_CACHE`` (true unless set to a false value)."""
    return env_flag("ENABLE_AI_CACHE", True, os.environ if environ is None else environ)


def configured_preset(environ: Mapping[str, str] | None = None) -> str | None:
    """The preset ``CACHE_PRESET`` names (checked), or None when it is unset."""
    env = os.environ if environ is None else environ
    name = env.get("CACHE_PRESET", "").strip()
    if not name:
        return None
    preset_values(name)
    return name


def env_overrides(environ: Mapping[str, str] | None = None) -> tuple[str, dict[str, Any]]:
    """The preset name and the field overrides the environment asks for.

    Returns the overrides of the plain variables and of ``CACHE_CUSTOM_CONFIG`` merged,
    the latter winning.
    """
    env = os.environ if environ is None else environ
    preset = configured_preset(env) or "simple"
    overrides: dict[str, Any] = {}
    redis_url = configured_redis_url(env)
    if redis_url is not None:
        overrides["redis_url"] = redis_url
    if env.get("CACHE_NAMESPACE"):
        overrides["namespace"] = env["CACHE_NAMESPACE"].strip()
    if env.get("ENABLE_AI_CACHE", "").strip():
        overrides["enable_ai_cache"] = configured_ai_caching(env)
    if env.get("CACHE_CUSTOM_CONFIG"):
        overrides.update(parse_custom_config(env["CACHE_CUSTOM_CONFIG"]))
    return preset, overrides


def config_from_env(environ: Mapping[str, str] | None = None) -> CacheConfig:
    """The configuration the environment describes.

    Reads ``CACHE_PRESET`` (default ``simple``), ``CACHE_REDIS_URL``, ``CACHE_NAMESPACE``,
    ``ENABLE_AI_CACHE`` and ``CACHE_CUSTOM_CONFIG`` (a JSON object of field overrides;
    ``l1_cache_size`` is accepted for ``memory_cache_size``).
    """
    preset, overrides = env_overrides(environ)
    return PRESETS[preset].replace(**overrides)


class CacheConfigBuilder:
    """Builds a ``CacheConfig`` step by step, starting from a preset.

    ::

        config = (CacheConfigBuilder()
                  .for_environment("production")
                  .with_redis("redis://cache:6379", use_tls=True)
                  .with_compression(threshold=1000, level=6)
                  .with_memory_cache(size=200)
                  .build())

    The environment's values apply under the builder's: ``build()`` starts from the
    preset, applies ``CACHE_*`` variables, then everything set here.
    """

    def __init__(self) -> None:
        self._preset: str | None = None
        self._changes: dict[str, Any] = {}

    def for_environment(self, name: str) -> CacheConfigBuilder:
        """Start from preset ``name`` (``development``, ``production``, ``ai-production`` …)."""
        preset_values(name)
        self._preset = name
        return self

    def with_redis(self, url: str, *, use_tls: bool | None = None) -> CacheConfigBuilder:
        RedisURL.parse(url)
        self._changes["redis_url"] = url
        if use_tls is not None:
            self._changes["use_tls"] = use_tls
        return self

    def with_compression(
        self, *, threshold: int | None = None, level: int | None = None
    ) -> CacheConfigBuilder:
        if threshold is not None:
            self._changes["compression_threshold"] = threshold
        if level is not None:
            self._changes["compression_level"] = level
        return self

    def with_memory_cache(self, *, size: int, enabled: bool = True) -> CacheConfigBuilder:
        self._changes["memory_cache_size"] = size
        self._changes["enable_memory_cache"] = enabled
        return self

    def with_ai_features(
        self,
        *,
        text_hash_threshold: int = 1000,
        operation_ttls: Mapping[str, int] | None = None,
        model_prices: Mapping[str, tuple[float, float]] | None = None,
    ) -> CacheConfigBuilder:
        self._changes["text_hash_threshold"] = text_hash_threshold
        if operation_ttls is not None:
            self._changes["operation_ttls"] = dict(operation_ttls)
        if model_prices is not None:
            self._changes["model_prices"] = dict(model_prices)
        return self

    def with_options(self, **fields: Any) -> CacheConfigBuilder:
        """Any other field of ``CacheConfig`` (checked when built)."""
        self._changes.update(fields)
        return self

    def build(self, environ: Mapping[str, str] | None = None) -> CacheConfig:
        """The validated configuration. Raises ConfigError naming any bad field."""
        env_preset, env_changes = env_overrides(environ)
        base = PRESETS[self._preset or env_preset]
        return base.replace(**env_changes).replace(**self._changes)
