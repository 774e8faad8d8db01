"""Fixtures of the table tests."""
import pytest


@pytest.fixture(autouse=True)
def _run_in_tmp_path(tmp_path, monkeypatch):
    """Run each table test in its own directory: durable stores default to ./<app id>-data."""
    monkeypatch.chdir(tmp_path)
