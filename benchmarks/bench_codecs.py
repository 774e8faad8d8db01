"""Arrow decoding: what full validation of every incoming message costs.

Since issue 10, ``ArrowCodec.decode`` validates every batch it reads in full
(``validate(full=True)``: every offset, dictionary index and UTF-8 string)
plus the few checks that validation leaves out, because a crafted message
that passes the cheap checks crashes the worker when its values are read.
This compares, on one Arrow IPC message of an int64, a float64 (5% nulls) and
a short string column:

(a) baseline: ``pa.ipc.open_stream(data).read_next_batch()`` and the cheap
    ``batch.validate()``: what decode did before
(b) Sabot: ``get_codec("arrow").decode(data)``

for batches of 1,000 and 10,000 rows, best of 5 runs of about 0.2 s each.

    python benchmarks/bench_codecs.py [--rows 1000,10000] [--repeat 5]
"""
import argparse
import time

import pyarrow as pa

from sabot.codecs import get_codec

RUN_SECONDS = 0.2


def make_batch(rows):
    return pa.record_batch({
        "id": pa.array(range(rows), pa.int64()),
        "px": pa.array([None if i % 20 == 0 else 100 + i / 8 for i in range(rows)], pa.float64()),
        "sym": pa.array([f"SYM{i % 500:03d}" for i in range(rows)], pa.string()),
    })


def baseline(data):
    batch = pa.ipc.open_stream(data).read_next_batch()
    batch.validate()
    return batch


def rate(fn, data, rows, repeat):
    """Best rows/s over ``repeat`` timed runs of about RUN_SECONDS each."""
    n = 1
    while True:  # calibrate the loop count
        start = time.perf_counter()
        for _ in range(n):
            fn(data)
        if time.perf_counter() - start > RUN_SECONDS / 4:
            break
        n *= 2
    n = max(1, int(n * RUN_SECONDS / max(time.perf_counter() - start, 1e-9)))
    best = 0.0
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(n):
            fn(data)
        best = max(best, n * rows / (time.perf_counter() - start))
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="1000,10000", help="batch sizes, comma-separated")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    decode = get_codec("arrow").decode
    print(f"Arrow IPC decode of one message (int64, float64, short string), "
          f"best of {args.repeat}, pyarrow {pa.__version__}")
    print(f"{'rows':>7} {'bytes':>9}  {'(a) cheap validate rows/s':>26} "
          f"{'(b) sabot decode rows/s':>24} {'us/msg (a)':>11} {'us/msg (b)':>11} {'(b)/(a)':>8}")
    for rows in (int(r) for r in args.rows.split(",")):
        data = get_codec("arrow").encode(make_batch(rows))
        assert decode(data).equals(baseline(data))
        a = rate(baseline, data, rows, args.repeat)
        b = rate(decode, data, rows, args.repeat)
        print(f"{rows:>7,} {len(data):>9,}  {a:>26,.0f} {b:>24,.0f} "
              f"{rows / a * 1e6:>11.1f} {rows / b * 1e6:>11.1f} {b / a:>7.2f}x")


if __name__ == "__main__":
    main()
