"""redis-py's errors, translated at the boundary into memo's (most specific first).

Every message names the server by its masked URL and says what to do; none carries the
password (``scrub`` removes it from redis-py's own text).
"""

from __future__ import annotations

from collections.abc import Callable

from redis.exceptions import AuthenticationError, RedisError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from memo.exceptions import BackendAuthError, BackendError, BackendTimeout, BackendUnavailable

__all__ = ["TRANSLATED", "translate_error"]

#: What ``translate_error`` takes: a deadline, and redis-py's and the socket's errors.
TRANSLATED = (TimeoutError, RedisError, OSError)


def _refused_credentials(exc: BaseException) -> bool:
    """A wrong password or user: redis-py raises AuthenticationError, or a connection
    error carrying the server's WRONGPASS / NOAUTH reply, depending on the version."""
    text = str(exc)
    return isinstance(exc, AuthenticationError) or "WRONGPASS" in text or "NOAUTH" in text


def translate_error(
    exc: BaseException, *, what: str, where: str, scrub: Callable[[str], str], timeout: float
) -> tuple[BackendError, bool]:
    """memo's error for a failed Redis command, and whether it was an outage (the server
    did not answer: the circuit breaker counts it) rather than an error reply."""
    if isinstance(exc, RedisTimeoutError):
        return BackendTimeout(f"Redis {what} at {where} timed out: {scrub(str(exc))}"), True
    if isinstance(exc, TimeoutError):  # asyncio.timeout's, the operation deadline
        return BackendTimeout(
            f"Redis {what} did not finish within {timeout:g} s: the server is slow or "
            f"unreachable; raise operation_timeout if it is merely slow"
        ), True
    if isinstance(exc, (RedisConnectionError, OSError)):
        if _refused_credentials(exc):
            return BackendAuthError(
                f"Redis at {where} refused the credentials ({type(exc).__name__}): check "
                f"the user name and password in redis_url"
            ), True
        return BackendUnavailable(
            f"Redis at {where} is unreachable ({type(exc).__name__}: {scrub(str(exc))}); "
            f"check that it runs and that redis_url is right"
        ), True
    return BackendError(f"Redis {what} failed: {type(exc).__name__}: {scrub(str(exc))}"), False
