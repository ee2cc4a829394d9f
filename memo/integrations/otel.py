"""OpenTelemetry metrics, and optional spans, for memo caches: ``pip install "memo[otel]"``.

::

    from memo.integrations.otel import instrument

    instrumentation = instrument()            # global providers, every cache, no spans
    instrumentation = instrument(meter_provider, tracer_provider, spans=True)
    ...
    instrumentation.uninstrument()

The metrics are the figures of ``memo.integrations.prometheus``, read from the counters
caches keep anyway by observable instruments on a meter named ``memo``: the callbacks
run when a metric reader collects, and a cached call does no extra work for them.
OpenTelemetry's semantic conventions define no cache metrics, so names follow its
naming rules (dotted, counters of things plural with a ``{thing}`` unit, no ``total``,
UpDownCounters singular, times in ``s`` named ``.time``, bytes in ``By``):

==============================  ===============  ========================================
``memo.cache.hits``             ``{hit}``        reads answered from the cache
``memo.cache.misses``           ``{miss}``       reads that found nothing
``memo.cache.tier.hits``        ``{hit}``        hits by ``memo.cache.tier``: memory, redis
``memo.cache.coalesced``        ``{call}``       callers that joined a running computation
``memo.cache.sets``             ``{operation}``  values written
``memo.cache.deletes``          ``{operation}``  keys deleted
``memo.cache.errors``           ``{error}``      backend operations that failed
``memo.cache.bypassed``         ``{call}``       calls that went around the cache
``memo.function.calls``         ``{call}``       by ``memo.result``: hit, miss, coalesced,
                                                 bypassed
``memo.function.errors``        ``{error}``      decorated computations that raised
``memo.function.compute.time``  ``s``            time spent computing
``memo.redis.operations``       ``{operation}``  Redis operations, failures included
``memo.redis.operation.time``   ``s``            their total duration
``memo.memory.entry.count``     ``{entry}``      entries in the memory tier (UpDownCounter)
``memo.memory.usage``           ``By``           bytes in the memory tier (UpDownCounter)
``memo.ai.saved.tokens``        ``{token}``      by ``memo.ai.operation`` and
                                                 ``gen_ai.token.type`` (input, output)
``memo.ai.saved.cost``          ``{currency}``   in the price table's currency
==============================  ===============  ========================================

Every metric carries ``memo.cache.name``, the label the Prometheus collector gives
(``namespace/backend``, ``#2`` … for twins); function metrics carry
``memo.function.name`` (``namespace:module.qualname``). ``gen_ai.token.type`` is the
GenAI conventions' attribute (memo's prompt tokens are ``input``, completion ``output``).

Redis latency is a count and a sum, not a histogram: the API has no observable
histogram, and a synchronous one would add a call to every Redis command. The pair
is exact and cumulative (the Prometheus histogram's ``_count`` and ``_sum``), sums
across caches and processes, and gives the mean latency as the ratio of their rates;
percentile gauges of the recent-samples window would not sum. The distribution is in
the Prometheus histogram, and in each command's span when spans are on.

``spans=True`` installs a tracer in ``memo._tracing.TRACING``: a computation after a
miss is a ``memo.compute`` span (``code.function.name``; ``memo.ai.operation`` for AI
functions) and each Redis command a span named like ``Redis GET`` (``db.system.name``,
``db.operation.name``). Hits are never traced.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any

try:
    from opentelemetry import metrics, trace
    from opentelemetry.metrics import CallbackOptions, Meter, MeterProvider, Observation
    from opentelemetry.trace import Tracer, TracerProvider
except ImportError as exc:  # pragma: no cover - exercised in a subprocess
    raise ImportError(
        'memo.integrations.otel needs opentelemetry-api: pip install "memo[otel]"'
    ) from exc

from memo import __version__
from memo._cache_core import CacheCore, live_caches
from memo._metrics import FUNCTION_RESULTS, cache_labels, functions_by_label
from memo._tracing import TRACING
from memo.stats import LatencyWindow

__all__ = ["METER_NAME", "Instrumentation", "instrument"]

#: The name of memo's meter and tracer (the instrumentation scope).
METER_NAME = "memo"

CACHE = "memo.cache.name"
TIER = "memo.cache.tier"
FUNCTION = "memo.function.name"
RESULT = "memo.result"
OPERATION = "memo.ai.operation"
TOKEN_TYPE = "gen_ai.token.type"

#: Cache-level counters: instrument name, CacheStats field, unit, description.
_CACHE_COUNTERS = (
    ("memo.cache.hits", "hits", "{hit}", "Reads answered from the cache."),
    ("memo.cache.misses", "misses", "{miss}", "Reads that found nothing."),
    ("memo.cache.coalesced", "coalesced", "{call}", "Callers that joined a computation."),
    ("memo.cache.sets", "sets", "{operation}", "Values written."),
    ("memo.cache.deletes", "deletes", "{operation}", "Keys deleted."),
    ("memo.cache.errors", "errors", "{error}", "Backend operations that failed."),
    ("memo.cache.bypassed", "bypassed", "{call}", "Calls that went around the cache."),
)
_Observe = Callable[[CallbackOptions], Iterable[Observation]]


def _latency(cache: CacheCore) -> LatencyWindow | None:
    window = getattr(cache.remote_server(), "latency", None)
    return window if isinstance(window, LatencyWindow) else None


class _Feed:
    """memo's instruments on one meter provider, reporting the caches of every active
    :class:`Instrumentation` made on it.

    The instruments are created once per provider and never removed: the metrics API
    cannot unregister a callback, and the SDK answers a second instrument of the same
    name with the first, callbacks included. Instrumenting again therefore adds a
    source to this feed instead of adding instruments.
    """

    def __init__(self, meter: Meter) -> None:
        # Replaced, never mutated: callbacks run on the reader's thread and read a
        # consistent tuple without a lock.
        self.sources: tuple[Instrumentation, ...] = ()
        counter, gauge = meter.create_observable_counter, meter.create_observable_up_down_counter
        for name, field, unit, description in _CACHE_COUNTERS:
            counter(name, [self._stat(field)], unit, description)
        counter("memo.cache.tier.hits", [self._tier_hits], "{hit}", "Hits by tier.")
        counter(
            "memo.function.calls",
            [self._calls],
            "{call}",
            "Calls of decorated functions, by result.",
        )
        counter(
            "memo.function.errors",
            [self._function("errors")],
            "{error}",
            "Decorated computations that raised.",
        )
        counter(
            "memo.function.compute.time",
            [self._function("compute_seconds")],
            "s",
            "Time spent computing decorated functions.",
        )
        counter(
            "memo.redis.operations",
            [self._redis(lambda w: w.total)],
            "{operation}",
            "Redis operations, failures included.",
        )
        counter(
            "memo.redis.operation.time",
            [self._redis(lambda w: w.sum)],
            "s",
            "Total duration of the Redis operations.",
        )
        gauge(
            "memo.memory.entry.count",
            [self._memory("entries")],
            "{entry}",
            "Entries in the memory tier.",
        )
        gauge("memo.memory.usage", [self._memory("bytes")], "By", "Bytes in the memory tier.")
        counter(
            "memo.ai.saved.tokens",
            [self._tokens],
            "{token}",
            "Tokens that AI cache hits saved.",
        )
        counter(
            "memo.ai.saved.cost",
            [self._cost],
            "{currency}",
            "Money that AI cache hits saved, in the price table's currency.",
        )

    def labelled(self) -> list[tuple[str, CacheCore]]:
        """The caches to report now, with their labels."""
        sources = self.sources
        if not sources:
            return []
        if any(source.caches is None for source in sources):
            return cache_labels(live_caches())
        chosen = {id(cache): cache for source in sources for cache in source.caches or ()}
        return cache_labels(chosen.values())

    def _stat(self, field: str) -> _Observe:
        def observe(options: CallbackOptions) -> list[Observation]:
            return [
                Observation(getattr(cache.stats, field), {CACHE: label})
                for label, cache in self.labelled()
            ]

        return observe

    def _tier_hits(self, options: CallbackOptions) -> list[Observation]:
        out = []
        for label, cache in self.labelled():
            out.append(Observation(cache.stats.memory_hits, {CACHE: label, TIER: "memory"}))
            out.append(Observation(cache.stats.redis_hits, {CACHE: label, TIER: "redis"}))
        return out

    def _calls(self, options: CallbackOptions) -> list[Observation]:
        return [
            Observation(row[counter], {CACHE: label, FUNCTION: function, RESULT: result})
            for label, cache in self.labelled()
            for function, row in functions_by_label(cache).items()
            for counter, result in FUNCTION_RESULTS.items()
        ]

    def _function(self, field: str) -> _Observe:
        def observe(options: CallbackOptions) -> list[Observation]:
            return [
                Observation(row[field], {CACHE: label, FUNCTION: function})
                for label, cache in self.labelled()
                for function, row in functions_by_label(cache).items()
            ]

        return observe

    def _redis(self, figure: Callable[[LatencyWindow], float]) -> _Observe:
        def observe(options: CallbackOptions) -> list[Observation]:
            out = []
            for label, cache in self.labelled():
                window = _latency(cache)
                if window is not None:
                    out.append(Observation(figure(window), {CACHE: label}))
            return out

        return observe

    def _memory(self, field: str) -> _Observe:
        def observe(options: CallbackOptions) -> list[Observation]:
            return [
                Observation(cache.memory_usage()[field], {CACHE: label})
                for label, cache in self.labelled()
            ]

        return observe

    def _savings(self) -> Iterable[tuple[str, str, dict[str, Any]]]:
        for label, cache in self.labelled():
            saved = cache.savings.summary(cache.ai.model_prices)
            for operation, row in saved["by_operation"].items():
                yield label, operation, row

    def _tokens(self, options: CallbackOptions) -> list[Observation]:
        out = []
        for label, operation, row in self._savings():
            base = {CACHE: label, OPERATION: operation}
            out.append(Observation(row["prompt_tokens"], {**base, TOKEN_TYPE: "input"}))
            out.append(Observation(row["completion_tokens"], {**base, TOKEN_TYPE: "output"}))
        return out

    def _cost(self, options: CallbackOptions) -> list[Observation]:
        return [
            Observation(row["cost"], {CACHE: label, OPERATION: operation})
            for label, operation, row in self._savings()
            if row["cost"] is not None
        ]


#: One feed per meter provider, dropped with the provider. The feed holds no reference
#: to its provider (only the provider's instruments hold the feed), so the weak key
#: does not keep it alive.
_FEEDS: weakref.WeakKeyDictionary[MeterProvider, _Feed] = weakref.WeakKeyDictionary()


class _Tracers:
    """The tracers of active instrumentations with spans on, oldest first. The newest is
    the installed one, so removing any of them, in any order, leaves the right one
    installed; removing the last restores what was there before the first (None,
    unless set by hand)."""

    def __init__(self) -> None:
        self.stack: list[Tracer] = []
        self.before: Any = None

    def push(self, tracer: Tracer) -> None:
        if not self.stack:
            self.before = TRACING.tracer
        self.stack.append(tracer)
        TRACING.tracer = tracer

    def remove(self, tracer: Tracer) -> None:
        self.stack.remove(tracer)
        TRACING.tracer = self.stack[-1] if self.stack else self.before


_TRACERS = _Tracers()


class Instrumentation:
    """What :func:`instrument` set up (made by it, not directly): a source of metrics,
    and a tracer when spans are on.

    ``uninstrument()`` (or leaving a ``with`` block) stops both: the callbacks report
    nothing more for this instrumentation, and its tracer is no longer installed. The
    instruments themselves stay on the meter, empty, as the metrics API cannot remove
    them; instrumenting the same provider again reuses them.
    """

    def __init__(self, feed: _Feed, caches: list[CacheCore] | None, tracer: Tracer | None) -> None:
        self._feed = feed
        self._caches = caches
        self._tracer = tracer
        self._active = True

    @property
    def caches(self) -> list[CacheCore] | None:
        """The caches reported; None for every cache of the process, now and later."""
        return self._caches

    @property
    def tracer(self) -> Tracer | None:
        """The tracer installed for spans; None when spans are off."""
        return self._tracer

    @property
    def active(self) -> bool:
        """True until ``uninstrument()``."""
        return self._active

    def _start(self) -> None:
        self._feed.sources = (*self._feed.sources, self)
        if self._tracer is not None:
            _TRACERS.push(self._tracer)

    def uninstrument(self) -> None:
        """Stop reporting and tracing; calling it again does nothing."""
        if not self._active:
            return
        self._active = False
        self._feed.sources = tuple(s for s in self._feed.sources if s is not self)
        if self._tracer is not None:
            _TRACERS.remove(self._tracer)

    def __enter__(self) -> Instrumentation:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.uninstrument()


def instrument(
    meter_provider: MeterProvider | None = None,
    tracer_provider: TracerProvider | None = None,
    *,
    caches: Iterable[CacheCore] | None = None,
    spans: bool = False,
) -> Instrumentation:
    """Report memo's metrics through OpenTelemetry, and trace its work if ``spans``.

    Args:
        meter_provider: where the ``memo`` meter comes from; None for the global one
            (set it before calling: instruments made on the API's placeholder provider
            are only realized when the real one is set).
        tracer_provider: where the ``memo`` tracer comes from when ``spans`` is true;
            None for the global one.
        caches: the caches to report; None (default) reports every cache of the
            process, including those built later.
        spans: install a tracer for ``memo.compute`` and Redis command spans (off by
            default: tracing every miss and command costs time some services won't pay).

    Returns:
        An :class:`Instrumentation`; ``uninstrument()`` it, or use it in a ``with``.
    """
    provider = metrics.get_meter_provider() if meter_provider is None else meter_provider
    feed = _FEEDS.get(provider)
    if feed is None:
        feed = _FEEDS[provider] = _Feed(provider.get_meter(METER_NAME, __version__))
    tracer = None
    if spans:
        tracer = trace.get_tracer(METER_NAME, __version__, tracer_provider=tracer_provider)
    handle = Instrumentation(feed, None if caches is None else list(caches), tracer)
    handle._start()
    return handle
