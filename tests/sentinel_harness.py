"""A real Redis Sentinel deployment for the tests: a primary, a replica, three sentinels.

``sentinel_set`` starts them on free loopback ports, each in its own directory under the
test's ``tmp_path``, and waits until the replica is in sync and every sentinel knows the
primary, the replica and the other two sentinels. A test may then kill the primary and
wait for the sentinels to promote the replica. Nothing persists; teardown stops every
process, the sentinels first.

The same skip rules as ``tests.redis_harness``: without redis-server on PATH the fixture
skips, and with ``MEMO_REQUIRE_REDIS=1`` that skip is a failure instead.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any, cast

import pytest
import redis

from tests.redis_harness import RedisServer, started

SERVICE = "mymaster"
HOST = "127.0.0.1"
#: The bound on every wait the fixture makes while the set comes up.
STARTUP_TIMEOUT = 30.0


class DataNode(RedisServer):
    """A data-bearing redis-server, started as a replica of ``replicaof`` when given.

    Only the start-up role: after a failover the sentinels reassign roles, and a restart
    of either node is sorted out by them the same way."""

    def __init__(self, directory: Path, *, replicaof: int | None = None) -> None:
        super().__init__(directory)
        self.replicaof = replicaof

    def _args(self) -> list[str]:
        # A full sync starts at once, not after the default 5 s diskless-sync delay.
        args = [*super()._args(), "--repl-diskless-sync-delay", "0"]
        if self.replicaof is not None:
            args += ["--replicaof", HOST, str(self.replicaof)]
        return args

    def replication(self) -> dict[str, Any]:
        """``INFO replication`` as a dict (``role``, ``master_link_status``, ...)."""
        return dict(self.client().info("replication"))


class SentinelServer(RedisServer):
    """One ``redis-server <conf> --sentinel`` process monitoring ``SERVICE``.

    Its config file is written once and is the sentinel's own to rewrite (it records its
    id, the replica and the other sentinels there), so a restart keeps what it learned."""

    def __init__(self, directory: Path, *, primary_port: int, quorum: int = 2) -> None:
        super().__init__(directory)
        self.config = directory / "sentinel.conf"
        self.config.write_text(
            "\n".join(
                [
                    f"port {self.port}",
                    f"bind {HOST}",
                    "daemonize no",
                    f'dir "{directory}"',
                    "loglevel notice",
                    "sentinel resolve-hostnames no",
                    f"sentinel monitor {SERVICE} {HOST} {primary_port} {quorum}",
                    f"sentinel down-after-milliseconds {SERVICE} 1000",
                    f"sentinel failover-timeout {SERVICE} 3000",
                    f"sentinel parallel-syncs {SERVICE} 1",
                    "",
                ]
            )
        )

    def _args(self) -> list[str]:
        return ["redis-server", str(self.config), "--sentinel"]

    def master_state(self) -> dict[str, Any]:
        """``SENTINEL MASTER <service>``, as redis-py parses it."""
        return cast("dict[str, Any]", self.client().sentinel_master(SERVICE))

    def primary_address(self) -> tuple[str, int] | None:
        """``SENTINEL GET-MASTER-ADDR-BY-NAME <service>``."""
        answer = cast(
            "tuple[bytes | str, int] | None",
            self.client().sentinel_get_master_addr_by_name(SERVICE),
        )
        if not answer:
            return None
        host, port = answer
        return (host.decode() if isinstance(host, bytes) else str(host), int(port))

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None and not self.paused


def _wait_until(
    check: Callable[[], bool], timeout: float, describe: Callable[[], str], what: str
) -> None:
    """Poll ``check`` until it holds; past ``timeout`` fail, saying what was last seen.
    A Redis error during a poll counts as "not yet"."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            if check():
                return
        except redis.RedisError as exc:
            last_error = exc
        if time.monotonic() > deadline:
            try:
                seen = describe()
            except redis.RedisError as exc:
                seen = f"(could not ask: {exc!r})"
            error = f"; last error: {last_error!r}" if last_error is not None else ""
            raise TimeoutError(f"{what} not within {timeout:g}s; last seen: {seen}{error}")
        time.sleep(0.05)


def _log_tail(server: RedisServer, chars: int = 1500) -> str:
    log = server.directory / "redis.log"
    return log.read_text(errors="replace")[-chars:] if log.exists() else "(no log)"


def _describe_sentinel(sentinel: SentinelServer) -> str:
    return f"{sentinel.master_state()}\nsentinel log:\n{_log_tail(sentinel)}"


class SentinelSet:
    """A primary, a replica and three sentinels monitoring them as ``mymaster``.

    ``primary`` and ``replica`` are the nodes as started: after a failover the replica is
    the primary. ``current_primary()`` asks the sentinels which one is primary now."""

    service = SERVICE

    def __init__(self, directory: Path, *, sentinels: int = 3, quorum: int = 2) -> None:
        self.directory = directory
        self._count = sentinels
        self._quorum = quorum
        self.primary = DataNode(self._subdir("primary"))
        self.replica = DataNode(self._subdir("replica"), replicaof=self.primary.port)
        self.sentinel_servers = [
            SentinelServer(
                self._subdir(f"sentinel-{i}"), primary_port=self.primary.port, quorum=quorum
            )
            for i in range(sentinels)
        ]

    def _subdir(self, name: str) -> Path:
        path = self.directory / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    # -- addresses -------------------------------------------------------------------

    @property
    def sentinels(self) -> list[tuple[str, int]]:
        return [(HOST, s.port) for s in self.sentinel_servers]

    @property
    def url(self) -> str:
        """``redis+sentinel://h1:p1,h2:p2,h3:p3/<service>/0``: the URL memo accepts."""
        hosts = ",".join(f"{host}:{port}" for host, port in self.sentinels)
        return f"redis+sentinel://{hosts}/{self.service}/0"

    @property
    def nodes(self) -> list[DataNode]:
        return [self.primary, self.replica]

    def server_at(self, port: int) -> DataNode:
        for node in self.nodes:
            if node.port == port:
                return node
        raise KeyError(f"no data node on port {port} (nodes: {[n.port for n in self.nodes]})")

    # -- lifecycle -------------------------------------------------------------------

    def start(self, timeout: float = STARTUP_TIMEOUT) -> SentinelSet:
        self.primary.start()
        self.replica.start()
        _wait_until(
            lambda: self.replica.replication().get("master_link_status") == "up",
            timeout,
            lambda: f"{self.replica.replication()}\nreplica log:\n{_log_tail(self.replica)}",
            f"replica on {self.replica.port} in sync with primary on {self.primary.port}",
        )
        for sentinel in self.sentinel_servers:
            sentinel.start()
        for sentinel in self.sentinel_servers:
            _wait_until(
                partial(self._knows_everything, sentinel),
                timeout,
                partial(_describe_sentinel, sentinel),
                f"sentinel on {sentinel.port} to see the primary, 1 replica and "
                f"{self._count - 1} other sentinels",
            )
        return self

    def _knows_everything(self, sentinel: SentinelServer) -> bool:
        state = sentinel.master_state()
        return (
            int(state["port"]) == self.primary.port
            and int(state["num-slaves"]) == 1
            and int(state["num-other-sentinels"]) == self._count - 1
            and not state.get("is_sdown", False)
        )

    def processes(self) -> list[RedisServer]:
        """Every process of the set, sentinels first (the order teardown stops them in)."""
        return [*self.sentinel_servers, self.replica, self.primary]

    def stop(self) -> None:
        """Stop the sentinels, then the data nodes; every process is gone afterwards."""
        for server in self.processes():
            server.stop()
        running = [s.port for s in self.processes() if s.proc is not None and s.proc.poll() is None]
        if running:
            raise RuntimeError(f"processes still running on ports {running} after stop()")

    # -- failover --------------------------------------------------------------------

    def current_primary(self) -> tuple[str, int]:
        """The primary's address as the first answering sentinel reports it."""
        errors: list[str] = []
        for sentinel in self.sentinel_servers:
            if not sentinel.alive:
                continue
            try:
                address = sentinel.primary_address()
            except redis.RedisError as exc:
                errors.append(f"{sentinel.port}: {exc!r}")
                continue
            if address is not None:
                return address
            errors.append(f"{sentinel.port}: no address")
        raise RuntimeError(f"no sentinel reports a primary for {self.service}: {errors}")

    def kill_primary(self) -> int:
        """SIGKILL the node the sentinels report as primary; returns its port."""
        _, port = self.current_primary()
        self.server_at(port).kill()
        return port

    def wait_for_failover(self, old_port: int, timeout: float = 30) -> tuple[str, int]:
        """Wait until every live sentinel reports the same primary, other than
        ``old_port``, and that node says ``role:master``; return its address."""
        found: list[tuple[str, int]] = []

        def promoted() -> bool:
            reports = {s.primary_address() for s in self.sentinel_servers if s.alive}
            if len(reports) != 1:
                return False
            (address,) = reports
            if address is None or address[1] == old_port:
                return False
            if self.server_at(address[1]).replication().get("role") != "master":
                return False
            found[:] = [address]
            return True

        def describe() -> str:
            reports = {s.port: s.primary_address() for s in self.sentinel_servers if s.alive}
            roles = {}
            for node in self.nodes:
                if node.proc is not None and node.proc.poll() is None:
                    roles[node.port] = node.replication().get("role")
            return f"sentinels report {reports}; live node roles {roles}"

        _wait_until(promoted, timeout, describe, f"failover away from port {old_port}")
        return found[0]


@pytest.fixture
def sentinel_set(tmp_path: Path) -> Iterator[SentinelSet]:
    """A primary, its replica and three sentinels, up and agreed; stopped afterwards."""
    with started(SentinelSet(tmp_path / "sentinel-set")) as deployment:
        yield deployment


@pytest.fixture(scope="module")
def shared_sentinel_set(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelSet]:
    """One set for a whole module (the backend contract suite, 2 s to start each time):
    its tests must leave it as they found it (no kills, no pauses)."""
    with started(SentinelSet(tmp_path_factory.mktemp("shared-sentinel-set"))) as deployment:
        yield deployment
