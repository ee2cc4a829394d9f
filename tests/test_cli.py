"""The ``memo`` console script, run as a real process against a real redis-server."""

from __future__ import annotations

import ast
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import memo.cli
import memo.monitoring
from memo import GenericRedisCache, cached
from memo.cli import main
from tests.conftest import Deployment
from tests.redis_harness import RedisServer


def memo_script() -> str:
    """The installed console script (``pip install -e .`` puts it beside python)."""
    beside = Path(sys.executable).with_name("memo")
    found = str(beside) if beside.exists() else shutil.which("memo")
    if found is None:
        pytest.fail("the memo console script is not installed: run pip install -e .")
    return found


def run(
    *args: str, url: str | None = None, stdin: str = "", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CACHE_")}
    if url is not None:
        environment["CACHE_REDIS_URL"] = url
    environment.update(env or {})
    return subprocess.run(
        [memo_script(), *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=environment,
        timeout=60,
    )


async def seed(url: str, namespace: str = "default", **values: Any) -> GenericRedisCache:
    cache = GenericRedisCache(url, namespace=namespace, enable_memory_cache=False)
    await cache.set_many(values, ttl=600)
    return cache


@pytest.mark.slow
async def test_keys_lists_the_matching_relative_keys_and_honours_the_limit(
    redis_server: RedisServer,
) -> None:
    cache = await seed(redis_server.url, **{"user:1": 1, "user:2": 2, "order:1": 3})
    await cache.aclose()

    listed = run("keys", "user:*", url=redis_server.url)
    assert 0 == listed.returncode, listed.stderr
    assert ["user:1", "user:2"] == listed.stdout.split()
    limited = run("--json", "keys", "*", "--limit", "2", url=redis_server.url)
    assert 2 == len(json.loads(limited.stdout))
    nothing = run("keys", "nothing:*", url=redis_server.url)
    assert (1, "") == (nothing.returncode, nothing.stdout.strip())
    assert "no key matches" in nothing.stderr
    other = run("--namespace", "shop", "keys", "*", url=redis_server.url)
    assert (1, "") == (other.returncode, other.stdout.strip())  # another namespace


@pytest.mark.slow
async def test_get_prints_the_decoded_value_and_says_when_there_is_none(
    redis_server: RedisServer,
) -> None:
    cache = await seed(redis_server.url)
    await cache.set("session:abc", {"user_id": 123, "tags": {"b", "a"}, "raw": b"\x00"}, ttl=600)
    await cache.aclose()

    shown = run("get", "session:abc", url=redis_server.url)
    assert 0 == shown.returncode, shown.stderr
    assert '"user_id": 123' in shown.stdout and "fresh for" in shown.stdout
    document = json.loads(run("--json", "get", "session:abc", url=redis_server.url).stdout)
    assert {"user_id": 123, "tags": ["a", "b"], "raw": {"base64": "AA=="}} == document["value"]
    assert 590 < document["ttl"] <= 600
    missing = run("get", "session:nope", url=redis_server.url)
    assert 1 == missing.returncode and "no value stored under 'session:nope'" in missing.stderr


@pytest.mark.slow
async def test_get_shows_a_stale_value_and_leaves_bytes_it_cannot_decode_in_place(
    redis_server: RedisServer,
) -> None:
    cache = await seed(redis_server.url)
    now_ms = int(time.time() * 1000)
    stale = cache.codec.encode("old", created_ms=now_ms - 60_000, fresh_until_ms=now_ms - 5_000)
    await cache.aclose()
    client = redis_server.client()
    client.set("memo:default:report", stale, px=600_000)
    client.set("memo:default:foreign", b"written by another tool", px=600_000)

    shown = run("get", "report", url=redis_server.url)
    assert 0 == shown.returncode, shown.stderr
    assert '"old"' in shown.stdout and "stale for" in shown.stdout
    document = json.loads(run("--json", "get", "report", url=redis_server.url).stdout)
    assert (True, False, "old") == (document["found"], document["fresh"], document["value"])

    foreign = run("get", "foreign", url=redis_server.url)
    assert 1 == foreign.returncode
    assert "23 bytes that memo cannot decode" in foreign.stdout
    assert "left in place" in foreign.stderr
    described = json.loads(run("--json", "get", "foreign", url=redis_server.url).stdout)
    assert (True, False, 23) == (described["found"], described["decoded"], described["bytes"])
    # Looking changed nothing: both keys are still there, byte for byte.
    assert b"written by another tool" == client.get("memo:default:foreign")
    assert stale == client.get("memo:default:report")


@pytest.mark.slow
async def test_invalidate_deletes_what_it_counts_and_asks_first(
    redis_server: RedisServer,
) -> None:
    cache = await seed(redis_server.url, **{f"user:{i}": i for i in range(30)}, keep=1)
    await cache.aclose()
    client = redis_server.client()
    before = client.dbsize()

    declined = run("invalidate", "user:1*", url=redis_server.url, stdin="n\n")
    assert 1 == declined.returncode
    assert "Delete 11 key(s) matching pattern 'user:1*'" in declined.stderr
    assert before == client.dbsize()

    confirmed = run("invalidate", "user:1*", url=redis_server.url, stdin="y\n")
    assert (0, "deleted 11 key(s)") == (confirmed.returncode, confirmed.stdout.strip())
    assert before - 11 == client.dbsize()

    forced = run("--json", "invalidate", "user:*", "--yes", url=redis_server.url)
    removed = json.loads(forced.stdout)["removed"]
    assert 19 == removed and before - 30 == client.dbsize()
    assert client.exists("memo:default:keep")


async def test_invalidate_with_nothing_matching_asks_nothing_and_exits_1(
    redis_server: RedisServer,
) -> None:
    cache = await seed(redis_server.url, **{"user:1": 1})
    await cache.aclose()

    for target in (["nothing:*"], ["--tag", "no-such-tag"]):
        result = run("invalidate", *target, url=redis_server.url, stdin="y\n")
        assert (1, "") == (result.returncode, result.stdout.strip())
        assert "Delete" not in result.stderr and "nothing matches" in result.stderr
    document = json.loads(run("--json", "invalidate", "nothing:*", url=redis_server.url).stdout)
    assert {"removed": 0, "declined": False} == document
    assert 1 == redis_server.dbsize()


async def test_invalidate_that_removes_nothing_exits_1_even_with_yes(
    redis_server: RedisServer,
) -> None:
    cache = await seed(redis_server.url, **{"user:1": 1, "user:2": 2})
    await cache.aclose()

    wrong = run("--namespace", "shop", "invalidate", "*", "--yes", url=redis_server.url)
    assert (1, "") == (wrong.returncode, wrong.stdout.strip())
    assert "nothing matches pattern '*'" in wrong.stderr and "'shop'" in wrong.stderr
    tagless = run("invalidate", "--tag", "no-such-tag", "--yes", url=redis_server.url)
    assert 1 == tagless.returncode
    assert 2 == redis_server.dbsize()


@pytest.mark.slow
async def test_invalidate_by_tag_counts_asks_and_removes_exactly_the_tags_entries(
    deployment: Deployment,
) -> None:
    cache = GenericRedisCache(deployment.url, enable_memory_cache=False)

    @cached(ttl=600, cache=cache, tags=("team:{team}",))
    async def member(team: int, name: str) -> str:
        return f"{team}:{name}"

    for name in ("a", "b", "c"):
        await member(7, name)
    await member(8, "a")
    await cache.aclose()

    declined = run("invalidate", "--tag", "team:7", url=deployment.url, stdin="n\n")
    assert "Delete 3 key(s) matching tag 'team:7'" in declined.stderr
    assert 1 == declined.returncode
    out = run("invalidate", "--tag", "team:7", "--yes", url=deployment.url)
    assert (0, "deleted 3 key(s)") == (out.returncode, out.stdout.strip())
    left = run("--json", "keys", "*", url=deployment.url)
    assert 1 == len(json.loads(left.stdout))  # team 8's entry (tag sets are not listed)


@pytest.mark.slow
async def test_stats_and_health_as_json_without_the_password(
    make_redis_server: Any,
) -> None:
    secret = "s3cret-Pa55word"
    server: RedisServer = make_redis_server(password=secret)
    cache = await seed(server.url, a=1, b=2)
    await cache.aclose()

    stats = run("--json", "stats", url=server.url)
    assert 0 == stats.returncode, stats.stderr
    document = json.loads(stats.stdout)
    assert 2 == document["stored_keys"]
    for field in ("hits", "misses", "hit_ratio", "memory_usage", "redis", "server"):
        assert field in document
    assert document["redis"]["connected"] is True
    assert "used_memory" in document["server"]
    health = run("--json", "health", url=server.url)
    assert (0, "healthy") == (health.returncode, json.loads(health.stdout)["status"])
    for result in (stats, health, run("stats", url=server.url)):
        assert secret not in result.stdout + result.stderr
    assert "***" in stats.stdout


@pytest.mark.slow
def test_an_unreachable_redis_exits_3_and_says_where_with_advice_for_the_shell() -> None:
    down = "redis://127.0.0.1:1/0"
    health = run("--json", "health", url=down)
    report = json.loads(health.stdout)
    assert (3, "unhealthy") == (health.returncode, report["status"])
    assert "does not answer" in report["reason"]
    for command in (["keys", "*"], ["stats"], ["get", "k"], ["invalidate", "*", "--yes"]):
        result = run(*command, url=down)
        assert 3 == result.returncode
        assert "127.0.0.1:1" in result.stderr and "does not answer" in result.stderr
        assert "start it" in result.stderr and "--redis-url" in result.stderr
        assert "fail_on_connection_error" not in result.stderr
        assert 1 == len(result.stderr.splitlines())


@pytest.mark.parametrize(
    "credentials",
    ["", ":not-the-password@", "intruder:not-the-password@"],
    ids=["no-password", "wrong-password", "unknown-user"],
)
def test_refused_credentials_say_authentication_failed_without_the_password(
    make_redis_server: Any, credentials: str
) -> None:
    secret = "s3cret-Pa55word"
    server: RedisServer = make_redis_server(password=secret)
    url = f"redis://{credentials}127.0.0.1:{server.port}/0"

    for command in (["keys", "*"], ["stats"], ["invalidate", "*", "--yes"]):
        result = run(*command, url=url)
        assert 3 == result.returncode
        assert "authentication failed" in result.stderr
        assert "user name and password in the URL" in result.stderr
        assert "does not answer" not in result.stderr
        assert "fail_on_connection_error" not in result.stderr
    health = run("health", "--json", url=url)
    report = json.loads(health.stdout)
    assert (3, "unhealthy") == (health.returncode, report["status"])
    assert "authentication failed" in report["reason"]
    assert "authentication failed" in run("health", url=url).stdout
    for result in (health, run("keys", "*", url=url)):
        assert "not-the-password" not in result.stdout + result.stderr
        assert secret not in result.stdout + result.stderr


def test_global_options_work_after_the_command_as_well_as_before(
    redis_server: RedisServer,
) -> None:
    url = redis_server.url
    redis_server.client().set("memo:shop:item:1", b"x", px=600_000)

    stats = run("stats", "--json", "--namespace", "shop", url=url)
    assert 0 == stats.returncode, stats.stderr
    assert 1 == json.loads(stats.stdout)["stored_keys"]
    after = run("keys", "*", "--namespace", "default", "--json", "--redis-url", redis_server.url)
    assert (1, []) == (after.returncode, json.loads(after.stdout))  # nothing in 'default'
    before = run("--namespace", "shop", "keys", "*", "--redis-url", url)
    assert (0, "item:1") == (before.returncode, before.stdout.strip())
    overridden = run("--namespace", "default", "keys", "*", "--namespace", "shop", url=url)
    assert (0, "item:1") == (overridden.returncode, overridden.stdout.strip())  # after wins
    health = run("health", "--redis-url", redis_server.url, "--preset", "production")
    assert (0, True) == (health.returncode, health.stdout.startswith("healthy"))
    assert 2 == run("stats", "--preset", "nope", url=redis_server.url).returncode
    assert 0 == run("presets", "--json").returncode


@pytest.mark.parametrize("url", ["redis://h:notaport", "redis://h/abc", "redis://h/0?bogus=1"])
@pytest.mark.parametrize("given_as", ["flag", "environment"])
def test_a_malformed_redis_url_is_one_line_naming_redis_url_and_exits_2(
    url: str, given_as: str
) -> None:
    if given_as == "flag":
        result = run("keys", "*", "--redis-url", url)
    else:
        result = run("keys", "*", url=url)
    assert 2 == result.returncode
    assert "redis_url" in result.stderr.lower() and "Traceback" not in result.stderr
    assert 1 == len(result.stderr.splitlines()), result.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        (["--preset", "nope", "stats"], {}, "preset='nope'"),
        (["stats"], {"CACHE_CUSTOM_CONFIG": "{oops"}, "CACHE_CUSTOM_CONFIG"),
        (["--redis-url", "http://x:1", "stats"], {}, "http"),
        (["keys", "*", "--limit", "0"], {}, "--limit"),
    ],
)
def test_configuration_errors_exit_2_naming_the_culprit(
    args: list[str], env: dict[str, str], named: str
) -> None:
    result = run(*args, env=env)
    assert 2 == result.returncode
    assert named in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_usage_errors_exit_2() -> None:
    assert 2 == run("invalidate").returncode  # neither a pattern nor --tag
    assert 2 == run("frobnicate").returncode


@pytest.mark.slow
def test_presets_lists_all_seven_with_their_figures() -> None:
    result = run("--json", "presets")
    table = json.loads(result.stdout)
    assert 0 == result.returncode
    assert sorted(
        ["disabled", "minimal", "simple", "development", "production", "ai-development",
         "ai-production"]
    ) == sorted(table)  # fmt: skip
    assert 7200 == table["production"]["default_ttl"]
    assert 14400 == table["ai-production"]["operation_ttls"]["summarize"]
    assert table["disabled"]["enabled"] is False


def test_health_without_a_redis_url_says_there_is_nothing_to_check_and_exits_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert 2 == main(["health"])
    captured = capsys.readouterr()
    assert "" == captured.out and "healthy" not in captured.err
    assert "nothing to check" in captured.err and "CACHE_REDIS_URL" in captured.err
    assert "--redis-url" in captured.err
    assert 2 == main(["health", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert "unconfigured" == report["status"] and "nothing to check" in report["reason"]


@pytest.mark.slow
def test_without_a_redis_url_the_script_says_so_once_and_prints_nothing_on_a_miss() -> None:
    result = run("get", "absent")
    assert 1 == result.returncode and "" == result.stdout
    assert 1 == result.stderr.count("no Redis URL") and "redis_url given" not in result.stderr


@pytest.mark.parametrize("module", [memo.cli, memo.monitoring], ids=["cli", "monitoring"])
def test_the_tools_use_the_public_seam_not_redis_py_or_attribute_probes(module: Any) -> None:
    assert module.__file__ is not None
    tree = ast.parse(Path(module.__file__).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            assert all(a.name.split(".")[0] != "redis" for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert (node.module or "").split(".")[0] != "redis"
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "getattr":
            probed = node.args[1] if len(node.args) > 1 else None
            assert not (isinstance(probed, ast.Constant) and probed.value == "redis")


def test_without_a_redis_url_the_library_logger_is_left_as_configured(
    caplog: pytest.LogCaptureFixture,
) -> None:
    library_log = logging.getLogger("memo")
    before = library_log.level
    library_log.setLevel(logging.DEBUG)
    try:
        with caplog.at_level(logging.DEBUG, logger="memo"):
            assert 1 == main(["get", "absent"])
        assert logging.DEBUG == library_log.level
        assert not any("redis_url given" in r.getMessage() for r in caplog.records)
    finally:
        library_log.setLevel(before)
