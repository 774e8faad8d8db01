"""Real ``sabot worker`` processes of ``tests/scale/scale_app.py`` and what the scale tests ask them."""
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Dict, Iterator, List, Optional, Set

from tests.helpers import http_get, until_sync
from tests.servers import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
APP = "tests.scale.scale_app"


class WorkerProc:
    """One ``sabot worker`` process (or a ``--processes`` parent) with its log and web port."""

    def __init__(self, env: Dict[str, str], log_path: str, *, worker_id: Optional[str] = None,
                 processes: int = 1) -> None:
        self.env = env
        self.log_path = log_path
        self.worker_id = worker_id
        self.processes = processes
        self.port = free_port() if processes == 1 else _free_ports(processes)
        self.proc: Optional[subprocess.Popen] = None

    def start(self) -> "WorkerProc":
        args = [sys.executable, "-m", "sabot", "-A", APP, "worker", "--web-port", str(self.port)]
        if self.worker_id is not None:
            args += ["--worker-id", self.worker_id]
        if self.processes != 1:
            args += ["--processes", str(self.processes)]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(args, cwd=ROOT, env={**os.environ, **self.env},
                                         stdout=log, stderr=subprocess.STDOUT)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log(self) -> str:
        return open(self.log_path, encoding="utf-8", errors="replace").read() \
            if os.path.exists(self.log_path) else ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def health(self, index: int = 0) -> Optional[dict]:
        got = http_get(self.port + index, "/health")
        if got is None:
            return None
        return json.loads(got[1])

    def partitions(self, topic: str, index: int = 0) -> List[int]:
        health = self.health(index)
        return [] if health is None else health["worker"]["partitions"].get(topic, [])

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM and the exit code (the test fails with the log if it does not come)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"no exit {timeout}s after SIGTERM:\n{self.log()}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _free_ports(n: int) -> int:
    """A port p with p .. p+n-1 all free right now."""
    for _ in range(50):
        base = free_port()
        if base + n > 65535:
            continue
        if all(_is_free(base + i) for i in range(1, n)):
            return base
    raise RuntimeError(f"no {n} free ports in a row")


def _is_free(port: int) -> bool:
    import socket
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@contextlib.contextmanager
def workers(*procs: WorkerProc) -> Iterator[None]:
    """Started processes, killed on the way out if a test did not stop them."""
    try:
        for p in procs:
            p.start()
        yield
    finally:
        for p in procs:
            p.kill()


def processed(outdir: str) -> Dict[str, List[int]]:
    """Ids processed, per output file (one per worker process)."""
    out: Dict[str, List[int]] = {}
    for name in sorted(os.listdir(outdir)):
        if name.endswith(".ids"):
            with open(os.path.join(outdir, name), "rb") as f:
                out[name] = [int(x) for x in f.read().split()]
    return out


def all_ids(outdir: str) -> Set[int]:
    return {i for ids in processed(outdir).values() for i in ids}


def wait(predicate, what: str, *procs: WorkerProc, timeout: float = 30.0):
    """``until_sync`` that fails at once, with the logs, when a worker exits."""
    def check():
        result = predicate()
        if not result:
            for p in procs:
                if p.proc is not None and p.proc.poll() is not None:
                    raise AssertionError(f"worker exited ({p.proc.returncode}) waiting for "
                                         f"{what}:\n{p.log()}")
        return result
    return until_sync(check, timeout, what=lambda: what + ":\n" + "\n".join(p.log()[-3000:] for p in procs),
                      interval=0.05)


# -- producing -----------------------------------------------------------------------

def create_kafka_topic(broker: str, topic: str, partitions: int = 4) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    async def go() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=broker)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(topic, partitions, 1)])
        finally:
            await admin.close()
    asyncio.run(go())


def produce_kafka(broker: str, topic: str, ids: range) -> None:
    from aiokafka import AIOKafkaProducer

    async def go() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=broker, linger_ms=5)
        await producer.start()
        try:
            for i in ids:
                await producer.send(topic, json.dumps({"id": i}).encode(), key=str(i).encode())
            await producer.flush()
        finally:
            await producer.stop()
    asyncio.run(go())


def produce_redis(server, stream: str, ids: range) -> None:
    client = server.client()
    pipe = client.pipeline(transaction=False)
    for i in ids:
        pipe.xadd(stream, {"value": json.dumps({"id": i}).encode()})
    pipe.execute()


class Feeder:
    """Sends ``chunk`` new ids every ``interval`` seconds from a thread until stopped."""

    def __init__(self, send, chunk: int = 20, interval: float = 0.05) -> None:
        self.send = send
        self.chunk = chunk
        self.interval = interval
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.error: Optional[BaseException] = None

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self.send(range(self.sent, self.sent + self.chunk))
                self.sent += self.chunk
                time.sleep(self.interval)
        except BaseException as exc:  # reported by stop()
            self.error = exc

    def __enter__(self) -> "Feeder":
        self._thread.start()
        return self

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(30)
        if self.error is not None:
            raise self.error
        return self.sent

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(30)


class KafkaSender:
    """A ``send(ids)`` for ``Feeder``: one producer on a loop of the feeding thread."""

    def __init__(self, broker: str, topic: str) -> None:
        self.broker = broker
        self.topic = topic
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._producer = None

    def __call__(self, ids: range) -> None:
        from aiokafka import AIOKafkaProducer
        async def start() -> None:
            self._producer = AIOKafkaProducer(bootstrap_servers=self.broker, linger_ms=5)
            await self._producer.start()

        if self._loop is None:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(start())

        async def go() -> None:
            for i in ids:
                await self._producer.send(self.topic, json.dumps({"id": i}).encode(),
                                          key=str(i).encode())
            await self._producer.flush()
        self._loop.run_until_complete(go())

    def close(self) -> None:
        if self._loop is not None:
            self._loop.run_until_complete(self._producer.stop())
            self._loop.close()
