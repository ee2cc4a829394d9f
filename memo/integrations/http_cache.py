"""HTTP caching for FastAPI: whole GET responses, stored in a memo cache.

::

    app = FastAPI(lifespan=cache_lifespan)
    app.add_middleware(
        HTTPCacheMiddleware,
        rules=[CacheRule("/items/{item_id}", ttl=60, tags=("item:{item_id}",),
                         vary=("Accept-Language",))],
    )

    @app.get("/items/{item_id}")
    async def read_item(item_id: int) -> Item: ...

An ASGI middleware rather than a route decorator, because only a middleware sees the
bytes the client gets: FastAPI serializes what an endpoint returns (response model and
class, headers set on ``Response``) after the endpoint, so a decorator could only store
its own rendering of the value, and hits would differ from misses. The middleware also
answers hits and ``If-None-Match`` before FastAPI validates the request or runs
dependencies, and answers HEAD, which ``@app.get`` routes refuse with 405. The price: a
rule repeats the route's path template, on the middleware.

The key, ``http:{rule name}:{xxh3-128 of scheme, host, path, sorted query and the vary
headers' values}``, leaves the method out, so HEAD is answered from a GET's page. A hit,
or a 304 for an ``If-None-Match`` naming its strong ETag, is sent without calling the
application; a miss runs it (HEAD as GET, the body dropped) and stores a storable
response before sending it. A page is a value like any other in the cache, stored with its
tags (``cache.set(..., tags=...)``: one server-side step on Redis), so ``invalidate_tags``
and ``invalidate_pattern`` drop pages with the data that fed them. No single-flight:
concurrent misses of one page each run the application, and a miss computed across an
invalidation of its tag may store after it (the page then lives out its TTL).
``docs/http-caching.md`` has the details.
"""

from __future__ import annotations

import re
import string
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple
from urllib.parse import parse_qsl

try:
    import fastapi  # noqa: F401  # the extra that brings starlette; named in the error
    from starlette.convertors import Convertor
    from starlette.routing import compile_path
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from memo.integrations.fastapi import app_caches
except ImportError as exc:  # pragma: no cover - exercised in a subprocess
    raise ImportError(
        'memo.integrations.http_cache needs FastAPI: pip install "memo[fastapi]"'
    ) from exc

from memo._canonical import digest, pack
from memo._keys import key_segment
from memo._switch import is_bypassed
from memo._ttl import MAX_TTL_SECONDS, TTL, ttl_to_ms
from memo._validate import check_bool, check_int
from memo.cache import Cache
from memo.exceptions import ConfigError, MemoError

__all__ = ["PAGE_PREFIX", "CacheRule", "HTTPCacheMiddleware"]

#: Every page's key starts with this: ``cache.invalidate_pattern("http:*")`` drops them all.
PAGE_PREFIX = "http:"
# Part of every page key's digest and of the stored value: bump it when either changes.
_FORMAT = 1
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_TEMPLATE_PARAM = re.compile(r"\{([^}:]+)(?::[^}]*)?\}")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
# Not stored with a page: hop-by-hop headers belong to one connection, and the rest are
# written afresh on every answer.
_DROPPED = frozenset(
    b"connection keep-alive proxy-authenticate proxy-authorization te trailer "
    b"transfer-encoding upgrade content-length etag cache-control age vary expires pragma".split()
)
# A response carrying one of these in its own Cache-Control is not the cache's to keep.
_UNSTORABLE = frozenset({"no-store", "no-cache", "private"})
_PERSONAL = frozenset({"authorization", "cookie"})

Headers = list[tuple[bytes, bytes]]


@dataclass(frozen=True)
class CacheRule:
    """Which GET responses to cache, and how.

    Args:
        path: a Starlette path template matched against the request path (without the
            app's ``root_path``), e.g. ``"/items/{item_id}"`` or ``"/files/{rest:path}"``.
        ttl: seconds (or a timedelta) a page stays; None: the middleware's ``ttl``, else
            the cache's ``default_ttl``.
        tags: templates over the path's parameters, e.g. ``"item:{item_id}"``;
            ``cache.invalidate_tags("item:42")`` drops the pages stored with that tag.
        vary: request headers whose values take part in the key (``"Accept-Language"``);
            a response whose own ``Vary`` names another header is not stored.
        cache_errors: store 4xx and 5xx responses too (default: 2xx only).
        max_age: most seconds clients may reuse a page (``Cache-Control: max-age``);
            None: what is left of its TTL. 0: they revalidate every time (304s while
            the page is unchanged), so invalidations reach them at once.
        name: the key segment of this rule's pages (``http:{name}:...``); by default the
            template's words joined by dots, ``"items.item_id"`` for ``/items/{item_id}``.

    Raises:
        ConfigError: a bad path, TTL, tag template, header name or max_age.
    """

    path: str
    ttl: TTL | None = None
    tags: Sequence[str] = ()
    vary: Sequence[str] = ()
    cache_errors: bool = False
    max_age: int | None = None
    name: str | None = None

    def __post_init__(self) -> None:
        params = set(_compile(self.path)[1])
        if self.ttl is not None:
            ttl_to_ms(self.ttl, "ttl")
        object.__setattr__(self, "tags", _check_tags(self.tags, params))
        object.__setattr__(self, "vary", _check_vary(self.vary))
        check_bool("cache_errors", self.cache_errors)
        if self.max_age is not None:
            check_int("max_age", self.max_age, 0, MAX_TTL_SECONDS)
        if self.name is not None:
            key_segment(self.name, "name")

    @property
    def segment(self) -> str:
        """The key segment of this rule's pages."""
        if self.name is not None:
            return key_segment(self.name, "name")
        words = _TEMPLATE_PARAM.sub(r"\1", self.path).strip("/").replace("/", ".")
        return _UNSAFE.sub("_", words) or "root"

    @property
    def pattern(self) -> str:
        """A glob matching every page of this rule: ``cache.invalidate_pattern(rule.pattern)``."""
        return f"{PAGE_PREFIX}{self.segment}:*"


def _compile(path: object) -> tuple[re.Pattern[str], dict[str, Convertor[Any]]]:
    if not isinstance(path, str) or not path.startswith("/"):
        raise ConfigError(
            f"path={path!r}: a rule's path is a template starting with '/', "
            f"such as '/items/{{item_id}}'"
        )
    try:
        regex, _, convertors = compile_path(path)
    except (AssertionError, ValueError) as exc:  # an unknown convertor, a repeated name
        raise ConfigError(f"path={path!r}: {exc}") from exc
    return regex, convertors


def _check_tags(tags: Iterable[str] | str, params: set[str]) -> tuple[str, ...]:
    found = (tags,) if isinstance(tags, str) else tuple(tags)
    for tag in found:
        if not isinstance(tag, str) or not tag:
            raise ConfigError(f"tags={tags!r}: each tag is a non-empty string template")
        for _, field, _, _ in string.Formatter().parse(tag):
            if field is not None and re.split(r"[.\[]", field)[0] not in params:
                raise ConfigError(
                    f"tags: {tag!r} names {{{field}}}, which is not a parameter of the "
                    f"path; use one of {sorted(params)}"
                )
    return found


def _check_vary(vary: Iterable[str] | str) -> tuple[str, ...]:
    found = (vary,) if isinstance(vary, str) else tuple(vary)
    for name in found:
        if name == "*":
            raise ConfigError("vary='*': every request would be its own page; do not cache it")
        if not isinstance(name, str) or not _TOKEN.fullmatch(name):
            raise ConfigError(
                f"vary={vary!r}: each entry is a request header name such as 'Accept-Language'"
            )
    return found


class _Route:
    """A rule, compiled: matching, keys and the headers of answers."""

    def __init__(self, rule: CacheRule, ttl: TTL | None) -> None:
        self.rule = rule
        self.ttl = rule.ttl if rule.ttl is not None else ttl
        self.regex, self.convertors = _compile(rule.path)
        self.segment = rule.segment
        self.vary = tuple(name.lower() for name in rule.vary)
        self.visibility = "private" if _PERSONAL & set(self.vary) else "public"
        self.vary_header = ", ".join(rule.vary).encode("latin-1")

    def match(self, path: str) -> dict[str, Any] | None:
        found = self.regex.match(path)
        if found is None:
            return None
        return {k: self.convertors[k].convert(v) for k, v in found.groupdict().items()}

    def key(self, scope: Scope, headers: dict[str, str]) -> str:
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        query.sort(key=lambda pair: pair[0])  # stable: values of one name keep their order
        host = headers.get("host") or ":".join(map(str, scope.get("server") or ("", "")))
        place = [scope.get("scheme", "http"), host.lower(), scope.get("root_path", "")]
        varied = [[name, headers.get(name)] for name in self.vary]
        material = ["memo.http", _FORMAT, *place, scope["path"], query, varied]
        return f"{PAGE_PREFIX}{self.segment}:{digest(pack(material))}"

    def stores_status(self, status: int) -> bool:
        if 200 <= status < 300:
            return status != 206  # a part is not the page
        return self.rule.cache_errors and 400 <= status < 600

    def cache_headers(self, page: _Page, now_ms: int, *, hit: bool) -> Headers:
        left = max(0, (page.expires_ms - now_ms) // 1000)
        if self.rule.max_age is not None:
            left = min(left, self.rule.max_age)
        out: Headers = [(b"cache-control", f"{self.visibility}, max-age={left}".encode())]
        if page.ok:
            out.append((b"etag", page.etag.encode("latin-1")))
        if self.vary:
            out.append((b"vary", self.vary_header))
        if hit:
            out.append((b"age", str(max(0, (now_ms - page.stored_ms) // 1000)).encode()))
        return out


class _Page(NamedTuple):
    """A stored response."""

    status: int
    headers: Headers
    body: bytes
    etag: str
    stored_ms: int
    expires_ms: int

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def to_value(self) -> list[Any]:
        return [_FORMAT, self.status, [list(h) for h in self.headers], *self[2:]]

    @classmethod
    def from_value(cls, value: Any) -> _Page | None:
        """The page a stored value holds; None for a miss or anything else."""
        if not isinstance(value, list) or len(value) != 7 or value[0] != _FORMAT:
            return None
        _, status, headers, body, etag, stored_ms, expires_ms = value
        try:
            headers = [(bytes(name), bytes(v)) for name, v in headers]
        except (TypeError, ValueError):  # not a page after all: a key of someone else's
            return None
        return cls(status, headers, body, etag, stored_ms, expires_ms)


def _request_headers(scope: Scope) -> dict[str, str]:
    """Lower-cased names to values, repeated fields joined by commas."""
    out: dict[str, str] = {}
    for raw_name, raw_value in scope.get("headers", ()):
        name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
        out[name] = f"{out[name]}, {value}" if name in out else value
    return out


def _directives(value: str | None) -> set[str]:
    if not value:
        return set()
    return {part.split("=", 1)[0].strip().lower() for part in value.split(",")}


def _etag_matches(if_none_match: str | None, etag: str) -> bool:
    """``If-None-Match`` uses the weak comparison: ``W/"x"`` matches ``"x"``."""
    if not if_none_match:
        return False
    for candidate in if_none_match.split(","):
        tag = candidate.strip()
        if tag == "*" or tag.removeprefix("W/") == etag:
            return True
    return False


def _route_path(scope: Scope) -> str:
    """The path the app routes on: without ``root_path``, as Starlette does."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and (path == root or path[len(root)] == "/"):
        return path[len(root) :]
    return path


class HTTPCacheMiddleware:
    """ASGI middleware caching the GET (and HEAD) responses of the paths its rules name.

    Args:
        app: the ASGI application (``app.add_middleware`` passes it).
        rules: ``CacheRule``s, or path templates for rules with default settings.
        cache: where pages live; None: the application's web cache, the one
            ``memo.integrations.fastapi.get_web_cache_service`` gives its endpoints.
        ttl: the TTL of rules that give none (None: the cache's ``default_ttl``).

    Raises:
        ConfigError: no rules, something else than rules, or a bad TTL.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        rules: Iterable[CacheRule | str],
        cache: Cache | None = None,
        ttl: TTL | None = None,
    ) -> None:
        self.app = app
        self.cache = cache
        if ttl is not None:
            ttl_to_ms(ttl, "ttl")
        if isinstance(rules, (str, CacheRule)):
            rules = (rules,)
        found = tuple(CacheRule(r) if isinstance(r, str) else r for r in rules)
        if not found or not all(isinstance(r, CacheRule) for r in found):
            raise ConfigError(
                f"rules={rules!r}: pass CacheRule objects or path templates, at least one"
            )
        if cache is not None and not isinstance(cache, Cache):
            raise ConfigError(f"cache={cache!r}: pass a memo Cache, or None for the app's one")
        self.rules = found
        self._routes = [_Route(rule, ttl) for rule in found]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("GET", "HEAD") or is_bypassed():
            await self.app(scope, receive, send)
            return
        path = _route_path(scope)
        for route in self._routes:
            params = route.match(path)
            if params is not None:
                break
        else:
            await self.app(scope, receive, send)
            return
        headers = _request_headers(scope)
        if "authorization" in headers and "authorization" not in route.vary:
            await self.app(scope, receive, send)  # someone's own answer: not shared
            return
        directives = _directives(headers.get("cache-control"))
        if "cache-control" not in headers:
            directives |= _directives(headers.get("pragma")) & {"no-cache"}
        cache = await self._cache_for(scope)
        key = route.key(scope, headers)
        head = scope["method"] == "HEAD"
        conditional = headers.get("if-none-match")
        if not directives & {"no-cache", "no-store"}:
            page = _Page.from_value(await cache.get(key))
            if page is not None:
                headers_out = route.cache_headers(page, cache.now_ms(), hit=True)
                await _answer(send, page, headers_out, conditional, head)
                return
        store = "no-store" not in directives

        def storable(start: Message) -> bool:
            return store and _storable(cache, route, start)

        async def complete(start: Message, body: bytes) -> None:
            page = await _store(cache, route, key, params, start, body)
            headers_out = route.cache_headers(page, page.stored_ms, hit=False)
            await _answer(send, page, headers_out, conditional, head)

        recorder = _Recorder(send, head, storable, complete)
        # HEAD runs as GET: the page is the GET's, and FastAPI's GET routes refuse HEAD.
        await self.app({**scope, "method": "GET"} if head else scope, receive, recorder.send)

    async def _cache_for(self, scope: Scope) -> Cache:
        if self.cache is not None:
            return self.cache
        app = scope.get("app")
        if not hasattr(app, "state"):
            raise ConfigError("HTTPCacheMiddleware: this app keeps no web cache; pass cache=...")
        return await app_caches(app).web_cache()


def _storable(cache: Cache, route: _Route, start: Message) -> bool:
    """Whether a response, by its status and headers, may become a page."""
    if not route.stores_status(start["status"]) or start.get("trailers", False):
        return False
    fields: dict[bytes, list[str]] = {}
    for name, value in start.get("headers", ()):
        fields.setdefault(name.lower(), []).append(value.decode("latin-1"))
    control = _directives(", ".join(fields.get(b"cache-control", ())))
    if b"set-cookie" in fields or control & _UNSTORABLE:
        return False
    extra = _directives(", ".join(fields.get(b"vary", ()))) - set(route.vary)
    if extra:
        cache.log_once(
            f"http-vary:{route.rule.path}",
            "memo: responses of %s vary on %s, which its CacheRule does not name in vary=; "
            "they are not cached",
            route.rule.path,
            ", ".join(sorted(extra)),
        )
        return False
    return True


async def _store(
    cache: Cache,
    route: _Route,
    key: str,
    params: dict[str, Any],
    start: Message,
    body: bytes,
) -> _Page:
    """Make the page of a complete response and store it (best effort: a page that
    cannot be stored is still sent)."""
    ttl_ms = cache.ttl_ms(route.ttl)
    now = cache.now_ms()
    kept = [(bytes(n).lower(), bytes(v)) for n, v in start.get("headers", ())]
    headers = [(n, v) for n, v in kept if n not in _DROPPED]
    etag = f'"{digest(body)}"'
    page = _Page(start["status"], headers, body, etag, now, now + ttl_ms)
    try:
        tags = [template.format_map(params) for template in route.rule.tags]
    except Exception as exc:  # a page its tags do not reach would outlive their invalidation
        cache.log_once(f"http-tags:{route.rule.path}", "memo: page not cached: %r", exc)
        return page
    try:
        # Page and tags in one step (on Redis, one script): no invalidation between.
        await cache.set(key, page.to_value(), ttl=ttl_ms / 1000, tags=tags)
    except MemoError as exc:  # too large for the codec, or a strict cache's backend failed
        cache.log_once(f"http-store:{route.rule.path}", "memo: page not cached: %s", exc)
    return page


async def _answer(
    send: Send, page: _Page, cache_headers: Headers, if_none_match: str | None, head: bool
) -> None:
    """Send a page: 304 when the client holds it already (2xx only), else in full."""
    if page.ok and _etag_matches(if_none_match, page.etag):
        await send({"type": "http.response.start", "status": 304, "headers": cache_headers})
        await send({"type": "http.response.body", "body": b""})
        return
    headers = page.headers + cache_headers
    if page.status != 204:
        headers.append((b"content-length", str(len(page.body)).encode()))
    await send({"type": "http.response.start", "status": page.status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else page.body})


class _Recorder:
    """The ``send`` of one miss: holds a storable response back until its body is
    complete, and passes anything else on as it comes (bodies dropped for HEAD)."""

    def __init__(
        self,
        send: Send,
        head: bool,
        storable: Callable[[Message], bool],
        complete: Callable[[Message, bytes], Awaitable[None]],
    ) -> None:
        self._send, self._head, self._storable, self._complete = send, head, storable, complete
        self._held: Message | None = None
        self._passing = False

    async def send(self, message: Message) -> None:
        if self._passing:
            await self._forward(message)
            return
        if message["type"] == "http.response.start":
            if self._storable(message):
                self._held = message
            else:
                self._passing = True
                await self._forward(message)
            return
        held, self._held = self._held, None
        self._passing = True  # whatever follows is passed on
        if held is None:
            await self._forward(message)
        elif message["type"] == "http.response.body" and not message.get("more_body", False):
            await self._complete(held, bytes(message.get("body", b"")))
        else:  # a streamed body, trailers, an extension: not a page
            await self._forward(held)
            await self._forward(message)

    async def _forward(self, message: Message) -> None:
        if self._head and message["type"] == "http.response.body" and message.get("body"):
            message = {**message, "body": b""}
        await self._send(message)
