"""Table stores: LMDB and rocksdict through Sabot's store layer, against a dict.

One million keys (``key000000000``.., 16-byte values). For each store as
``open_store`` gives it (defaults: LMDB without ``writemap``, ``sync`` off;
rocksdict with its WAL, ``sync`` off):

* ``get`` one key at a time, keys in order (sequential) and shuffled (random);
* ``get_many`` of 10,000 shuffled keys at a time;
* ``apply`` of 10,000-key batches in random order (the table's flush), into an
  empty store, until it holds the million;
* opening a closed store of 1M keys and reading one key and its offset
  (a restart with an intact store).

Baselines: a dict (what ``memory://`` costs), the store against rocksdict,
and Sabot's LMDB layer against py-lmdb called directly on an environment with
the same data (``txn.get``, ``cursor.putmulti``): the cost of the layer. One
tuned row, LMDB with ``writemap=true``, stands beside its default. Rates are
best of 3; ratios are sabot / baseline (for the open time, in seconds, lower
is better).

    python benchmarks/_state_stores.py [--keys 1000000]
"""
from __future__ import annotations

import argparse
import random
import shutil
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional

import lmdb

from sabot.tables.stores import open_store

BATCH = 10_000
REPEAT = 3


def _keys(n: int) -> List[bytes]:
    return [b"key%09d" % i for i in range(n)]


def _value(i: int) -> bytes:
    return b"value-%010d" % i


def _timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _batches(keys: List[bytes], seed: int = 7) -> List[Dict[bytes, Optional[bytes]]]:
    order = list(range(len(keys)))
    random.Random(seed).shuffle(order)
    return [{keys[i]: _value(i) for i in order[s:s + BATCH]} for s in range(0, len(keys), BATCH)]


class _Contender:
    """One way of keeping the keys: fill it, read it, reopen it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.best: Dict[str, float] = {}

    def record(self, what: str, seconds: float) -> None:
        self.best[what] = min(self.best.get(what, float("inf")), seconds)

    def fill(self, batches: List[Dict[bytes, Optional[bytes]]]) -> float:
        raise NotImplementedError

    def getter(self) -> Callable[[bytes], Any]:
        raise NotImplementedError

    def get_many(self, keys: List[bytes]) -> Any:
        get = self.getter()
        return [get(k) for k in keys]

    def reopen(self) -> Optional[float]:
        return None

    def close(self) -> None:
        pass


class _DictContender(_Contender):
    def __init__(self) -> None:
        super().__init__("dict")
        self.data: Dict[bytes, bytes] = {}

    def fill(self, batches: List[Dict[bytes, Optional[bytes]]]) -> float:
        self.data = {}
        update = self.data.update
        return _timed(lambda: [update(b) for b in batches])  # type: ignore[func-returns-value]

    def getter(self) -> Callable[[bytes], Any]:
        return self.data.get


class _RawLMDB(_Contender):
    """py-lmdb called directly: one write txn and putmulti per batch, one read txn."""

    def __init__(self, root: str) -> None:
        super().__init__("raw py-lmdb")
        self.root = root
        self.round = 0
        self.env: Any = None
        self.txn: Any = None

    def fill(self, batches: List[Dict[bytes, Optional[bytes]]]) -> float:
        self.close()
        self.round += 1
        path = f"{self.root}/raw-{self.round}"
        self.env = env = lmdb.open(path, map_size=1 << 32, max_dbs=2, sync=False,
                                   metasync=False)
        db = env.open_db(b"data")

        def fill() -> None:
            for batch in batches:
                with env.begin(write=True) as txn:
                    txn.cursor(db=db).putmulti(list(batch.items()))

        seconds = _timed(fill)
        self.txn = env.begin(db=db)
        return seconds

    def getter(self) -> Callable[[bytes], Any]:
        get: Callable[[bytes], Any] = self.txn.get
        return get

    def close(self) -> None:
        if self.env is not None:
            self.txn.abort()
            self.env.close()
            shutil.rmtree(f"{self.root}/raw-{self.round}", ignore_errors=True)
            self.env = None


class _StoreContender(_Contender):
    """A store as open_store gives it."""

    def __init__(self, name: str, url: str, root: str, **options: Any) -> None:
        super().__init__(name)
        self.url, self.root, self.options = url, root, options
        self.round = 0
        self.store: Any = None
        self.batches = 0

    def _open(self) -> Any:
        return open_store(self.url, table="bench", partition=self.round, datadir=self.root,
                          **self.options)

    def fill(self, batches: List[Dict[bytes, Optional[bytes]]]) -> float:
        if self.store is not None:
            self.store.drop()
        self.round += 1
        self.store = store = self._open()
        self.batches = len(batches)

        def fill() -> None:
            for offset, batch in enumerate(batches):
                store.apply(batch, changelog_offset=offset, source_positions={"src/0": offset})

        return _timed(fill)

    def getter(self) -> Callable[[bytes], Any]:
        get: Callable[[bytes], Any] = self.store.get
        return get

    def get_many(self, keys: List[bytes]) -> Any:
        return self.store.get_many(keys)

    def reopen(self) -> Optional[float]:
        """A restart: open the closed store, read a key and its offset, close."""
        self.store.close()
        start = time.perf_counter()
        self.store = self._open()
        assert self.store.get(b"key%09d" % 0) is not None
        assert self.store.changelog_offset() == self.batches - 1
        return time.perf_counter() - start

    def close(self) -> None:
        if self.store is not None:
            self.store.drop()
            self.store = None


def run(n: int = 1_000_000) -> List[Dict[str, Any]]:
    """The rows of this section (see the module docstring)."""
    keys = _keys(n)
    shuffled = keys[:]
    random.Random(3).shuffle(shuffled)
    chunks = [shuffled[s:s + BATCH] for s in range(0, n, BATCH)]
    batches = _batches(keys)
    root = tempfile.mkdtemp(prefix="sabot-bench-stores-")
    lm = _StoreContender("LMDB store", "lmdb://", root + "/lmdb")
    contenders: List[_Contender] = [
        _DictContender(), _RawLMDB(root), lm,
        _StoreContender("LMDB writemap=true", "lmdb://", root + "/lmdb-wm", writemap=True)]
    try:
        import rocksdict  # noqa: F401
        rocks: Optional[_Contender] = _StoreContender("rocksdict store", "rocksdb://",
                                                      root + "/rocks")
        contenders.append(rocks)  # type: ignore[arg-type]
    except ImportError:
        print("# rocksdb://: rocksdict is not installed (pip install sabot[rocksdb])")
        rocks = None
    try:
        # Interleaved: every round measures every contender, so that a busy
        # moment of the machine does not fall on one of them only.
        for _ in range(REPEAT):
            for c in contenders:
                c.record("put", c.fill(batches))
                get = c.getter()
                c.record("seq", _timed(lambda: [get(k) for k in keys]))
                c.record("rand", _timed(lambda: [get(k) for k in shuffled]))
                c.record("many", _timed(lambda: [c.get_many(chunk) for chunk in chunks]))
                opened = c.reopen()
                if opened is not None:
                    c.record("open", opened)
    finally:
        for c in contenders:
            c.close()
        shutil.rmtree(root, ignore_errors=True)

    by_name = {c.name: c for c in contenders}
    rows: List[Dict[str, Any]] = []
    million = f"{n // 1000}k keys" if n < 1_000_000 else f"{n / 1e6:g}M keys"
    labels = {"seq": "get, sequential", "rand": "get, random",
              "many": f"get_many({BATCH:,}), random", "put": f"apply({BATCH:,}-key batches)"}
    units = {"seq": "gets/s", "rand": "gets/s", "many": "gets/s", "put": "keys/s"}
    pairs = [("LMDB store", "dict"), ("LMDB store", "raw py-lmdb"),
             ("LMDB store", "rocksdict store"), ("rocksdict store", "dict"),
             ("LMDB writemap=true", "LMDB store")]
    for what in ("seq", "rand", "many", "put"):
        for mine, theirs in pairs:
            a, b = by_name.get(mine), by_name.get(theirs)
            sabot = n / a.best[what] if a else None
            baseline = n / b.best[what] if b else None
            tuned = " (tuned) vs LMDB default" if mine.startswith("LMDB writemap") else \
                f" vs {theirs}"
            rows.append({"what": f"{labels[what]}, {million}: {mine}{tuned}", "sabot": sabot,
                         "baseline": baseline, "unit": units[what],
                         "ratio": sabot / baseline if sabot and baseline else None})
    for mine, theirs in (("LMDB store", "rocksdict store"), ("LMDB writemap=true", "LMDB store")):
        a, b = by_name.get(mine), by_name.get(theirs)
        sabot = a.best["open"] if a else None
        baseline = b.best["open"] if b else None
        rows.append({"what": f"open a store of {million} (restart): {mine} vs {theirs}",
                     "sabot": sabot, "baseline": baseline, "unit": "s, lower is better",
                     "ratio": sabot / baseline if sabot and baseline else None})
    return rows


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"
    return str(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=1_000_000)
    args = parser.parse_args()
    rows = run(args.keys)
    header = ("what", "sabot", "baseline", "ratio", "unit")
    table = [header] + [tuple(_fmt(r[k]) for k in header) for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    for line in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths)))


if __name__ == "__main__":
    main()
