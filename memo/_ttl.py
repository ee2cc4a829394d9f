"""TTL arguments: seconds or a timedelta in, whole milliseconds out."""

from __future__ import annotations

import math
from datetime import timedelta

from memo.exceptions import ConfigError

#: Seconds as int/float, or a timedelta. None means "the cache's default_ttl" where allowed.
TTL = int | float | timedelta

MAX_TTL_SECONDS = 365 * 24 * 3600


def ttl_to_ms(ttl: object, argument: str = "ttl") -> int:
    """Validate a TTL and convert it to whole milliseconds (at least 1).

    Zero, negative, non-finite and over-a-year TTLs are refused rather than clamped:
    a TTL of 0 meaning "forever" in one library and "don't cache" in another is exactly
    the ambiguity that loses data, so the caller must say what they mean.
    """
    if isinstance(ttl, timedelta):
        seconds = ttl.total_seconds()
    elif isinstance(ttl, (int, float)) and not isinstance(ttl, bool):
        seconds = float(ttl)
    else:
        raise ConfigError(
            f"{argument}={ttl!r} is not a TTL: pass seconds as an int or float, "
            f"or a datetime.timedelta"
        )
    if not math.isfinite(seconds) or seconds <= 0 or seconds > MAX_TTL_SECONDS:
        raise ConfigError(
            f"{argument}={ttl!r} is out of range: a TTL must be more than 0 and at most "
            f"{MAX_TTL_SECONDS} seconds (365 days); to keep a value longer, refresh it"
        )
    return max(1, round(seconds * 1000))
