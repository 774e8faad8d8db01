"""Tables: per-value ``table[key] += 1`` with the changelog on, recovery, restart.

Rows (``run()`` returns them; ``python benchmarks/_state_tables.py`` prints them):

* ``table[key] += 1 in an agent``: an agent over a memory channel, keyed
  batches of 1,000 values (the key check runs per value), 10,000 keys, the
  changelog and the store on (memory://, flushed every commit interval and
  once at the end, included in the time); baseline: the same agent counting
  in a plain dict.
* ``table[key] += 1 alone``: the same updates made by an agent that reads
  whole batches (``stream.batches()``), so what is timed is the table itself;
  baseline: a plain dict in the same loop.
* ``recovery from the changelog``: 1,000,000 keys replayed from a changelog
  into an LMDB store (decoded and checked, applied in batches); baseline:
  decoding the same entries into a dict (what an in-memory table must do
  at the least).
* ``restart, intact store of 1M keys``: an app restarted over the LMDB store
  of the previous row, up to the moment its agents could run; baseline: the
  full recovery of the previous row.

Defaults only: stream buffers, batch sizes and commit interval as shipped.
"""
from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
import time
from typing import Any, Dict, List

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

N_UPDATES = 1_000_000
KEYS = 10_000
BATCH = 1_000
N_RECOVER = 1_000_000


def _keyed_batches(channel: Any) -> List[Any]:
    keys = [f"k{i % KEYS}" for i in range(BATCH)]
    return [channel.make_batch(list(keys), keys=keys) for _ in range(N_UPDATES // BATCH)]


async def _agent_rate(use_table: bool, whole_batches: bool) -> float:
    import sabot
    app = sabot.App(f"bench-tables-{use_table}-{whole_batches}")
    counts: Any = app.Table("counts", default=int) if use_table else {}
    channel = app.channel()
    done = asyncio.Event()
    seen = [0]

    if whole_batches:
        @app.agent(channel)
        async def count_batches(stream: Any) -> None:
            table = counts
            async for batch in stream.batches():
                if use_table:
                    for key in batch:
                        table[key] += 1
                else:
                    for key in batch:
                        table[key] = table.get(key, 0) + 1
                seen[0] += len(batch)
                if seen[0] >= N_UPDATES:
                    done.set()
    else:
        @app.agent(channel)
        async def count_values(stream: Any) -> None:
            table = counts
            n = 0
            async for key in stream:
                if use_table:
                    table[key] += 1
                else:
                    table[key] = table.get(key, 0) + 1
                n += 1
                if n >= N_UPDATES:
                    done.set()

    batches = _keyed_batches(channel)
    await app.start()
    try:
        start = time.perf_counter()
        for batch in batches:
            await channel.publish(batch)
        await done.wait()
        if use_table:
            await app.tables.flush()  # the changelog and the store are part of the work
        elapsed = time.perf_counter() - start
        if use_table:
            assert sum(counts.values()) == N_UPDATES
    finally:
        await app.stop()
    return N_UPDATES / elapsed


def _changelog_entries(n: int) -> List[Any]:
    from sabot.tables.changelog import ChangelogEntry
    from sabot.tables.codec import encode, encode_record
    headers = {"sabot-source": b"orders:0"}
    out = []
    for i in range(n):
        out.append(ChangelogEntry(i, encode(f"user-{i}"), encode_record(i, "orders:0", i),
                                  dict(headers, **{"sabot-position": str(i).encode()})))
    return out


async def _recovery(datadir: str, entries: List[Any]) -> Dict[str, float]:
    import sabot
    app = sabot.App("bench-recovery", store="lmdb://", datadir=datadir)
    table = app.Table("counts", default=int)
    app.tables._memory_logs[table.changelog_topic_name] = {0: entries}
    start = time.perf_counter()
    await app.start()
    recovered = time.perf_counter() - start
    assert table.recovery_stats[0].changes == len(entries)
    assert table[f"user-{len(entries) - 1}"] == len(entries) - 1
    await app.stop()

    # The same app restarted over its store (a new process would find the
    # same files; the changelog has nothing after the store's offset).
    app = sabot.App("bench-recovery", store="lmdb://", datadir=datadir)
    table = app.Table("counts", default=int)
    start = time.perf_counter()
    await app.start()
    restarted = time.perf_counter() - start
    assert table.recovery_stats[0].changes == 0
    assert table["user-12345"] == 12345
    await app.stop()
    return {"recovered": recovered, "restarted": restarted}


def _dict_recovery(entries: List[Any]) -> float:
    from sabot.tables.codec import decode, decode_record
    start = time.perf_counter()
    data = {}
    for entry in entries:
        data[decode(entry.key)] = decode_record(entry.value)[0]
    return time.perf_counter() - start


def run() -> List[Dict[str, Any]]:
    """The rows of this section (see the module docstring)."""
    rows: List[Dict[str, Any]] = []
    in_agent = asyncio.run(_agent_rate(True, False))
    dict_agent = asyncio.run(_agent_rate(False, False))
    rows.append({"what": "table[key] += 1 in an agent (changelog on)", "sabot": in_agent,
                 "baseline": dict_agent, "ratio": in_agent / dict_agent, "unit": "updates/s"})
    alone = asyncio.run(_agent_rate(True, True))
    dict_alone = asyncio.run(_agent_rate(False, True))
    rows.append({"what": "table[key] += 1 alone (changelog on)", "sabot": alone,
                 "baseline": dict_alone, "ratio": alone / dict_alone, "unit": "updates/s"})
    entries = _changelog_entries(N_RECOVER)
    datadir = tempfile.mkdtemp(prefix="sabot-bench-tables-")
    try:
        times = asyncio.run(_recovery(datadir, entries))
    finally:
        shutil.rmtree(datadir, ignore_errors=True)
    dict_time = _dict_recovery(entries)
    rows.append({"what": "recovery from the changelog into LMDB, 1M keys",
                 "sabot": N_RECOVER / times["recovered"], "baseline": N_RECOVER / dict_time,
                 "ratio": dict_time / times["recovered"], "unit": "keys/s"})
    rows.append({"what": "restart with an intact store of 1M keys",
                 "sabot": times["restarted"], "baseline": times["recovered"],
                 "ratio": times["recovered"] / times["restarted"], "unit": "s (lower is better)"})
    return rows


if __name__ == "__main__":
    for row in run():
        print(f"{row['what']:<52} sabot {row['sabot']:>14,.3f}  baseline {row['baseline']:>14,.3f}"
              f"  ratio {row['ratio']:.2f}  {row['unit']}")
