"""The app many-worker tests and ``benchmarks/bench_scale.py`` run as real ``sabot worker`` processes.

Configured by environment variables (one module for Kafka and Redis):

- ``SCALE_BROKER`` (``kafka://...`` or ``redis://...``), ``SCALE_TOPIC``, ``SCALE_APP_ID``
  (the consumer group);
- ``SCALE_OUTDIR``: each process appends the id of every value it processes,
  before the value is acknowledged, to ``<outdir>/<worker id or pid>-<pid>.ids``;
- ``SCALE_SLOW``: seconds the agent sleeps after every value (a value in
  flight when a worker is killed);
- ``SCALE_CPU``: iterations of pure-Python work per value (the CPU-bound
  agent of the benchmark);
- ``SCALE_CLAIM_MS``: ``redis_claim_idle_ms``; ``SCALE_SESSION``: the Kafka
  session timeout in seconds;
- ``SCALE_TABLE=1``: an agent counts the values per message key in the table
  ``counts`` (a changelog on the broker, a store under ``SCALE_DATADIR``) and
  appends ``<key> <count>`` to ``<outdir>/<worker id>-<pid>.counts`` after
  each change.
"""
import asyncio
import os

import sabot

TOPIC = os.environ.get("SCALE_TOPIC", "scale")
SESSION = float(os.environ.get("SCALE_SESSION", "3.0"))

app = sabot.App(
    os.environ.get("SCALE_APP_ID", "scale-test"),
    broker=os.environ.get("SCALE_BROKER", "memory://"),
    status_interval=1.0,
    shutdown_timeout=5.0,
    stream_batch_size=int(os.environ.get("SCALE_BATCH", "50")),
    stream_buffer_maxsize=int(os.environ.get("SCALE_MAXSIZE", "200")),
    broker_commit_interval=0.2,
    # tansu answers a JoinGroup after half the session timeout: keep it short.
    broker_session_timeout=SESSION,
    broker_heartbeat_interval=min(0.5, SESSION / 4),
    broker_rebalance_timeout=SESSION,
    broker_connect_timeout=3.0,
    broker_revoke_timeout=3.0,
    redis_claim_idle_ms=int(os.environ.get("SCALE_CLAIM_MS", "1000")),
    datadir=os.environ.get("SCALE_DATADIR") or None,
)

events = app.topic(TOPIC, value_serializer="json")

_SLOW = float(os.environ.get("SCALE_SLOW", "0"))
_CPU = int(os.environ.get("SCALE_CPU", "0"))
_fd = None


def _outfile() -> int:
    global _fd
    if _fd is None:
        name = f"{app.conf.worker_id or 'w'}-{os.getpid()}.ids"
        _fd = os.open(os.path.join(os.environ["SCALE_OUTDIR"], name),
                      os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    return _fd


def burn(value: int, rounds: int) -> int:
    """Pure-Python work: the CPU-bound part of the benchmark's agent."""
    x = value
    for i in range(rounds):
        x = (x * 1103515245 + i) & 0x7FFFFFFF
    return x


@app.agent(events, name="work")
async def work(stream):
    """Burn CPU or sleep as configured, then record the value's id."""
    async for value in stream:
        if _CPU:
            burn(value["id"], _CPU)
        if _SLOW:
            await asyncio.sleep(_SLOW)
        if os.environ.get("SCALE_OUTDIR"):
            os.write(_outfile(), b"%d\n" % value["id"])


if os.environ.get("SCALE_TABLE"):
    counts = app.Table("counts", default=int)
    _counts_fd = None

    @app.agent(events, name="count")
    async def count(stream):
        """Count values per message key in the table; record each new count."""
        global _counts_fd
        async for key, _value in stream.items():
            counts[key] += 1
            if _counts_fd is None:
                name = f"{app.conf.worker_id or 'w'}-{os.getpid()}.counts"
                _counts_fd = os.open(os.path.join(os.environ["SCALE_OUTDIR"], name),
                                     os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            shown = key.decode() if isinstance(key, bytes) else str(key)
            os.write(_counts_fd, f"{shown} {counts[key]}\n".encode())
