"""The sentinel harness itself: the set comes up agreed, replicates, fails over, stops."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests import sentinel_harness
from tests.sentinel_harness import SentinelSet, _wait_until

# The fixture, made visible here; redundant (and harmless) once conftest lists the harness.
sentinel_set = sentinel_harness.sentinel_set

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.redis
@pytest.mark.slow
def test_the_set_comes_up_with_a_synced_replica_and_three_agreed_sentinels(
    sentinel_set: SentinelSet,
) -> None:
    s = sentinel_set
    assert "mymaster" == s.service
    assert ("127.0.0.1", s.primary.port) == s.current_primary()
    assert "master" == s.primary.replication()["role"]
    replication = s.replica.replication()
    assert "slave" == replication["role"]
    assert "up" == replication["master_link_status"]
    assert s.primary.port == int(replication["master_port"])
    assert 3 == len(s.sentinels)
    for sentinel in s.sentinel_servers:
        state = sentinel.master_state()
        assert s.primary.port == int(state["port"])
        assert 1 == int(state["num-slaves"])
        assert 2 == int(state["num-other-sentinels"])
        assert 2 == int(state["quorum"])
        assert ("127.0.0.1", s.primary.port) == sentinel.primary_address()
    assert s.primary is s.server_at(s.primary.port)
    assert s.replica is s.server_at(s.replica.port)
    with pytest.raises(KeyError):
        s.server_at(s.sentinels[0][1])  # a sentinel is not a data node


def test_the_url_names_three_sentinels_then_the_service_and_db(tmp_path: Path) -> None:
    s = SentinelSet(tmp_path)  # not started: the addresses are fixed at construction
    parts = urlsplit(s.url)
    assert "redis+sentinel" == parts.scheme
    hosts = parts.netloc.split(",")
    assert 3 == len(hosts)
    assert [f"{host}:{port}" for host, port in s.sentinels] == hosts
    assert len({port for _, port in s.sentinels}) == 3
    assert "/mymaster/0" == parts.path
    assert s.url == (
        "redis+sentinel://"
        + ",".join(f"127.0.0.1:{s.sentinel_servers[i].port}" for i in range(3))
        + "/mymaster/0"
    )


@pytest.mark.redis
@pytest.mark.slow
def test_a_write_on_the_primary_reaches_the_replica(sentinel_set: SentinelSet) -> None:
    primary = sentinel_set.primary.client()
    primary.set("memo:sentinel:k", "v")
    assert 1 == primary.wait(1, 1000)  # WAIT 1 1000
    assert b"v" == sentinel_set.replica.client().get("memo:sentinel:k")


@pytest.mark.redis
@pytest.mark.slow
def test_killing_the_primary_promotes_the_replica(sentinel_set: SentinelSet) -> None:
    s = sentinel_set
    s.primary.client().set("memo:sentinel:before", "1")
    assert 1 == s.primary.client().wait(1, 1000)  # WAIT 1 1000
    old_port = s.kill_primary()
    assert s.primary.port == old_port
    assert s.primary.proc is not None and s.primary.proc.poll() is not None
    host, port = s.wait_for_failover(old_port)
    assert ("127.0.0.1", s.replica.port) == (host, port)
    assert (host, port) == s.current_primary()
    new_primary = s.server_at(port)
    assert "master" == new_primary.replication()["role"]
    assert new_primary.client().set("memo:sentinel:after", "2")
    assert b"1" == new_primary.client().get("memo:sentinel:before")  # replicated earlier
    assert b"2" == new_primary.client().get("memo:sentinel:after")


@pytest.mark.redis
@pytest.mark.slow
def test_stop_leaves_no_process_running(sentinel_set: SentinelSet) -> None:
    processes = sentinel_set.processes()
    assert 5 == len(processes)
    assert all(p.proc is not None and p.proc.poll() is None for p in processes)
    sentinel_set.stop()
    assert all(p.proc is not None and p.proc.poll() is not None for p in processes)
    sentinel_set.stop()  # twice is fine: the fixture's teardown calls it again


def test_a_wait_that_never_holds_fails_saying_what_it_saw() -> None:
    with pytest.raises(TimeoutError, match=r"the thing not within 0\.1s; last seen: nope"):
        _wait_until(lambda: False, 0.1, lambda: "nope", "the thing")
