"""memo: decorator-first async caching for asyncio services and AI back ends.

::

    from memo import cached

    @cached(ttl=300)
    async def get_user(user_id: int) -> dict: ...

Backends live in ``memo.backends``, counters in ``memo.stats``, the FastAPI helpers in
``memo.integrations.fastapi``. ``import memo`` loads only the exceptions: each public name
loads its module at its first use, redis-py loads with the first Redis cache, FastAPI
with the first helper used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from memo.exceptions import (
    BackendAuthError,
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    CodecError,
    ConfigError,
    DecodeError,
    EncodeError,
    InfrastructureError,
    KeyDerivationError,
    MemoError,
)

if TYPE_CHECKING:  # what the names below are; they load on first use (see __getattr__)
    from memo._ai_settings import AISettings
    from memo._decorators import ai_cached, cached, default_cache
    from memo._sentinel import MISSING
    from memo._slots import aclose_all, invalidate_tags, release_connections
    from memo._switch import bypass, disable, enable
    from memo._valuetypes import register_type
    from memo.ai import AIResponseCache
    from memo.cache import Cache, InMemoryCache, NullCache
    from memo.config import PRESETS, CacheConfig, CacheConfigBuilder, config_from_env, get_preset
    from memo.factory import CacheFactory
    from memo.interface import CacheInterface
    from memo.monitoring import CachePerformanceMonitor
    from memo.redis_cache import GenericRedisCache

#: Where each public name lives. ``import memo`` loads none of these modules: a name is
#: imported at its first use, so a program that imports memo pays for what it uses.
_LAZY = {
    "AISettings": "memo._ai_settings",
    "ai_cached": "memo._decorators",
    "cached": "memo._decorators",
    "default_cache": "memo._decorators",
    "MISSING": "memo._sentinel",
    "aclose_all": "memo._slots",
    "invalidate_tags": "memo._slots",
    "release_connections": "memo._slots",
    "bypass": "memo._switch",
    "disable": "memo._switch",
    "enable": "memo._switch",
    "register_type": "memo._valuetypes",
    "AIResponseCache": "memo.ai",
    "Cache": "memo.cache",
    "InMemoryCache": "memo.cache",
    "NullCache": "memo.cache",
    "PRESETS": "memo.config",
    "CacheConfig": "memo.config",
    "CacheConfigBuilder": "memo.config",
    "config_from_env": "memo.config",
    "get_preset": "memo.config",
    "CacheFactory": "memo.factory",
    "CacheInterface": "memo.interface",
    "CachePerformanceMonitor": "memo.monitoring",
    "GenericRedisCache": "memo.redis_cache",
    # FastAPI helpers, importable from memo as the usage guide does (not in __all__:
    # they need FastAPI, which memo does not require).
    "cache_lifespan": "memo.integrations.fastapi",
    "get_ai_cache_service": "memo.integrations.fastapi",
    "get_web_cache_service": "memo.integrations.fastapi",
}

__version__ = "0.1.0.dev0"

__all__ = [
    "AIResponseCache",
    "AISettings",
    "BackendAuthError",
    "BackendError",
    "BackendTimeout",
    "BackendUnavailable",
    "Cache",
    "CacheConfig",
    "CacheConfigBuilder",
    "CacheFactory",
    "CacheInterface",
    "CachePerformanceMonitor",
    "CodecError",
    "ConfigError",
    "DecodeError",
    "EncodeError",
    "GenericRedisCache",
    "InMemoryCache",
    "InfrastructureError",
    "KeyDerivationError",
    "MISSING",
    "MemoError",
    "NullCache",
    "PRESETS",
    "aclose_all",
    "ai_cached",
    "bypass",
    "cached",
    "config_from_env",
    "default_cache",
    "disable",
    "enable",
    "get_preset",
    "invalidate_tags",
    "register_type",
    "release_connections",
]


#: Subpackages and modules reachable as attributes (``memo.backends.RedisBackend``), loaded
#: at first use like the names above.
_SUBMODULES = frozenset(
    {
        "ai",
        "backends",
        "cache",
        "cli",
        "config",
        "factory",
        "integrations",
        "interface",
        "monitoring",
        "redis_cache",
        "resilience",
        "stats",
        "testing",
    }
)


def __getattr__(name: str) -> object:
    import importlib

    if name in _SUBMODULES:
        return importlib.import_module(f"memo.{name}")
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'memo' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later uses are plain attribute reads
    return value


def __dir__() -> list[str]:
    dunders = {name for name in globals() if name.startswith("__")}
    return sorted(dunders | set(__all__) | _SUBMODULES | {"exceptions"})
