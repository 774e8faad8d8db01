"""The rocksdict store: its faults, kill -9, and the error when the extra is missing.

The contract itself (round trips, positions, reopen, reset) runs for
``rocksdb://`` in ``test_stores.py``.
"""
from __future__ import annotations

import glob
import json
import os
import sys

import pytest

from sabot.exceptions import (ConfigurationError, StoreCorrupt, StoreError, StoreUntrusted,
                              StoreVersionMismatch)
from sabot.tables.stores import open_store
from sabot.tables.stores.base import FORMAT_VERSION

from .store_faults import run_crash_rounds

rocksdict = pytest.importorskip("rocksdict") if os.environ.get("CI", "").lower() != "true" \
    else __import__("rocksdict")


def _store(tmp_path, table="counts", partition=3):
    return open_store("rocksdb://", table=table, partition=partition, app="app",
                      datadir=tmp_path)


def _filled(tmp_path, n=50_000):
    store = _store(tmp_path)
    store.apply({b"%08d" % i: b"v" * 50 for i in range(n)}, changelog_offset=n,
                source_positions={"src/3": n})
    path = store.path
    store.close()
    return path


def _raw_meta(path, key, value):
    options = rocksdict.Options(raw_mode=True)
    db = rocksdict.Rdict(path, options,
                         column_families={"sabot.meta": rocksdict.Options(raw_mode=True)})
    meta = db.get_column_family("sabot.meta")
    meta[key] = value
    del meta
    db.close()


def _untrusted(tmp_path, cls=StoreCorrupt, match="'counts' partition 3"):
    with pytest.raises(cls, match=match) as info:
        _store(tmp_path)
    assert isinstance(info.value, StoreUntrusted)
    assert info.value.table == "counts" and info.value.partition == 3
    return info.value


def test_a_damaged_block_is_found_by_a_read(tmp_path):
    path = _filled(tmp_path)
    sst = max(glob.glob(os.path.join(path, "*.sst")), key=os.path.getsize)
    with open(sst, "r+b") as f:
        f.seek(os.path.getsize(sst) // 3)
        f.write(b"\xff" * 4096)
    store = _store(tmp_path)
    try:
        with pytest.raises(StoreCorrupt, match="'counts' partition 3.*checksum"):
            for i in range(50_000):
                store.get(b"%08d" % i)
    finally:
        store.close()


def test_a_damaged_manifest_is_found_on_open(tmp_path):
    path = _filled(tmp_path)
    for manifest in glob.glob(os.path.join(path, "MANIFEST-*")):
        with open(manifest, "r+b") as f:
            f.write(b"\x5a" * 200)
    _untrusted(tmp_path, match="'counts' partition 3.*Corruption")


def test_written_by_another_format_version(tmp_path):
    path = _filled(tmp_path)
    record = {"format": "sabot.tables.store", "version": FORMAT_VERSION + 1,
              "table": "counts", "partition": 3}
    _raw_meta(path, b"format", json.dumps(record).encode())
    error = _untrusted(tmp_path, cls=StoreVersionMismatch, match="version 2")
    assert error.found == FORMAT_VERSION + 1


def test_metadata_record_unreadable(tmp_path):
    path = _filled(tmp_path)
    _raw_meta(path, b"format", b"\xff\xfe")
    _untrusted(tmp_path, match="not readable")


def test_data_without_metadata(tmp_path):
    path = os.path.join(tmp_path, "app", "counts-3")
    os.makedirs(path)
    options = rocksdict.Options(raw_mode=True)
    db = rocksdict.Rdict(path, options)
    db[b"someone"] = b"else's"
    db.close()
    _untrusted(tmp_path, match="no metadata record")


def test_a_second_opener_is_refused(tmp_path):
    store = _store(tmp_path)
    try:
        with pytest.raises(StoreError, match="'counts' partition 3.*lock"):
            _store(tmp_path)
        store.apply({b"a": b"1"})
    finally:
        store.close()


def test_reopen_many_keys(tmp_path):
    store = _store(tmp_path)
    for start in range(0, 200_000, 50_000):
        store.apply({b"key%07d" % i: b"%d" % i for i in range(start, start + 50_000)},
                    changelog_offset=start + 49_999, source_positions={"src/3": start})
    store.close()
    again = _store(tmp_path)
    try:
        assert len(again) == 200_000 and again.changelog_offset() == 199_999
        assert again.source_positions() == {"src/3": 150_000}
        assert again.get_many([b"key0000000", b"key0199999", b"x"]) == [b"0", b"199999", None]
    finally:
        again.close()


def test_kill_9_mid_apply_leaves_data_matching_offsets(tmp_path):
    run_crash_rounds(f"rocksdb://{tmp_path}/crash", rounds=3)


def test_without_rocksdict_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "rocksdict", None)  # import rocksdict now fails
    monkeypatch.delitem(sys.modules, "sabot.tables.stores.rocksdb", raising=False)
    with pytest.raises(ConfigurationError, match=r"pip install sabot\[rocksdb\]"):
        open_store("rocksdb://", table="t", partition=0)
