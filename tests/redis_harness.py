"""Real redis-server processes for the tests, which may kill, pause and restart them.

Each ``redis_server`` is a fresh server on a free loopback port, in a temporary
directory, persisting nothing. ``MEMO_TEST_REDIS_URL`` points ``redis_url`` at an
existing server instead (tests that must control the process still start their own).

Without redis-server on PATH (and no MEMO_TEST_REDIS_URL), Redis tests skip with one
reason; with ``MEMO_REQUIRE_REDIS=1`` (as CI sets) that skip is a failure instead.
"""

from __future__ import annotations

import atexit
import datetime as dt
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol, TypeVar

import pytest
import redis

_LIVE: set[subprocess.Popen[bytes]] = set()
MISSING_REASON = (
    "redis-server not found: install it (apt-get install redis-server) or set "
    "MEMO_TEST_REDIS_URL to a disposable server"
)


def _cleanup() -> None:
    for proc in list(_LIVE):
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.kill()
            proc.wait(5)


atexit.register(_cleanup)


def redis_required() -> bool:
    return os.environ.get("MEMO_REQUIRE_REDIS", "") not in ("", "0", "false")


def need_redis(reason: str = MISSING_REASON) -> None:
    """Skip the test for ``reason``, or fail it when Redis tests are required."""
    if redis_required():
        pytest.fail(f"MEMO_REQUIRE_REDIS=1 but {reason}")
    pytest.skip(reason)


class Deployment(Protocol):
    def start(self) -> object: ...

    def stop(self) -> None: ...


D = TypeVar("D", bound=Deployment)


@contextmanager
def started(deployment: D, tools: tuple[str, ...] = ("redis-server",)) -> Iterator[D]:
    """``deployment`` started, and stopped afterwards whatever happened; skipped (a
    failure under MEMO_REQUIRE_REDIS=1) when one of ``tools`` is not on PATH."""
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        need_redis(f"{' and '.join(missing)} not found: install redis-server (apt-get)")
    try:
        deployment.start()
        yield deployment
    finally:
        deployment.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    cert: Path
    key: Path
    other_ca: Path  # a CA that signed nothing the server presents


class PortTaken(RuntimeError):
    """The server could not bind its port: somebody else took it first."""


class RedisServer:
    """One redis-server process under the test's control."""

    #: How long a server may take to answer its first PING.
    START_SECONDS = 10.0

    def __init__(
        self,
        directory: Path,
        *,
        password: str | None = None,
        tls: TlsFiles | None = None,
        acl_user: tuple[str, str] | None = None,
        unix: bool = False,
    ):
        self.directory = directory
        self.password = password
        self.tls = tls
        self.acl_user = acl_user
        self.socket = directory / "redis.sock" if unix else None
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.paused = False
        self._log: IO[bytes] | None = None
        self._client: redis.Redis | None = None

    @property
    def url(self) -> str:
        if self.socket is not None:
            return f"unix://{self.socket}"
        auth = f":{self.password}@" if self.password else ""
        if self.acl_user:
            auth = f"{self.acl_user[0]}:{self.acl_user[1]}@"
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://{auth}127.0.0.1:{self.port}/0"

    def _args(self) -> list[str]:
        args = ["redis-server", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        args += ["--dir", str(self.directory), "--daemonize", "no", "--loglevel", "warning"]
        if self.tls:
            args += ["--port", "0", "--tls-port", str(self.port)]
            args += ["--tls-cert-file", str(self.tls.cert), "--tls-key-file", str(self.tls.key)]
            args += ["--tls-ca-cert-file", str(self.tls.ca), "--tls-auth-clients", "no"]
        else:
            args += ["--port", str(self.port)]
        if self.password:
            args += ["--requirepass", self.password]
        if self.acl_user:
            name, secret = self.acl_user
            # Redis joins the words that follow an option: the rule goes as separate words.
            args += ["--user", name, "on", f">{secret}", "~*", "&*", "+@all"]
            args += ["--user", "default", "off"]
        if self.socket is not None:
            args += ["--unixsocket", str(self.socket), "--unixsocketperm", "700"]
        return args

    def start(self) -> RedisServer:
        for _ in range(3):
            try:
                return self._start()
            except PortTaken:
                # Another process took the free port between our probe and the bind.
                self.port = free_port()
                self._new_ports()
        return self._start()

    def _new_ports(self) -> None:
        """Called when the port was taken: a subclass with more ports picks them anew."""

    def _start(self) -> RedisServer:
        self._close_files()
        self._log = open(self.directory / "redis.log", "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(self._args(), stdout=self._log, stderr=subprocess.STDOUT)
        _LIVE.add(self.proc)
        deadline = time.monotonic() + self.START_SECONDS
        while True:
            try:
                if self.client().ping():
                    return self
            except redis.RedisError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                tail = (self.directory / "redis.log").read_text(errors="replace")[-2000:]
                taken = self.proc.poll() is not None and "already in use" in tail
                self._abandon()
                if taken:
                    raise PortTaken(self.port)
                raise RuntimeError(f"redis-server did not start on {self.port}:\n{tail}")
            time.sleep(0.02)

    def client(self) -> redis.Redis:
        """A plain synchronous client for assertions (not the code under test)."""
        if self._client is None:
            kwargs: dict[str, object] = {"socket_timeout": 2, "socket_connect_timeout": 2}
            if self.tls:
                kwargs.update(ssl=True, ssl_ca_certs=str(self.tls.ca))
            if self.acl_user:
                kwargs.update(username=self.acl_user[0], password=self.acl_user[1])
            else:
                kwargs["password"] = self.password
            self._client = redis.Redis(
                host="127.0.0.1",
                port=self.port,
                **kwargs,  # type: ignore[arg-type]
            )
        return self._client

    def _abandon(self) -> None:
        """A start that failed: no server left running, no file left open."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        _LIVE.discard(self.proc)
        self._close_files()

    def _close_files(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def kill(self) -> None:
        assert self.proc is not None
        self.resume()
        self.proc.kill()
        self.proc.wait(5)
        _LIVE.discard(self.proc)
        if self._client is not None:
            self._client.close()
            self._client = None

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        if self.proc is not None and self.paused:
            self.proc.send_signal(signal.SIGCONT)
            self.paused = False

    def restart(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.kill()
        self.start()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.kill()
        self._close_files()

    def commandstats(self) -> dict[str, int]:
        """Calls per command since start, from INFO commandstats."""
        info = self.client().info("commandstats")
        return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in info.items()}

    def dbsize(self) -> int:
        """Keys in the database, memo's fleet figures left out: a cache that has read or
        written keeps its record (``memo:{namespace}#fleet``) there while it is open."""
        client = self.client()
        return int(client.dbsize()) - sum(1 for _ in client.scan_iter(match="*#fleet"))


def make_tls_files(directory: Path) -> TlsFiles:
    """A CA, a server certificate for 127.0.0.1 signed by it, and an unrelated CA."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.timezone.utc)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    ca_key_usage = x509.KeyUsage(
        digital_signature=False,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )

    def ca(cn: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(name(cn))
            .issuer_name(name(cn))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            # What a strict verifier (Python 3.13's default context) asks of a CA.
            .add_extension(ca_key_usage, critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        return key, cert

    ca_key, ca_cert = ca("memo test CA")
    _, other_cert = ca("memo unrelated CA")
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(name("127.0.0.1"))
        .issuer_name(ca_cert.subject)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        # A strict verifier wants the issuer named by key in a certificate it did not sign.
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    files = TlsFiles(
        ca=directory / "ca.pem",
        cert=directory / "server.pem",
        key=directory / "server.key",
        other_ca=directory / "other-ca.pem",
    )
    files.ca.write_bytes(ca_cert.public_bytes(pem))
    files.other_ca.write_bytes(other_cert.public_bytes(pem))
    files.cert.write_bytes(server_cert.public_bytes(pem))
    files.key.write_bytes(
        server_key.private_bytes(
            pem, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        )
    )
    return files


@pytest.fixture
def make_redis_server(tmp_path: Path) -> Iterator[object]:
    """A factory: ``make_redis_server(password=..., tls=...)`` starts a server."""
    if shutil.which("redis-server") is None:
        need_redis()
    servers: list[RedisServer] = []

    def make(**options: object) -> RedisServer:
        directory = tmp_path / f"redis-{len(servers)}"
        directory.mkdir()
        server = RedisServer(directory, **options).start()  # type: ignore[arg-type]
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def redis_server(make_redis_server: object) -> RedisServer:
    """A fresh redis-server this test may kill, pause and restart."""
    return make_redis_server()  # type: ignore[operator, no-any-return]


@pytest.fixture
def redis_url(request: pytest.FixtureRequest) -> str:
    """A Redis URL: MEMO_TEST_REDIS_URL (flushed first), or a fresh server's."""
    external = os.environ.get("MEMO_TEST_REDIS_URL")
    if external:
        redis.Redis.from_url(external).flushdb()
        return external
    server: RedisServer = request.getfixturevalue("redis_server")
    return server.url


@pytest.fixture
def tls_files(tmp_path: Path) -> TlsFiles:
    directory = tmp_path / "tls"
    directory.mkdir()
    return make_tls_files(directory)
