"""Reading flags from the environment, with errors that say what is accepted."""

from __future__ import annotations

import os
from collections.abc import Mapping

from memo.exceptions import ConfigError

__all__ = ["env_flag", "parse_flag"]

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def parse_flag(name: str, raw: str) -> bool:
    """``raw`` as a boolean; anything but the usual spellings is a ConfigError."""
    low = raw.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ConfigError(f"{name}={raw!r}: use true or false (or 1/0, yes/no, on/off)")


def env_flag(name: str, default: bool, environ: Mapping[str, str] | None = None) -> bool:
    """The boolean environment variable ``name``; ``default`` when unset or empty."""
    raw = (os.environ if environ is None else environ).get(name, "")
    return default if not raw.strip() else parse_flag(name, raw)
