"""Redis URLs: parsed once, checked, shown without their secrets.

``RedisURL.parse`` is the one place a Redis URL is read. It accepts what redis-py's
``from_url`` would understand *and* memo allows, and refuses the rest when the URL is
given, naming the argument, the bad part and the way out: a typo must not surface later
as a ``TypeError`` from inside redis-py on every call. Nothing here imports redis-py.

Passwords never leave this module except through ``client_url``, which exists to be
handed to redis-py: reprs, ``str()``, ``masked`` and every error show ``***`` instead.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote, unquote_plus, urlsplit

from memo.exceptions import ConfigError

__all__ = ["CLUSTER_SCHEME", "REDIS_SCHEMES", "SENTINEL_SCHEME", "RedisURL"]

REDIS_SCHEMES = ("redis", "rediss", "unix", "redis+sentinel", "redis+cluster")
SENTINEL_SCHEME = "redis+sentinel"
CLUSTER_SCHEME = "redis+cluster"
_SENTINEL_PORT = 26379
_DEFAULT_PORT = 6379
_MAX_DATABASE = 2**31 - 1  # the most a server's "databases" setting allows
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_EXAMPLES = (
    "redis://host:6379/0, rediss://host:6380/0 (TLS), unix:///path/to/redis.sock, "
    "redis+sentinel://sentinel1:26379,sentinel2:26379/mymaster/0 or "
    "redis+cluster://node1:6379,node2:6379"
)

#: Query parameters memo passes on to redis-py, each with what a valid value looks like.
_PASSED_ON = {
    "client_name": "a name shown by CLIENT LIST",
    "health_check_interval": "whole seconds, 0 or more",
    "socket_keepalive": "true or false",
    "ssl_check_hostname": "true or false (rediss:// only)",
}
_CREDENTIALS = ("username", "password")
#: Query parameters redis-py understands but memo sets itself: where to say it instead.
_MEMO_SETS = {
    "socket_connect_timeout": "pass connect_timeout= to memo",
    "socket_timeout": "memo bounds every command by operation_timeout=",
    "timeout": "memo waits for a pooled connection within operation_timeout=",
    "max_connections": "pass max_connections= to memo",
    "retry_on_timeout": "memo retries reads once, within operation_timeout=",
    "protocol": "memo uses the protocol redis-py chooses by default",
}
_ACCEPTED = ("db", *_CREDENTIALS, *_PASSED_ON)
_SECRET_WORDS = ("pass", "pwd", "token", "secret", "auth", "key")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _join(addresses: tuple[tuple[str, int], ...]) -> str:
    """``host:port,host:port``, IPv6 hosts in brackets."""
    return ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in addresses)


def _looks_secret(name: str) -> bool:
    return any(word in name.lower() for word in _SECRET_WORDS)


def _mask_raw(url: str) -> str:
    """``url`` as given, with anything that may be a secret replaced by ``***``; for
    errors about URLs that did not parse. Everything before the last ``@`` is taken as
    credentials, so a password holding an unencoded ``/``, ``?`` or ``#`` is hidden too."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "***" if "@" in url else url
    if "@" in rest:
        userinfo, _, rest = rest.rpartition("@")
        user, colon, _ = userinfo.partition(":")
        hidden = "***" if any(c in user for c in "/?#") else (f"{user}:***" if colon else user)
        rest = f"{hidden}@{rest}"
    base, question, query = rest.partition("?")
    query, hash_, _ = query.partition("#")
    if question:
        pairs = []
        for piece in query.split("&"):
            name, eq, _ = piece.partition("=")
            pairs.append(f"{name}=***" if eq and _looks_secret(unquote_plus(name)) else piece)
        base += "?" + "&".join(pairs)
    if hash_ or "#" in base:
        base = base.partition("#")[0] + "#***"
    return f"{scheme}://{base}"


def _flag(value: str) -> str | None:
    lowered = value.lower()
    if lowered in _TRUE:
        return "true"
    if lowered in _FALSE:
        return "false"
    return None


@dataclass(frozen=True)
class RedisURL:
    """A Redis URL, validated: ``redis://``, ``rediss://`` (TLS), ``unix://``, or
    ``redis+sentinel://s1:26379,s2:26379/service/db`` (the primary a Sentinel set names),
    or ``redis+cluster://n1:6379,n2:6379`` (a Redis Cluster, found from those nodes).

    ``host`` and ``port`` are None for a unix socket, for Sentinel (whose ``sentinels``
    and ``service`` say where to ask) and for a cluster (``cluster_nodes``: where to
    start), ``socket_path`` None otherwise.
    ``database`` comes from the path (``redis://host/3``) or ``?db=3`` (the only way
    for a socket). ``options`` are the other query parameters memo passes on to
    redis-py, normalized. Build one with ``RedisURL.parse``.
    """

    scheme: str
    host: str | None = None
    port: int | None = None
    database: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    socket_path: str | None = None
    options: tuple[tuple[str, str], ...] = ()
    sentinels: tuple[tuple[str, int], ...] = ()
    service: str | None = None
    cluster_nodes: tuple[tuple[str, int], ...] = ()

    @classmethod
    def parse(cls, url: str, argument: str = "redis_url") -> RedisURL:
        """Read and check ``url``.

        Raises:
            ConfigError: naming ``argument``, the URL with its secrets masked, the part
                that is wrong and how to write it.
        """
        if not isinstance(url, str):
            raise ConfigError(
                f"{argument}: a Redis URL is a str such as {_EXAMPLES}, not a {type(url).__name__}"
            )
        return _Parser(url, argument).parse()

    @property
    def tls(self) -> bool:
        return self.scheme == "rediss"

    def with_tls(self) -> RedisURL:
        """This URL over TLS (``rediss://``); a unix socket cannot be."""
        if self.sentinels or self.cluster_nodes:
            kind = "Sentinel sets" if self.sentinels else "Redis Cluster"
            raise ConfigError(
                f"use_tls=True with redis_url={self.masked!r}: memo does not speak TLS to "
                f"{kind} yet; drop use_tls"
            )
        if self.scheme == "unix":
            raise ConfigError(
                f"use_tls=True with redis_url={self.masked!r}: a unix socket has no TLS; "
                f"use rediss://host:port, or drop use_tls"
            )
        return dataclasses.replace(self, scheme="rediss")

    @property
    def masked(self) -> str:
        """The URL to show: its password (and any secret-looking value) as ``***``."""
        return self._render(masked=True)

    @property
    def client_url(self) -> str:
        """The URL to hand to redis-py, password included: never log or show it."""
        return self._render(masked=False)

    def _render(self, *, masked: bool) -> str:
        auth = ""
        if self.username or self.password:
            auth = quote(self.username or "", safe="")
            if self.password:
                auth += ":" + ("***" if masked else quote(self.password, safe=""))
            auth += "@"
        query = [(name, value) for name, value in self.options]
        if self.socket_path is not None:
            if self.database:
                query.insert(0, ("db", str(self.database)))
            where = quote(self.socket_path, safe="/")
        elif self.sentinels:
            hosts = _join(self.sentinels)
            where = f"{hosts}/{quote(self.service or '', safe='')}/{self.database}"
        elif self.cluster_nodes:
            where = f"{_join(self.cluster_nodes)}/0"
        else:
            host = self.host or "localhost"
            host = f"[{host}]" if ":" in host else host
            where = f"{host}:{self.port or _DEFAULT_PORT}/{self.database}"
        shown = "&".join(
            f"{name}={'***' if masked and _looks_secret(name) else quote(value, safe='')}"
            for name, value in query
        )
        return f"{self.scheme}://{auth}{where}" + (f"?{shown}" if shown else "")

    def __str__(self) -> str:
        return self.masked

    def __repr__(self) -> str:
        return f"RedisURL({self.masked!r})"


class _Parser:
    """One parse of one URL, so that every error names it the same way."""

    def __init__(self, url: str, argument: str) -> None:
        self.url = url
        self.argument = argument

    def fail(self, problem: str, fix: str) -> ConfigError:
        return ConfigError(f"{self.argument}={_mask_raw(self.url)!r}: {problem}; {fix}")

    def parse(self) -> RedisURL:
        scheme, sep, _ = self.url.partition("://")
        scheme = scheme.lower()
        if not sep or scheme not in REDIS_SCHEMES:
            shown = scheme if sep else "none"
            raise self.fail(f"scheme {shown!r} is not a Redis URL", f"use {_EXAMPLES}")
        try:
            parts = urlsplit(self.url)
        except ValueError as exc:  # unbalanced [ ] around an IPv6 host
            raise self.fail(f"it does not parse ({exc})", f"write it as {_EXAMPLES}") from None
        # An "@" past the host is a password character that needed percent-encoding
        # (its "/", "?" or "#" cut the URL short); nothing past that point can be trusted.
        if "@" in parts.path or "@" in parts.query or "@" in parts.fragment:
            raise self.fail(
                "'@' after the host",
                "percent-encode '/', '?', '#' and '@' in a user name or password "
                "(urllib.parse.quote(password, safe=''))",
            )
        if parts.fragment or self.url.endswith("#"):
            raise self.fail(
                "a '#fragment' means nothing to Redis",
                "remove it, or percent-encode '#' in a password as %23",
            )
        userinfo = parts.netloc.rpartition("@")[0]
        if _BAD_ESCAPE.search(userinfo):
            raise self.fail(
                "a '%' in the user name or password is not followed by two hex digits",
                "percent-encode it as %25 (urllib.parse.quote(password, safe=''))",
            )
        query = self.query(parts.query)
        if scheme == SENTINEL_SCHEME:
            return self.sentinel(parts, query)
        if scheme == CLUSTER_SCHEME:
            return self.cluster(parts, query)
        username = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password else None
        for name, given in (("username", username), ("password", password)):
            if name in query and given is not None:
                raise self.fail(
                    f"{name} given both before the host and as ?{name}=", "give it once"
                )
        username = query.pop("username", None) or username
        password = query.pop("password", None) or password
        database = self.database(query.pop("db", None), parts.path, scheme)
        if "ssl_check_hostname" in query and scheme != "rediss":
            raise self.fail(
                "ssl_check_hostname is a TLS setting", "use rediss:// for a TLS connection"
            )
        options = tuple(sorted(query.items()))
        host_port = parts.netloc.rpartition("@")[2]
        if scheme == "unix":
            if host_port:
                raise self.fail(
                    f"host {host_port!r} in a unix:// URL",
                    "a socket path is absolute, after three slashes: unix:///path/to/redis.sock",
                )
            if not parts.path or parts.path == "/":
                raise self.fail("no socket path", "write unix:///path/to/redis.sock")
            return RedisURL(
                scheme,
                database=database,
                username=username,
                password=password,
                socket_path=unquote(parts.path),
                options=options,
            )
        return RedisURL(
            scheme,
            host=parts.hostname or "localhost",
            port=self.port(host_port),
            database=database,
            username=username,
            password=password,
            options=options,
        )

    def credentials(self, parts: Any, query: dict[str, str]) -> tuple[str | None, str | None]:
        """User name and password of a URL listing several hosts (before the host or
        as ?username= / ?password=, once)."""
        userinfo = parts.netloc.rpartition("@")[0]
        user, colon, secret = userinfo.partition(":")
        for name, given in (("username", user), ("password", secret)):
            if name in query and given:
                twice = f"{name} given both before the host and as ?{name}="
                raise self.fail(twice, "give it once")
        username = query.pop("username", None) or (unquote(user) if user else None)
        password = query.pop("password", None) or (unquote(secret) if colon and secret else None)
        return username, password

    def addresses(self, parts: Any, default_port: int, what: str) -> tuple[tuple[str, int], ...]:
        """``host:port,host:port`` after the credentials; a port left out is ``default_port``."""
        found = []
        for host_port in parts.netloc.rpartition("@")[2].split(","):
            host = host_port.rpartition("]")[0].lstrip("[") if "]" in host_port else None
            host = host or host_port.rpartition(":")[0] or host_port
            if not host_port or not host:
                raise self.fail(f"an empty {what} address", "list them as host:port,host:port")
            tail = host_port.rpartition("]")[2]
            given = self.port(host_port) if ":" in tail and not tail.endswith(":") else None
            found.append((host, given or default_port))
        return tuple(found)

    def sentinel(self, parts: Any, query: dict[str, str]) -> RedisURL:
        """``redis+sentinel://[user:password@]host:port,host:port/service[/db]``."""
        if "ssl_check_hostname" in query:
            raise self.fail("ssl_check_hostname is a TLS setting", "memo has no TLS to Sentinel")
        username, password = self.credentials(parts, query)
        sentinels = self.addresses(parts, _SENTINEL_PORT, "sentinel")
        service, _, db = parts.path.lstrip("/").partition("/")
        if not service:
            raise self.fail(
                "no service name",
                "name the primary the sentinels monitor: redis+sentinel://s1:26379/mymaster/0",
            )
        return RedisURL(
            SENTINEL_SCHEME,
            database=self.database(query.pop("db", None), "/" + db if db else "", "redis"),
            username=username,
            password=password,
            options=tuple(sorted(query.items())),
            sentinels=sentinels,
            service=unquote(service),
        )

    def cluster(self, parts: Any, query: dict[str, str]) -> RedisURL:
        """``redis+cluster://[user:password@]host:port,host:port[/0]``: any of the
        cluster's nodes (the others are found from them); database 0 only."""
        if "ssl_check_hostname" in query:
            raise self.fail(
                "ssl_check_hostname is a TLS setting", "memo has no TLS to Redis Cluster yet"
            )
        username, password = self.credentials(parts, query)
        nodes = self.addresses(parts, _DEFAULT_PORT, "cluster node")
        if self.database(query.pop("db", None), parts.path, "redis") != 0:
            raise self.fail(
                "a Redis Cluster has database 0 only",
                "drop the database, or write /0: redis+cluster://node1:6379,node2:6379/0",
            )
        return RedisURL(
            CLUSTER_SCHEME,
            username=username,
            password=password,
            options=tuple(sorted(query.items())),
            cluster_nodes=nodes,
        )

    def port(self, host_port: str) -> int:
        _, bracket, after = host_port.rpartition("]")
        text = after if bracket else host_port
        if not bracket and text.count(":") > 1:
            raise self.fail(
                f"host {text!r} has more than one ':'",
                "put an IPv6 address in brackets: redis://[::1]:6379/0",
            )
        _, colon, port = text.rpartition(":")
        if not colon or port == "":
            return _DEFAULT_PORT
        if not port.isascii() or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise self.fail(
                f"port {port!r} is not a number from 1 to 65535",
                "write host:port, e.g. redis://localhost:6379/0",
            )
        return int(port)

    def database(self, from_query: str | None, path: str, scheme: str) -> int:
        from_path: str | None = None
        if scheme != "unix" and path not in ("", "/"):
            from_path = path[1:]
            if not (from_path.isascii() and from_path.isdigit()):
                raise self.fail(
                    f"path {path!r} is not a database number",
                    "the path of a redis:// URL is the database: /0, /1 …, e.g. "
                    "redis://localhost:6379/3",
                )
        for text in (from_query, from_path):
            if text is not None and not (text.isascii() and text.isdigit()):
                raise self.fail(
                    f"db={text!r} is not a database number",
                    "write ?db=0, ?db=1 …, a whole number of 0 or more",
                )
        if from_query is not None and from_path is not None and int(from_query) != int(from_path):
            raise self.fail(
                f"database given twice, /{from_path} and ?db={from_query}", "give it once"
            )
        chosen = from_query if from_query is not None else from_path
        database = int(chosen) if chosen is not None else 0
        if database > _MAX_DATABASE:
            raise self.fail(
                f"database {database} is out of range",
                f"Redis numbers its databases from 0 (16 by default, {_MAX_DATABASE} at most)",
            )
        return database

    def query(self, text: str) -> dict[str, str]:
        found: dict[str, str] = {}
        for piece in text.split("&"):
            if not piece:
                continue
            raw_name, eq, raw_value = piece.partition("=")
            name, value = unquote_plus(raw_name), unquote_plus(raw_value)
            if name in _MEMO_SETS:
                raise self.fail(f"memo sets {name} itself", _MEMO_SETS[name])
            if name not in _ACCEPTED:
                raise self.fail(
                    f"unknown query parameter {name!r}",
                    f"memo accepts {', '.join(_ACCEPTED)}",
                )
            if name in found:
                raise self.fail(f"{name} given twice", "give it once")
            if not eq or value == "":
                raise self.fail(f"{name} has no value", f"write {name}=<value>, or leave it out")
            found[name] = self.option(name, value)
        return found

    def option(self, name: str, value: str) -> str:
        shown = "***" if _looks_secret(name) else repr(value)
        if name in ("health_check_interval",) and not (value.isascii() and value.isdigit()):
            raise self.fail(f"{name}={shown} is not a whole number", _PASSED_ON[name])
        if name in ("socket_keepalive", "ssl_check_hostname"):
            flag = _flag(value)
            if flag is None:
                raise self.fail(f"{name}={shown} is not true or false", _PASSED_ON[name])
            return flag
        return value
