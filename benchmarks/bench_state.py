"""State: tables, stores, windows and joins, each against its baseline, one run.

Each section lives in its own module beside this script (``_state_*.py``,
each runnable alone) and returns rows of
``{"what", "sabot", "baseline", "ratio", "unit"}``; this script runs them
all in one process, one after the other, and prints one table:

* ``_state_windows``: Arrow windows (tumbling count and sum, 10,000 keys,
  10,000-row batches) on a memory channel and from Kafka, against a per-row
  dict loop;
* ``_state_tables``: per-value ``table[key] += 1`` with the changelog on,
  recovery from the changelog, restart with an intact store of 1M keys;
* ``_state_stores``: LMDB and rocksdict get/put/open against a dict;
* ``_state_faust``: the same windowed count as a Faust windowed table;
* ``_state_joins``: a stream-table join against a per-row dict lookup.

Machines are noisy: read the ratios. Defaults only, unless a row says so.

    python benchmarks/bench_state.py [--only windows,tables]
"""
import argparse
import importlib
import os
import sys
import time

SECTIONS = ["windows", "tables", "stores", "faust", "joins"]


def _fmt(value):
    if value is None:
        return "-"
    if isinstance(value, float):
        if value >= 100:
            return f"{value:,.0f}"
        return f"{value:.3g}"
    return str(value)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(SECTIONS),
                        help="comma-separated sections: " + ", ".join(SECTIONS))
    args = parser.parse_args()
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    rows = []
    failed = []
    for name in [s.strip() for s in args.only.split(",") if s.strip()]:
        if name not in SECTIONS:
            parser.error(f"unknown section {name!r}; known: {', '.join(SECTIONS)}")
        try:
            module = importlib.import_module(f"_state_{name}")
        except ImportError as exc:
            failed.append(f"{name}: not available ({exc})")
            continue
        start = time.perf_counter()
        section = module.run()
        print(f"# {name}: {len(section)} rows in {time.perf_counter() - start:.1f} s", flush=True)
        rows.extend(dict(row, section=name) for row in section)
    header = ("section", "what", "sabot", "baseline", "ratio", "unit")
    table = [header] + [tuple(_fmt(r.get(k)) for k in header) for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    for line in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths)))
    for line in failed:
        print(line)
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
