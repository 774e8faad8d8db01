"""The LMDB store's faults: damaged files, other versions, a full disk, kill -9.

Every untrusted store must raise ``StoreUntrusted`` naming the table and
partition (never open as a silently wrong table), a full disk must refuse
the write and keep the last commit, and a process killed at any moment
must leave data that matches the recorded offsets.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import lmdb
import pytest

from sabot.exceptions import (StoreCorrupt, StoreError, StoreFull, StoreKeyRejected,
                              StoreUntrusted, StoreVersionMismatch)
from sabot.tables.stores import open_store
from sabot.tables.stores.base import FORMAT_VERSION

from .store_faults import (ROOT, check_crash_store, check_full_disk_outcome, crash_loop_script,
                           run_crash_rounds, unshare_prefix)


def _store(tmp_path, table="counts", partition=3, **options):
    return open_store("lmdb://", table=table, partition=partition, app="app",
                      datadir=tmp_path, **options)


def _filled(tmp_path, n=20_000, **options):
    store = _store(tmp_path, **options)
    store.apply({b"%08d" % i: b"v" * 50 for i in range(n)}, changelog_offset=n,
                source_positions={"src/3": n})
    path = store.path
    store.close()
    return path


def _raw_meta(path, key, value):
    """Write into the store's metadata behind its back, as another program would."""
    env = lmdb.open(path, max_dbs=2)
    meta = env.open_db(b"sabot.meta")
    with env.begin(write=True) as txn:
        txn.put(key, value, db=meta)
    env.close()


def _untrusted(tmp_path, cls=StoreCorrupt, match="'counts' partition 3", **options):
    with pytest.raises(cls, match=match) as info:
        _store(tmp_path, **options)
    error = info.value
    assert isinstance(error, StoreUntrusted)
    assert error.table == "counts" and error.partition == 3
    assert "table 'counts' partition 3" in str(error)
    return error


# -- damaged files -------------------------------------------------------------------

def test_garbage_meta_pages(tmp_path):
    path = _filled(tmp_path)
    with open(os.path.join(path, "data.mdb"), "r+b") as f:
        f.write(os.urandom(16384))
    _untrusted(tmp_path, match="cannot open")


def test_not_an_lmdb_file(tmp_path):
    path = os.path.join(tmp_path, "app", "counts-3")
    os.makedirs(path)
    with open(os.path.join(path, "data.mdb"), "wb") as f:
        f.write(b"this is not a database\n" * 1000)
    _untrusted(tmp_path)


def test_truncated_data_file(tmp_path):
    path = _filled(tmp_path)
    data = os.path.join(path, "data.mdb")
    with open(data, "r+b") as f:
        f.truncate(os.path.getsize(data) // 2)
    _untrusted(tmp_path, match="truncated")


def test_zeroed_pages_are_found_on_open(tmp_path):
    path = _filled(tmp_path)
    data = os.path.join(path, "data.mdb")
    size = os.path.getsize(data)
    with open(data, "r+b") as f:
        f.seek(2 * 4096)
        f.write(b"\0" * (size - 2 * 4096))
    _untrusted(tmp_path, match="Corrupted")


def test_a_damaged_page_is_found_by_a_read(tmp_path):
    path = _filled(tmp_path)
    data = os.path.join(path, "data.mdb")
    size = os.path.getsize(data)
    with open(data, "r+b") as f:
        f.seek(size // 3)
        f.write(b"\0" * (size // 3))
    store = _store(tmp_path)
    try:
        with pytest.raises(StoreCorrupt, match="'counts' partition 3.*cannot read"):
            for i in range(20_000):
                store.get(b"%08d" % i)
    finally:
        store.close()


def test_verify_finds_damage_before_lmdb_reads_it(tmp_path):
    # LMDB trusts its pages: a cursor walking a damaged one may abort the
    # process. verify=true walks the file in Python first.
    path = _filled(tmp_path)
    data = os.path.join(path, "data.mdb")
    size = os.path.getsize(data)
    with open(data, "r+b") as f:
        f.seek(size // 3)
        f.write(b"\0" * (size // 3))
    _untrusted(tmp_path, match="verif", verify=True)
    shutil.rmtree(path)
    _filled(tmp_path)
    store = _store(tmp_path, verify=True)  # an intact store passes
    assert len(store) == 20_000
    store.close()


def test_metadata_record_unreadable(tmp_path):
    path = _filled(tmp_path)
    _raw_meta(path, b"format", b"{not json")
    _untrusted(tmp_path, match="metadata record is not readable")


def test_metadata_record_of_another_program(tmp_path):
    path = _filled(tmp_path)
    _raw_meta(path, b"format", json.dumps({"format": "something else"}).encode())
    _untrusted(tmp_path, match="not a Sabot table store")


def test_data_without_metadata(tmp_path):
    path = os.path.join(tmp_path, "app", "counts-3")
    os.makedirs(path)
    env = lmdb.open(path)
    with env.begin(write=True) as txn:
        txn.put(b"someone", b"else's data")
    env.close()
    _untrusted(tmp_path, match="no metadata record")


def test_another_tables_store(tmp_path):
    other = _filled(tmp_path / "elsewhere")
    os.makedirs(tmp_path / "app")
    shutil.copytree(other, tmp_path / "app" / "counts-4")
    with pytest.raises(StoreCorrupt, match="belongs to table 'counts' partition 3"):
        _store(tmp_path, partition=4)


def test_unreadable_position(tmp_path):
    path = _filled(tmp_path)
    _raw_meta(path, b"changelog_offset", b"[1, 2")
    _untrusted(tmp_path, match="position is not readable")


def test_written_by_another_format_version(tmp_path):
    path = _filled(tmp_path)
    record = {"format": "sabot.tables.store", "version": FORMAT_VERSION + 1,
              "table": "counts", "partition": 3}
    _raw_meta(path, b"format", json.dumps(record).encode())
    error = _untrusted(tmp_path, cls=StoreVersionMismatch, match="version 2")
    assert error.found == FORMAT_VERSION + 1 and error.expected == FORMAT_VERSION


def test_untrusted_store_is_wiped_and_reopened(tmp_path):
    from sabot.tables.stores import wipe_store
    path = _filled(tmp_path)
    _raw_meta(path, b"format", b"garbage")
    with pytest.raises(StoreUntrusted):
        _store(tmp_path)
    wipe_store("lmdb://", table="counts", partition=3, app="app", datadir=tmp_path)
    store = _store(tmp_path)
    assert len(store) == 0 and store.changelog_offset() is None
    store.close()


# -- keys LMDB cannot hold ---------------------------------------------------------------

def test_a_key_too_long_refuses_the_whole_apply(tmp_path):
    store = _store(tmp_path)
    try:
        assert store.max_key_size == 511
        store.apply({b"ok": b"1"}, changelog_offset=1)
        with pytest.raises(StoreKeyRejected, match="'counts' partition 3.*512 bytes"):
            store.apply({b"fine": b"2", b"k" * 512: b"3"}, changelog_offset=2)
        with pytest.raises(StoreKeyRejected, match="0 bytes"):
            store.apply({b"": b"3"}, changelog_offset=2)
        assert store.get(b"fine") is None and store.changelog_offset() == 1
        assert store.get(b"k" * 512) is None and store.get(b"") is None
        assert store.max_key_size is not None
        store.apply({b"k" * 511: b"4"})
        assert store.get(b"k" * 511) == b"4"
    finally:
        store.close()


# -- the map grows; a full disk or a size limit refuses the write -----------------------------

def test_the_map_grows(tmp_path):
    store = _store(tmp_path, map_size=64 * 1024)
    try:
        for i in range(20):
            store.apply({b"%d-%d" % (i, j): b"x" * 200 for j in range(500)}, changelog_offset=i)
        assert store.map_size > 64 * 1024 and len(store) == 10_000
    finally:
        store.close()
    again = _store(tmp_path, map_size=64 * 1024)  # the file is larger than the map asked
    assert len(again) == 10_000 and again.changelog_offset() == 19
    again.close()


def test_max_map_size_reached(tmp_path):
    store = _store(tmp_path, map_size="64KiB", max_map_size="256KiB")
    last = None
    with pytest.raises(StoreFull, match="'counts' partition 3.*max_map_size of 262144") as info:
        for i in range(1000):
            store.apply({b"%d-%d" % (i, j): b"x" * 200 for j in range(100)}, changelog_offset=i,
                        source_positions={"src": i})
            last = i
    assert info.value.table == "counts" and info.value.partition == 3
    assert last is not None and last > 0
    assert store.changelog_offset() == last and store.source_positions() == {"src": last}
    assert len(store) == (last + 1) * 100 and store.get(b"%d-0" % (last + 1)) is None
    store.apply({b"small": b"1"}, changelog_offset=last + 1)  # what fits still goes in
    store.close()
    again = _store(tmp_path)
    check_count = sum(1 for _ in again.keys())
    assert again.changelog_offset() == last + 1 and check_count == (last + 1) * 100 + 1
    again.close()


_FULL_DISK_CHILD = textwrap.dedent("""
    import json, resource, signal, sys
    limit = int(sys.argv[2])
    if limit:
        # A write past the limit fails with EFBIG (SIGXFSZ ignored), as on a full disk.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    from sabot.exceptions import StoreError
    from sabot.tables.stores import open_store
    url = "lmdb://" + (sys.argv[3] if len(sys.argv) > 3 else "")
    store = open_store(url, table="clicks", partition=4, datadir=sys.argv[1])
    last = None
    try:
        for i in range(100_000):
            store.apply({b"k%d-%d" % (i, j): b"x" * 100 for j in range(100)},
                        changelog_offset=i, source_positions={"src": i})
            last = i
    except StoreError as exc:
        print(json.dumps({"type": type(exc).__name__, "message": str(exc), "last": last,
                          "table": exc.table, "partition": exc.partition}), flush=True)
    else:
        print(json.dumps({"type": None, "last": last}), flush=True)
    store.close(flush=False)
""")


def test_a_file_size_limit_fails_the_write_and_keeps_the_last_commit(tmp_path):
    result = subprocess.run([sys.executable, "-c", _FULL_DISK_CHILD, str(tmp_path), str(1 << 20)],
                            capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout.splitlines()[-1])
    check_full_disk_outcome(tmp_path, outcome)
    assert "short write" in outcome["message"] or outcome["type"] == "StoreFull"


@pytest.mark.parametrize("options", ["", "?writemap=true&map_size=256KiB"])
def test_a_full_disk(tmp_path, options):
    """A real full file system: a 2 MiB tmpfs in a private mount namespace.

    With writemap, the map's space is allocated before LMDB writes into it:
    the full disk is an error, not SIGBUS.
    """
    prefix = unshare_prefix()
    if prefix is None:
        pytest.skip("cannot mount a private tmpfs here (no unshare or no user namespaces)")
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    # The check runs inside the namespace (the tmpfs is gone once it exits).
    checker = textwrap.dedent("""
        import json, os, sys
        from tests.tables.store_faults import check_full_disk_outcome
        check_full_disk_outcome(sys.argv[1], json.loads(os.environ["OUTCOME"]), full=True)
        print("checked")
    """)
    script = (f"mount -t tmpfs -o size=2m tmpfs {mount_point} && "
              f"OUTCOME=$({sys.executable} -c \"$CHILD\" {mount_point} 0 '{options}') && "
              f"export OUTCOME && {sys.executable} -c \"$CHECKER\" {mount_point}")
    env = dict(os.environ, CHILD=_FULL_DISK_CHILD, CHECKER=checker)
    result = subprocess.run(prefix + ["sh", "-c", script], capture_output=True, text=True,
                            timeout=60, cwd=ROOT, env=env)
    if "mount:" in result.stderr and "Traceback" not in result.stderr:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "checked" in result.stdout


# -- reopening, size, kill -9 --------------------------------------------------------------------

def test_reopen_a_million_keys(tmp_path):
    store = _store(tmp_path)
    for start in range(0, 1_000_000, 100_000):
        store.apply({b"key%07d" % i: b"%d" % i for i in range(start, start + 100_000)},
                    changelog_offset=start + 99_999, source_positions={"src/3": start})
    store.close()
    again = _store(tmp_path)
    try:
        assert len(again) == 1_000_000
        assert again.changelog_offset() == 999_999 and again.source_positions() == {"src/3": 900_000}
        assert again.get_many([b"key0000000", b"key0999999", b"key1000000"]) == [
            b"0", b"999999", None]
    finally:
        again.close()


def test_unclean_stop_after_a_reboot_is_verified(tmp_path):
    # A store left open when the machine went down (another boot id in the
    # marker) is walked by the verifier on open: power loss is where LMDB
    # without sync may be damaged.
    path = _filled(tmp_path)
    marker = os.path.join(path, "sabot-open")
    with open(marker, "w") as f:
        f.write("another-boot-id")
    data = os.path.join(path, "data.mdb")
    size = os.path.getsize(data)
    with open(data, "r+b") as f:
        f.seek(size // 3)
        f.write(b"\0" * (size // 3))
    _untrusted(tmp_path, match="verif")


def test_clean_close_leaves_no_open_marker(tmp_path):
    store = _store(tmp_path)
    marker = os.path.join(store.path, "sabot-open")
    assert os.path.exists(marker)
    store.close()
    assert not os.path.exists(marker)


@pytest.mark.parametrize("options", ["", "?writemap=true", "?sync=true&metasync=false"])
def test_kill_9_mid_apply_leaves_data_matching_offsets(tmp_path, options):
    run_crash_rounds(f"lmdb://{tmp_path}/crash{options}", rounds=3)


def test_check_crash_store_detects_a_mismatch(tmp_path):
    # The crash check itself can fail: a store whose data lags its offset.
    url = f"lmdb://{tmp_path}/crash"
    subprocess.run([sys.executable, "-c", crash_loop_script(), url, "3"], cwd=ROOT, check=True,
                   timeout=60)
    store = open_store(url, table="crash", partition=0)
    store.apply({b"n": b"0"})
    store.close()
    with pytest.raises(AssertionError):
        check_crash_store(url)


def test_store_errors_are_store_errors():
    assert issubclass(StoreFull, StoreError) and issubclass(StoreFull, OSError)
    assert issubclass(StoreCorrupt, StoreUntrusted) and issubclass(StoreVersionMismatch,
                                                                   StoreUntrusted)
    assert not issubclass(StoreFull, StoreUntrusted)


def test_the_same_store_cannot_be_opened_twice_in_a_process(tmp_path):
    store = _store(tmp_path)
    try:
        with pytest.raises(StoreError, match="'counts' partition 3.*already open"):
            _store(tmp_path)
        store.apply({b"a": b"1"})
    finally:
        store.close()
    again = _store(tmp_path)  # once closed, it opens
    assert again.get(b"a") == b"1"
    again.close()


def test_a_synced_store_is_not_walked_after_a_reboot(tmp_path):
    # sync=true: LMDB's own guarantee holds through a power loss, so the
    # marker of another boot does not make the store pay for a walk (the
    # zeroed pages below would fail it), and verify=true still walks.
    path = _filled(tmp_path, sync=True)
    data = os.path.join(path, "data.mdb")
    size = os.path.getsize(data)
    with open(data, "r+b") as f:
        f.seek(size // 3)
        f.write(b"\0" * (size // 3))
    with open(os.path.join(path, "sabot-open"), "w") as f:
        f.write("another-boot-id")
    store = _store(tmp_path, sync=True)
    store.close()
    with open(os.path.join(path, "sabot-open"), "w") as f:
        f.write("another-boot-id")
    _untrusted(tmp_path, match="verif", sync=True, verify=True)


def test_without_the_verifier_a_store_to_verify_is_untrusted(tmp_path, monkeypatch):
    _filled(tmp_path)
    monkeypatch.setitem(sys.modules, "lmdb.verify", None)  # py-lmdb before 3.0
    monkeypatch.delattr(lmdb, "verify", raising=False)
    _untrusted(tmp_path, match="cannot be: py-lmdb older than 3.0", verify=True)
    store = _store(tmp_path)  # a clean reopen needs no verifier
    assert len(store) == 20_000
    store.close()
