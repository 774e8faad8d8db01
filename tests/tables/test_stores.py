"""The store contract, held by every store (memory, LMDB, rocksdict).

Round trips, apply's all-or-nothing writes with the positions beside the
data, reopening (durable stores keep data and positions, memory starts
empty), reset and drop, and the errors that name the table and partition.
"""
from __future__ import annotations

import os

import pytest

from sabot.exceptions import ConfigurationError, StoreError
from sabot.tables.stores import MemoryStore, open_store, schemes, store_path, wipe_store

try:
    import rocksdict  # noqa: F401
    HAVE_ROCKSDICT = True
except ImportError:
    HAVE_ROCKSDICT = False

URLS = ["memory://", "lmdb://", "rocksdb://"]


@pytest.fixture(params=URLS)
def url(request):
    if request.param == "rocksdb://" and not HAVE_ROCKSDICT:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("rocksdict is in the test extra: it must be installed in CI")
        pytest.skip("rocksdict not installed")
    return request.param


@pytest.fixture
def opener(url, tmp_path):
    opened = []

    def open_(table="counts", partition=0, **options):
        store = open_store(url, table=table, partition=partition, app="app",
                           datadir=tmp_path, **options)
        opened.append(store)
        return store

    yield open_
    for store in opened:
        store.close()


def test_round_trip(opener):
    store = opener()
    assert len(store) == 0 and store.get(b"a") is None
    assert store.changelog_offset() is None and store.source_positions() == {}
    store.apply({b"a": b"1", b"b": b"2", b"c": b"3"}, changelog_offset=0,
                source_positions={"orders/0": 41})
    assert store.get(b"a") == b"1"
    assert store.get_many([b"c", b"zz", b"a"]) == [b"3", None, b"1"]
    assert store.get_many(k for k in (b"a", b"", b"x" * 600, b"b")) == [b"1", None, None, b"2"]
    assert b"b" in store and b"zz" not in store and "b" not in store
    assert len(store) == 3
    assert sorted(store.items()) == [(b"a", b"1"), (b"b", b"2"), (b"c", b"3")]
    assert sorted(store.keys()) == sorted(store) == [b"a", b"b", b"c"]
    assert sorted(store.values()) == [b"1", b"2", b"3"]
    assert store.changelog_offset() == 0
    assert store.source_positions() == {"orders/0": 41}


def test_apply_deletes_and_last_pair_wins(opener):
    store = opener()
    store.apply({b"a": b"1", b"b": b"2"})
    store.apply([(b"a", None), (b"b", b"x"), (b"b", None), (b"c", None), (b"c", b"3"),
                 (b"missing", None)])
    assert sorted(store.items()) == [(b"c", b"3")]


def test_positions_keep_their_type_and_update_per_source(opener):
    store = opener()
    store.apply({b"k": b"v"}, changelog_offset="1700000000000-3",
                source_positions={"events": "1700000000000-7", "orders/2": 9})
    store.apply({}, source_positions={"orders/2": 10})
    assert store.changelog_offset() == "1700000000000-3"  # None leaves it as it was
    assert store.source_positions() == {"events": "1700000000000-7", "orders/2": 10}
    store.apply({}, changelog_offset=12, source_positions={"events": None})
    assert store.changelog_offset() == 12
    assert store.source_positions() == {"orders/2": 10}


def test_bad_positions_refuse_the_apply(opener):
    store = opener()
    with pytest.raises(TypeError, match="changelog_offset"):
        store.apply({b"a": b"1"}, changelog_offset=1.5)
    with pytest.raises(TypeError, match="source position 'orders'"):
        store.apply({b"a": b"1"}, changelog_offset=1, source_positions={"orders": [1]})
    with pytest.raises(TypeError):
        store.apply({b"a": b"1"}, changelog_offset=True)
    assert store.get(b"a") is None and store.changelog_offset() is None


def test_values_that_are_not_bytes_refuse_the_whole_apply(opener):
    store = opener()
    store.apply({b"a": b"1"}, changelog_offset=1)
    with pytest.raises(TypeError):
        store.apply({b"b": b"2", b"c": "not bytes"}, changelog_offset=2)  # type: ignore
    assert store.get(b"b") is None and store.get(b"c") is None
    assert store.changelog_offset() == 1


def test_reopen_keeps_data_and_positions(opener, url):
    store = opener()
    store.apply({b"k%d" % i: b"v%d" % i for i in range(1000)}, changelog_offset=999,
                source_positions={"orders/0": 1234})
    store.apply({b"k0": None}, changelog_offset=1000)
    store.close()
    assert store.closed
    again = opener()
    if not again.persistent:
        assert len(again) == 0 and again.changelog_offset() is None
        return
    assert len(again) == 999 and again.get(b"k0") is None and again.get(b"k5") == b"v5"
    assert again.changelog_offset() == 1000
    assert again.source_positions() == {"orders/0": 1234}


def test_iteration_is_ordered_and_complete_across_chunks(opener):
    store = opener()
    keys = [b"%06d" % i for i in range(10_000)]
    store.apply([(k, k) for k in reversed(keys)])
    listed = list(store.keys())
    assert len(listed) == len(keys) and set(listed) == set(keys)
    if store.persistent:
        assert listed == keys  # durable stores iterate in key order
    assert dict(store.items()) == {k: k for k in keys}


def test_iterating_while_applying(opener):
    store = opener()
    store.apply([(b"%06d" % i, b"x") for i in range(10_000)])
    seen = []
    for i, key in enumerate(store.keys()):
        seen.append(key)
        if i % 1000 == 0:
            store.apply({b"%06d" % i: b"y"})
    assert len(seen) == 10_000 and len(set(seen)) == 10_000


def test_reset_wipes_data_and_positions(opener):
    store = opener()
    store.apply({b"a": b"1"}, changelog_offset=3, source_positions={"s": 1})
    store.reset()
    assert len(store) == 0 and list(store.items()) == []
    assert store.changelog_offset() is None and store.source_positions() == {}
    store.apply({b"b": b"2"}, changelog_offset=0)
    store.close()
    again = opener()
    if again.persistent:
        assert list(again.items()) == [(b"b", b"2")] and again.changelog_offset() == 0


def test_drop_deletes_the_files(opener):
    store = opener()
    store.apply({b"a": b"1"}, changelog_offset=3)
    store.drop()
    assert store.closed
    if store.path is not None:
        assert not os.path.exists(store.path)
    again = opener()
    assert len(again) == 0 and again.changelog_offset() is None


def test_a_closed_store_says_so(opener):
    store = opener(table="orders", partition=7)
    store.close()
    store.close()  # twice is harmless
    for call in (lambda: store.get_many([b"a"]), lambda: store.apply({b"a": b"1"}),
                 lambda: len(store), store.changelog_offset, lambda: list(store.items())):
        with pytest.raises(StoreError, match="'orders' partition 7.*closed") as info:
            call()
        assert info.value.table == "orders" and info.value.partition == 7


def test_partitions_and_tables_are_separate_stores(opener):
    first, second, other = opener(partition=0), opener(partition=1), opener(table="other")
    first.apply({b"k": b"0"}, changelog_offset=5)
    second.apply({b"k": b"1"})
    assert other.get(b"k") is None and second.get(b"k") == b"1"
    assert second.changelog_offset() is None
    if first.path is not None:
        assert len({first.path, second.path, other.path}) == 3


def test_flush(opener):
    store = opener()
    store.apply({b"a": b"1"}, changelog_offset=1)
    store.flush()
    assert store.get(b"a") == b"1"


# -- URLs, paths and options ------------------------------------------------------------

def test_store_paths(tmp_path):
    assert store_path("memory://", table="t", partition=0) is None
    assert store_path("lmdb://", table="t", partition=2, app="shop",
                      datadir=tmp_path) == str(tmp_path / "shop" / "t-2")
    assert store_path("lmdb://", table="t", partition=2, app="shop") == "shop-data/shop/t-2"
    assert store_path("lmdb:///var/lib/x", table="t", partition=1) == "/var/lib/x/t-1"
    assert store_path("lmdb://state/tables?sync=true", table="t",
                      partition=1) == "state/tables/t-1"
    assert store_path("rocksdb://", table="t", partition=0, app="a",
                      datadir="/d") == "/d/a/t-0"


def test_a_url_path_and_options(tmp_path):
    url = f"lmdb://{tmp_path}/here?map_size=1MiB&sync=true&metasync=yes"
    store = open_store(url, table="t", partition=0)
    try:
        assert store.path == str(tmp_path / "here" / "t-0")
        store.apply({b"a": b"1"})
    finally:
        store.close()
    assert os.path.exists(tmp_path / "here" / "t-0" / "data.mdb")


def test_bad_urls_and_options(tmp_path):
    with pytest.raises(ConfigurationError, match="unknown store 'aerospike://'.*lmdb://"):
        open_store("aerospike://", table="t", partition=0)
    with pytest.raises(ConfigurationError, match="no scheme"):
        open_store("/tmp/x", table="t", partition=0)
    with pytest.raises(ConfigurationError, match="no option 'bogus'.*map_size"):
        open_store("lmdb://?bogus=1", table="t", partition=0, datadir=tmp_path)
    with pytest.raises(ConfigurationError, match="sync='maybe'"):
        open_store("lmdb://", table="t", partition=0, datadir=tmp_path, sync="maybe")
    with pytest.raises(ConfigurationError, match="map_size='lots'"):
        open_store("lmdb://?map_size=lots", table="t", partition=0, datadir=tmp_path)
    with pytest.raises(ConfigurationError, match="memory:// stores have no option 'x'"):
        open_store("memory://?x=1", table="t", partition=0)
    with pytest.raises(ConfigurationError, match="partition"):
        open_store("memory://", table="t", partition=-1)
    assert {"memory", "lmdb", "rocksdb"} <= set(schemes())


def test_wipe_store(tmp_path):
    store = open_store("lmdb://", table="t", partition=0, datadir=tmp_path)
    store.apply({b"a": b"1"}, changelog_offset=1)
    store.close()
    wipe_store("lmdb://", table="t", partition=0, datadir=tmp_path)
    assert not os.path.exists(store.path)
    wipe_store("memory://", table="t", partition=0)  # nothing to do
    again = open_store("lmdb://", table="t", partition=0, datadir=tmp_path)
    assert len(again) == 0 and again.changelog_offset() is None
    again.close()


class _TaggedStore(MemoryStore):
    """A store class registered from outside the package."""

    options = {"tag": str}

    def __init__(self, *, url: str, table: str, partition: int, tag: str = "") -> None:
        super().__init__(url=url, table=table, partition=partition)
        self.tag = tag


def test_register_a_store_and_faust_aliases(monkeypatch, tmp_path):
    import sabot.tables.stores as stores
    monkeypatch.setattr(stores, "_REGISTRY", dict(stores._REGISTRY))
    monkeypatch.setattr(stores, "_IN_MEMORY", set(stores._IN_MEMORY))
    stores.register_store("tagged", f"{__name__}:_TaggedStore", on_disk=False)
    store = open_store("tagged://?tag=blue", table="t", partition=1)
    assert isinstance(store, _TaggedStore) and store.tag == "blue" and store.path is None
    with pytest.raises(ConfigurationError, match="module:Class"):
        stores.register_store("bad", "no-colon")
    if HAVE_ROCKSDICT:
        aliased = open_store("rocksdict://", table="t", partition=0, datadir=tmp_path)
        assert aliased.path == str(tmp_path / "sabot" / "t-0")
        aliased.close()
