"""Lint and type checks as ordinary tests (as asyncpg does): undefined names,
unused imports and syntax errors in the package, benchmarks and examples fail
the suite, and so does a class that drifts from its interface in sabot/types.py."""
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_pyflakes_rules_pass():
    ruff = shutil.which("ruff") or os.path.join(os.path.dirname(sys.executable), "ruff")
    if not os.path.exists(ruff):
        pytest.fail("ruff is not installed; it is in the test extra")
    proc = subprocess.run([ruff, "check", "--select", "E9,F,W6", "--output-format", "concise",
                           "sabot", "benchmarks", "examples"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_passes():
    """mypy over the package and tests/typing (pyproject.toml's [tool.mypy]): the
    layers are annotated against sabot/types.py, and tests/typing/conformance.py
    assigns each class to its Protocol, so drifting from one fails here."""
    mypy = os.path.join(os.path.dirname(sys.executable), "mypy")
    if not os.path.exists(mypy):
        mypy = shutil.which("mypy") or mypy
    if not os.path.exists(mypy):
        pytest.fail("mypy is not installed; it is in the test extra")
    proc = subprocess.run([mypy], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_no_pickle_on_the_data_path():
    """No module of the package imports pickle: data crosses as Arrow IPC or JSON."""
    offenders = []
    for folder, _, files in os.walk(os.path.join(ROOT, "sabot")):
        for name in files:
            if name.endswith((".py", ".pyx")):
                path = os.path.join(folder, name)
                with open(path, encoding="utf-8") as f:
                    for line in f:
                        stripped = line.strip()
                        if stripped.startswith(("import pickle", "from pickle", "import cPickle",
                                                "import dill", "import cloudpickle")):
                            offenders.append(os.path.relpath(path, ROOT))
    assert offenders == []
