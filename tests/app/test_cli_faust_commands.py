"""Faust's ``tables``, ``models``, ``model NAME`` and ``reset`` beside ``worker``."""
import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

APP = textwrap.dedent('''
    import sabot

    class Order(sabot.Record, namespace="shop.Order"):
        """An order placed in the shop."""
        id: str
        amount: float = 0.0

    app = sabot.App("cli-faust", broker="memory://", store="lmdb://", datadir=DATADIR)
    counts = app.Table("counts", default=int, help="Orders per customer.")
    totals = app.Table("totals", default=float)

    @app.agent(value_type=Order)
    async def count(orders):
        async for order in orders:
            counts[order.id] += 1
''')


@pytest.fixture
def app_dir(tmp_path):
    (tmp_path / "cliapp.py").write_text(APP.replace("DATADIR", repr(str(tmp_path / "data"))))
    return tmp_path


def run(cwd, *args):
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-m", "sabot", "-A", "cliapp:app", *args], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=60)


def test_tables_lists_names_and_help(app_dir):
    done = run(app_dir, "tables")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "Tables" and lines[1].split() == ["NAME", "HELP"]
    assert any(line.startswith("counts") and "Orders per customer." in line for line in lines)
    assert any(line.startswith("totals") and "Missing description" in line for line in lines)


def test_models_and_model_show_the_records(app_dir):
    done = run(app_dir, "models")
    assert done.returncode == 0, done.stderr
    assert "shop.Order" in done.stdout and "An order placed in the shop." in done.stdout
    done = run(app_dir, "model", "shop.Order")
    assert done.returncode == 0, done.stderr
    rows = [line.split() for line in done.stdout.splitlines()[2:]]
    assert rows == [["id", "str", "*"], ["amount", "float", "0.0"]]
    done = run(app_dir, "model", "Order")  # the short name works too
    assert done.returncode == 0 and "amount" in done.stdout
    done = run(app_dir, "model", "shop.Ordr")
    assert done.returncode == 2 and "No model 'shop.Ordr'. Did you mean 'shop.Order'?" in done.stderr


def test_reset_removes_the_local_stores(app_dir):
    # Make the stores exist by opening them as a worker would.
    sys.path.insert(0, str(app_dir))
    try:
        from sabot.tables.stores import open_store, store_path
        url = "lmdb://"
        path = store_path(url, table="counts", partition=0, app="cli-faust",
                          datadir=str(app_dir / "data"))
        store = open_store(url, table="counts", partition=0, app="cli-faust",
                           datadir=str(app_dir / "data"))
        store.apply({b"k": b"1"}, changelog_offset=0, source_positions={})
        store.close()
    finally:
        sys.path.remove(str(app_dir))
    assert os.path.exists(path)
    done = run(app_dir, "reset")
    assert done.returncode == 0, done.stderr
    assert "Removing database for table counts..." in done.stdout
    assert not os.path.exists(path)
