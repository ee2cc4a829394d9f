"""A real Redis Cluster for the tests: three primaries, no replicas.

``cluster`` starts three ``redis-server --cluster-enabled yes`` processes on free loopback
ports, each in its own directory, joins them with ``redis-cli --cluster create`` and waits
until every node reports ``cluster_state:ok`` and knows the whole slot map. A test may
pause a node (SIGSTOP), kill it, or move slots with ``reshard``.

``cluster-require-full-coverage no`` is set, as a deployment that wants the other nodes
to keep serving while one is lost must set it: with the default a single failed primary
makes every node refuse every command. The same skip rules as ``tests.redis_harness``.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.cluster import key_slot

from tests.redis_harness import RedisServer, free_port, started

HOST = "127.0.0.1"
STARTUP_TIMEOUT = 30.0
_TOOLS = ("redis-server", "redis-cli")


class ClusterNode(RedisServer):
    """One cluster-enabled redis-server; its node table lives in its own directory."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.bus_port = free_port()

    def _args(self) -> list[str]:
        return [
            *super()._args(),
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            str(self.directory / "nodes.conf"),
            "--cluster-node-timeout",
            "2000",
            "--cluster-require-full-coverage",
            "no",
            # Its own bus port: the default (port + 10 000) fails above 55 535.
            "--cluster-port",
            str(self.bus_port),
        ]

    def info(self) -> dict[str, str]:
        """``CLUSTER INFO`` as a dict."""
        reply = self.client().execute_command("CLUSTER INFO")
        return {str(name): str(value) for name, value in reply.items()}

    def node_id(self) -> str:
        reply = self.client().execute_command("CLUSTER MYID")
        return reply.decode() if isinstance(reply, bytes) else str(reply)

    def _new_ports(self) -> None:
        self.bus_port = free_port()
        (self.directory / "nodes.conf").unlink(missing_ok=True)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None and not self.paused

    def slots(self) -> set[int]:
        """The slots this node serves, from its own ``CLUSTER SLOTS``."""
        owned: set[int] = set()
        for start, end, primary, *_ in self.client().execute_command("CLUSTER SLOTS"):
            if int(primary[1]) == self.port:
                owned.update(range(int(start), int(end) + 1))
        return owned

    def keys(self) -> list[str]:
        """Every key on this node (for assertions; SCAN, never KEYS)."""
        return [k.decode() for k in self.client().scan_iter(count=1000)]


def _wait_until(check: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            if check():  # type: ignore[operator]
                return
        except redis.RedisError as exc:
            last = exc
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not within {timeout:g}s (last error: {last!r})")
        time.sleep(0.05)


class Cluster:
    """Three primaries, joined, every slot served."""

    def __init__(self, directory: Path, *, primaries: int = 3) -> None:
        self.directory = directory
        self.nodes = [ClusterNode(self._subdir(f"node-{i}")) for i in range(primaries)]
        self._client: redis.RedisCluster | None = None

    def _subdir(self, name: str) -> Path:
        path = self.directory / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def url(self) -> str:
        """``redis+cluster://h:p,h:p,h:p``: the URL memo accepts."""
        return "redis+cluster://" + ",".join(f"{HOST}:{n.port}" for n in self.nodes)

    def client(self) -> redis.RedisCluster:
        """A synchronous cluster client for the test's own reads and writes."""
        if self._client is None:
            self._client = redis.RedisCluster(host=HOST, port=self.nodes[0].port)
        return self._client

    def start(self, timeout: float = STARTUP_TIMEOUT) -> Cluster:
        for node in self.nodes:
            node.start()
        addresses = [f"{HOST}:{n.port}" for n in self.nodes]
        subprocess.run(
            ["redis-cli", "--cluster", "create", *addresses, "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=timeout,
        )
        _wait_until(self.agreed, timeout, "every node to see cluster_state:ok and all slots")
        return self

    def agreed(self) -> bool:
        """Every live node reports the cluster ok, all 16 384 slots, and the same map."""
        maps = []
        for node in self.nodes:
            if not node.alive:
                continue
            info = node.info()
            if info.get("cluster_state") != "ok" or info.get("cluster_slots_ok") != "16384":
                return False
            maps.append({port: len(node_slots) for port, node_slots in self.slot_map(node)})
        return all(m == maps[0] for m in maps)

    def slot_map(self, node: ClusterNode | None = None) -> list[tuple[int, set[int]]]:
        """(port, slots) per primary as ``node`` (default: the first live one) sees it."""
        asked = node or next(n for n in self.nodes if n.alive)
        owned: dict[int, set[int]] = {}
        for start, end, primary, *_ in asked.client().execute_command("CLUSTER SLOTS"):
            owned.setdefault(int(primary[1]), set()).update(range(int(start), int(end) + 1))
        return sorted(owned.items())

    def node_for(self, key: str) -> ClusterNode:
        slot = key_slot(key.encode())
        for port, slots in self.slot_map():
            if slot in slots:
                return next(n for n in self.nodes if n.port == port)
        raise KeyError(f"no node serves slot {slot} of {key!r}")

    def keys_per_node(self, match: str = "*") -> dict[int, list[str]]:
        return {
            n.port: [k.decode() for k in n.client().scan_iter(match=match, count=1000)]
            for n in self.nodes
        }

    def reshard(self, slots: int, source: ClusterNode, target: ClusterNode) -> None:
        """Move ``slots`` slots, keys and all, from ``source`` to ``target`` with
        ``redis-cli --cluster reshard`` (blocks until done)."""
        subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "reshard",
                f"{HOST}:{source.port}",
                "--cluster-from",
                source.node_id(),
                "--cluster-to",
                target.node_id(),
                "--cluster-slots",
                str(slots),
                "--cluster-yes",
                "--cluster-pipeline",
                "100",
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )

    def flush(self) -> None:
        for node in self.nodes:
            node.client().flushall()

    def stop(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        for node in self.nodes:
            node.stop()


@pytest.fixture
def redis_cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A fresh three-primary cluster, stopped afterwards (tests may pause, kill, reshard)."""
    with started(Cluster(tmp_path / "cluster"), _TOOLS) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def shared_redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One cluster for a module (the contract suite): its tests leave it as they found it."""
    with started(Cluster(tmp_path_factory.mktemp("shared-cluster")), _TOOLS) as cluster:
        yield cluster
