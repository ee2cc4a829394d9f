"""The one place arguments are checked: whole numbers, seconds, flags and keys.

Every check names the argument as the user spelled it, the value given and what is
allowed, and raises ``ConfigError``. ``bool`` is refused wherever a number is meant:
``True`` is an ``int`` to Python, but ``memory_cache_size=True`` is a mistake.
"""

from __future__ import annotations

import math

from memo.exceptions import ConfigError

__all__ = ["check_bool", "check_fraction", "check_int", "check_key", "check_seconds"]


def check_int(name: str, value: object, low: int, high: int | None = None) -> int:
    """``value`` when it is an int (not a bool) from ``low`` to ``high`` inclusive."""
    if isinstance(value, bool) or not isinstance(value, int):
        allowed = f"from {low} to {high}" if high is not None else f"of at least {low}"
        raise ConfigError(f"{name}={value!r}: must be a whole number {allowed}")
    if value < low or (high is not None and value > high):
        allowed = f"from {low} to {high}" if high is not None else f"of at least {low}"
        raise ConfigError(f"{name}={value!r} is out of range: must be a whole number {allowed}")
    return value


def check_seconds(name: str, value: object, high: float, *, allow_zero: bool = False) -> float:
    """``value`` as float seconds: a finite int or float (not a bool), more than 0 (or at
    least 0 with ``allow_zero``) and at most ``high``."""
    low = "at least 0" if allow_zero else "more than 0"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name}={value!r}: must be seconds (an int or float), {low}")
    seconds = float(value)
    too_low = seconds < 0 if allow_zero else seconds <= 0
    if not math.isfinite(seconds) or too_low or seconds > high:
        raise ConfigError(f"{name}={value!r} is out of range: seconds, {low} and at most {high:g}")
    return seconds


def check_fraction(name: str, value: object) -> float:
    """``value`` as a float from 0 (included) to 1 (excluded): a share of something."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ConfigError(f"{name}={value!r}: must be a fraction, 0 <= {name} < 1")
    return float(value)


def check_bool(name: str, value: object) -> bool:
    """``value`` when it is True or False (not 0, 1 or a string)."""
    if not isinstance(value, bool):
        raise ConfigError(f"{name}={value!r}: must be True or False")
    return value


def check_key(key: object, reserved_suffix: str, reserved_prefixes: tuple[str, ...]) -> str:
    """``key`` when it is a non-empty str Redis can take and not one of memo's own
    bookkeeping keys (ending in ``reserved_suffix``, starting with a reserved prefix)."""
    if not isinstance(key, str) or not key:
        raise ConfigError(f"key={key!r}: cache keys are non-empty strings")
    if not key.isascii():
        try:
            key.encode()
        except UnicodeEncodeError:
            raise ConfigError(
                f"key={key!r}: not valid text (a lone surrogate cannot be sent to "
                f"Redis); decode bytes with errors='replace' before using them as keys"
            ) from None
    if key.endswith(reserved_suffix) or key.startswith(reserved_prefixes):
        raise ConfigError(
            f"key={key!r}: keys ending in {reserved_suffix!r} or starting with "
            f"{' or '.join(map(repr, reserved_prefixes))} are memo's own "
            f"bookkeeping; choose another key"
        )
    return key
