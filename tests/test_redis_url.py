"""Redis URLs and options: read and checked once, where they are given, secrets hidden."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from redis.asyncio.connection import parse_url

from memo import CacheConfig, ConfigError
from memo._redis_options import RedisOptions, RedisURL
from memo.backends.redis import RedisBackend
from tests.redis_harness import RedisServer

SECRET = "hunter2"


@pytest.mark.parametrize(
    ("url", "bad_part", "way_out"),
    [
        ("redis://:hunter2@h:6379/0?bogus=1", "'bogus'", "memo accepts db"),
        ("redis://:hunter2@h:notaport/0", "port 'notaport'", "host:port"),
        ("redis://:hunter2@h:0/0", "port '0'", "from 1 to 65535"),
        ("unix://:hunter2@/tmp/r.sock?db=zz", "db='zz'", "?db=0"),
        ("redis://:hunter2@h:6379/0?db=zz", "db='zz'", "?db=0"),
        ("redis://:hunter2@h:6379/abc", "path '/abc'", "is the database"),
        ("redis://:hunter2@h:6379/0/1", "path '/0/1'", "is the database"),
        ("redis://:hunter2@h/1?db=2", "database given twice", "give it once"),
        ("redis://:hunter2@h/0?db=1&db=1", "db given twice", "give it once"),
        ("redis://:hunter2@h/0?client_name=", "client_name has no value", "leave it out"),
        ("redis://:hunter2@h/0?socket_timeout=5", "memo sets socket_timeout", "operation_timeout"),
        ("redis://:hunter2@h/0?max_connections=5", "memo sets max_connections", "max_connections="),
        ("redis://:hunter2@h/0?socket_keepalive=maybe", "'maybe' is not true or false", "true"),
        ("redis://:hunter2@h/0?health_check_interval=x", "not a whole number", "seconds"),
        ("redis://:hunter2@h/0?ssl_check_hostname=no", "TLS setting", "rediss://"),
        ("redis://:hunter2@h/0#top", "fragment", "%23"),
        ("redis://:hunter2@h/0?password=x", "password given both", "give it once"),
        ("unix://tmp/redis.sock", "host 'tmp'", "unix:///path/to/redis.sock"),
        ("unix://:hunter2@", "no socket path", "unix:///path/to/redis.sock"),
        ("http://:hunter2@h:6379", "scheme 'http'", "rediss://"),
        ("localhost:6379", "scheme 'none'", "redis://host:6379/0"),
        # A password with an unencoded "/" or "?" cuts the URL short; none of it may show.
        ("redis://:hunter2/x@h:6379/0", "'@' after the host", "percent-encode"),
        ("redis://:hunter2?x@h:6379/0", "'@' after the host", "percent-encode"),
        # An IPv6 host without brackets, or a second port, would be read as another host.
        ("redis://:hunter2@fe80::1:6399/0", "more than one ':'", "in brackets"),
        ("redis://:hunter2@::1:6399/0", "more than one ':'", "in brackets"),
        ("redis://:hunter2@host:12:6399/0", "more than one ':'", "in brackets"),
        ("redis://:hunter2@h/99999999999", "database 99999999999 is out of range", "from 0"),
        ("redis://:hun%zzter2@h/0", "not followed by two hex digits", "%25"),
    ],
)
def test_a_malformed_url_is_a_config_error_naming_the_part_and_the_fix_without_the_password(
    url: str, bad_part: str, way_out: str
) -> None:
    for give in (RedisURL.parse, lambda u: CacheConfig(redis_url=u)):
        with pytest.raises(ConfigError) as info:
            give(url)
        message = str(info.value)
        assert message.startswith("redis_url='")
        assert bad_part in message and way_out in message
        assert SECRET not in message


def test_the_error_names_the_argument_it_was_given_as() -> None:
    with pytest.raises(ConfigError, match=r"^--redis-url='redis://h/x': path"):
        RedisURL.parse("redis://h/x", "--redis-url")


def test_a_url_that_is_not_a_str_is_refused_without_echoing_it() -> None:
    with pytest.raises(ConfigError, match="not a bytes") as info:
        RedisURL.parse(b"redis://:hunter2@h")  # type: ignore[arg-type]
    assert SECRET not in str(info.value)


@pytest.mark.parametrize(
    ("url", "fields"),
    [
        ("redis://localhost", {"host": "localhost", "port": 6379, "database": 0}),
        ("redis://", {"host": "localhost", "port": 6379, "database": 0}),
        ("REDIS://Cache:6380/3", {"scheme": "redis", "host": "cache", "port": 6380, "database": 3}),
        ("redis://h?db=5", {"database": 5}),
        ("redis://h/4?db=4", {"database": 4}),
        ("rediss://[::1]:7000/2", {"scheme": "rediss", "host": "::1", "port": 7000}),
        ("redis://u:p%40ss@h/1", {"username": "u", "password": "p@ss", "database": 1}),
        ("redis://:a%2Fb%3Fc@h", {"username": None, "password": "a/b?c"}),
        (
            "unix:///tmp/redis.sock?db=3",
            {"socket_path": "/tmp/redis.sock", "database": 3, "host": None, "port": None},
        ),
        ("unix:///run/r.sock?password=hunter2&username=app", {"username": "app"}),
        (
            "redis://h?socket_keepalive=YES&client_name=web+1&health_check_interval=30",
            {
                "options": (
                    ("client_name", "web 1"),
                    ("health_check_interval", "30"),
                    ("socket_keepalive", "true"),
                )
            },
        ),
    ],
)
def test_a_valid_url_is_read_into_fields(url: str, fields: dict[str, Any]) -> None:
    parsed = RedisURL.parse(url)
    assert fields == {name: getattr(parsed, name) for name in fields}


@pytest.mark.parametrize(
    "url",
    [
        "redis://localhost",
        "redis://u:p%40ss@cache:6380/3?client_name=web",
        "rediss://:a%2Fb@[::1]:7000/2?ssl_check_hostname=false",
        "unix://:pw@/tmp/a%20dir/redis.sock?db=3&socket_keepalive=no",
    ],
)
def test_redis_py_reads_the_client_url_as_memo_read_the_url(url: str) -> None:
    parsed = RedisURL.parse(url)
    seen = parse_url(parsed.client_url)
    assert parsed.database == seen.get("db", 0)
    assert parsed.password == seen.get("password")
    assert parsed.username == seen.get("username")
    if parsed.socket_path is None:
        assert (parsed.host, parsed.port) == (seen["host"], seen["port"])
    else:
        assert parsed.socket_path == seen["path"]


def test_secrets_show_nowhere_but_in_the_client_url() -> None:
    url = RedisURL.parse("redis://app:hunter2@cache:6380/3")
    by_query = RedisURL.parse("unix:///run/r.sock?password=hunter2")
    options = RedisOptions(url, ssl_ca_certs="/etc/ca.pem")
    shown = " ".join(
        [repr(url), str(url), url.masked, repr(by_query), by_query.masked, repr(options)]
    )
    assert SECRET not in shown
    assert "redis://app:***@cache:6380/3" == url.masked
    assert "unix://:***@/run/r.sock" == by_query.masked
    assert SECRET in url.client_url


def test_tls_is_the_scheme_or_use_tls_and_a_socket_cannot_have_it() -> None:
    plain = RedisOptions.from_url("redis://h/0", ssl_ca_certs="/ca.pem")
    assert not plain.tls and {} == plain.ssl_arguments()
    asked = RedisOptions.from_url("redis://:hunter2@h/0", use_tls=True, ssl_ca_certs="/ca.pem")
    assert asked.tls and {"ssl_ca_certs": "/ca.pem"} == asked.ssl_arguments()
    assert asked.connection_url.client_url.startswith("rediss://:hunter2@h:6379/0")
    assert RedisOptions.from_url("rediss://h/0").tls
    with pytest.raises(ConfigError, match="unix socket has no TLS"):
        RedisOptions.from_url("unix:///tmp/r.sock", use_tls=True)


def test_the_options_defaults_are_the_documented_ones() -> None:
    options = RedisOptions.from_url("redis://h")
    assert (1.0, 0.5, 50, False, True) == (
        options.connect_timeout,
        options.operation_timeout,
        options.max_connections,
        options.use_tls,
        options.invalidation_channel,
    )


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("connect_timeout", True, "connect_timeout=True: must be seconds"),
        ("connect_timeout", 0, "connect_timeout=0 is out of range"),
        ("operation_timeout", float("inf"), "operation_timeout=inf is out of range"),
        ("operation_timeout", "0.5", "operation_timeout='0.5': must be seconds"),
        ("max_connections", True, "max_connections=True: must be a whole number"),
        ("max_connections", 0, "max_connections=0 is out of range"),
        ("max_connections", 2.0, "max_connections=2.0: must be a whole number"),
        ("use_tls", 1, "use_tls=1: must be True or False"),
        ("invalidation_channel", "no", "invalidation_channel='no': must be True or False"),
        ("ssl_ca_certs", 3, "ssl_ca_certs=3: must be a file path"),
    ],
)
def test_a_bad_option_is_refused_naming_the_field(field: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        RedisOptions.from_url("redis://h", **{field: value})
    assert message in str(info.value)


def test_options_take_a_parsed_url_and_know_their_fields() -> None:
    with pytest.raises(ConfigError, match=r"RedisOptions\.from_url"):
        RedisOptions("redis://h")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"unknown Redis option.*conect_timeout"):
        RedisOptions.from_url("redis://h", conect_timeout=1)
    options = RedisOptions.from_url("redis://h", connect_timeout=2)
    assert 2.0 == options.connect_timeout and isinstance(options.connect_timeout, float)
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.connect_timeout = 3  # type: ignore[misc]


def test_the_backend_announces_and_listens_as_its_options_say() -> None:
    def listener(backend: RedisBackend) -> object:
        return backend.invalidation_listener(
            on_keys=lambda keys: None,
            on_pattern=lambda pattern: None,
            on_flush=lambda: None,
            on_trust=lambda trusted: None,
        )

    on = RedisBackend(RedisOptions.from_url("unix:///tmp/r.sock?db=3"))
    off = RedisBackend.from_url("redis://h/3", invalidation_channel=False)
    assert on.announce and listener(on) is not None
    assert "memo:invalidations:3" == on.invalidation_channel
    assert not off.announce and listener(off) is None
    with pytest.raises(ConfigError, match=r"RedisOptions\.from_url"):
        RedisBackend("redis://h")  # type: ignore[arg-type]


async def test_flushing_a_database_on_a_unix_socket_asks_for_its_number(
    make_redis_server: Any,
) -> None:
    server: RedisServer = make_redis_server(unix=True)
    backend = RedisBackend.from_url(f"{server.url}?db=3")
    try:
        await backend.set("memo:t:in-db3", b"v", 60_000)
        server.client().set("in-db0", b"v")  # the harness's client talks to database 0
        for wrong in ("db0", f"db{server.socket}".replace("/", "", 1)):
            with pytest.raises(ConfigError, match="confirm='db3'"):
                await backend.flush_database(confirm=wrong)
        assert b"v" == await backend.get("memo:t:in-db3")

        await backend.flush_database(confirm="db3")
        assert await backend.get("memo:t:in-db3") is None
        assert server.client().exists("in-db0")  # only database 3 was emptied
    finally:
        await backend.aclose()


@pytest.mark.slow
def test_the_cli_reports_a_malformed_url_in_one_line_without_the_password() -> None:
    from tests.test_cli import run

    done = run("stats", url="redis://:hunter2@localhost:6379/0?bogus=1")
    assert 2 == done.returncode
    assert "Traceback" not in done.stderr and SECRET not in done.stderr + done.stdout
    assert "unknown query parameter 'bogus'" in done.stderr


@pytest.mark.parametrize(
    ("url", "sentinels", "service", "database", "shown"),
    [
        (
            "redis+sentinel://s1:26379,s2:26380/mymaster/0",
            (("s1", 26379), ("s2", 26380)),
            "mymaster",
            0,
            "redis+sentinel://s1:26379,s2:26380/mymaster/0",
        ),
        (
            "redis+sentinel://app:pa%2Fss@s1,s2/cache/3",
            (("s1", 26379), ("s2", 26379)),
            "cache",
            3,
            "redis+sentinel://app:***@s1:26379,s2:26379/cache/3",
        ),
        (
            "redis+sentinel://[::1]:26379/m?db=2&client_name=api",
            (("::1", 26379),),
            "m",
            2,
            "redis+sentinel://[::1]:26379/m/2?client_name=api",
        ),
    ],
)
def test_a_sentinel_url_names_the_sentinels_the_service_and_the_database(
    url: str, sentinels: Any, service: str, database: int, shown: str
) -> None:
    parsed = RedisURL.parse(url)
    assert (parsed.sentinels, parsed.service, parsed.database) == (sentinels, service, database)
    assert (parsed.host, parsed.port) == (None, None)
    assert parsed.masked == shown
    assert RedisURL.parse(parsed.client_url) == parsed  # what is shown is what is read


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis+sentinel://s1:26379", "no service name"),
        ("redis+sentinel://s1:26379/", "no service name"),
        ("redis+sentinel://s1:nope/m", "port 'nope' is not a number"),
        ("redis+sentinel://s1,,s2/m", "an empty sentinel address"),
        ("redis+sentinel://s1/m/x", "is not a database number"),
    ],
)
def test_a_malformed_sentinel_url_says_what_to_write(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        RedisURL.parse(url)


def test_tls_to_sentinels_is_refused_for_now() -> None:
    with pytest.raises(ConfigError, match="does not speak TLS to Sentinel"):
        RedisOptions.from_url("redis+sentinel://s1/m", use_tls=True)


def test_a_backend_behind_sentinel_uses_the_channel_and_no_direct_connection() -> None:
    backend = RedisBackend.from_url("redis+sentinel://s1/m")
    listener = backend.invalidation_listener(
        on_keys=lambda keys: None,
        on_pattern=lambda pattern: None,
        on_flush=lambda: None,
        on_trust=lambda trusted: None,
    )
    assert listener is not None and not listener.reads_tracked


def test_a_sentinel_url_reads_credentials_from_the_query_as_redis_urls_do() -> None:
    parsed = RedisURL.parse("redis+sentinel://s1:/m?username=app&password=pw")
    assert (parsed.username, parsed.password, parsed.sentinels) == ("app", "pw", (("s1", 26379),))
    assert parsed.options == ()  # credentials are fields, not options passed on
    with pytest.raises(ConfigError, match="password given both before the host"):
        RedisURL.parse("redis+sentinel://:a@s1/m?password=b")
    with pytest.raises(ConfigError, match="ssl_check_hostname is a TLS setting"):
        RedisURL.parse("redis+sentinel://s1/m?ssl_check_hostname=false")
