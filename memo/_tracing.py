"""Spans around computations and Redis commands, for whoever installs a tracer.

Off by default: ``TRACING.tracer`` is None and the two call sites (a decorated
function's computation, one Redis command) pay one attribute read. An integration
(``memo.integrations.otel``) installs a tracer: any object with
``start_as_current_span(name, attributes=...)`` returning a context manager, as
OpenTelemetry's tracers do. A hit is never traced: it does no work worth a span.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["TRACING", "traced_computation"]


class _Tracing:
    __slots__ = ("tracer",)

    def __init__(self) -> None:
        self.tracer: Any = None


TRACING = _Tracing()


def traced_computation(
    run: Callable[..., Awaitable[Any]], function_id: str, operation: str | None
) -> Callable[..., Awaitable[Any]]:
    """``run`` inside a ``memo.compute`` span whenever a tracer is installed.

    Untraced, the call returns ``run``'s own awaitable: no coroutine of ours around it
    (one frame fewer on every miss)."""

    async def traced(tracer: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        attributes = {"code.function.name": function_id}
        if operation is not None:
            attributes["memo.ai.operation"] = operation
        with tracer.start_as_current_span("memo.compute", attributes=attributes):
            return await run(*args, **kwargs)

    @functools.wraps(run)
    def computation(*args: Any, **kwargs: Any) -> Awaitable[Any]:
        tracer = TRACING.tracer  # read once: the span is opened with the tracer seen here
        if tracer is None:
            return run(*args, **kwargs)
        return traced(tracer, args, kwargs)

    return computation
