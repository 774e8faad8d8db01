"""What the exactly-once table tests read of a table (test_*_eos_tables.py)."""
from sabot.tables.codec import decode, decode_record


def stored(table):
    """The table's stores, key -> value: what was applied (committed)."""
    out = {}
    for partition in table.held_partitions:
        for raw_key, raw in table.store_for(partition).items():
            out[decode(raw_key)] = decode_record(raw)[0]
    return out
