"""memo: decorator-first async caching for asyncio services and AI back ends.

::

    from memo import cached

    @cached(ttl=300)
    async def get_user(user_id: int) -> dict: ...

Backends live in ``memo.backends``, counters in ``memo.stats``, the FastAPI helpers in
``memo.integrations.fastapi``. Importing ``memo`` loads neither redis-py nor FastAPI:
redis-py loads with the first Redis cache, FastAPI with the first helper used.
"""

from memo._ai_settings import AISettings
from memo._decorators import ai_cached, cached, default_cache
from memo._sentinel import MISSING
from memo._slots import aclose_all, invalidate_tags, release_connections
from memo._switch import bypass, disable, enable
from memo._valuetypes import register_type
from memo.ai import AIResponseCache
from memo.cache import Cache, InMemoryCache, NullCache
from memo.config import PRESETS, CacheConfig, CacheConfigBuilder, config_from_env, get_preset
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
from memo.factory import CacheFactory
from memo.interface import CacheInterface
from memo.monitoring import CachePerformanceMonitor
from memo.redis_cache import GenericRedisCache

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

#: FastAPI helpers, importable from ``memo`` as the usage guide does, loaded on first use
#: so that ``import memo`` never needs FastAPI (they are not in ``__all__`` for that reason).
_FASTAPI_NAMES = frozenset({"cache_lifespan", "get_ai_cache_service", "get_web_cache_service"})


def __getattr__(name: str) -> object:
    if name in _FASTAPI_NAMES:
        from memo.integrations import fastapi

        return getattr(fastapi, name)
    raise AttributeError(f"module 'memo' has no attribute {name!r}")
