"""Faust's FastAPI and Django examples, ported under examples/ by changing
their imports and broker URL, run as their READMEs say: served by uvicorn in a
subprocess (or by ``sabot worker``) and asked over real HTTP, against a real
broker (memory, and Kafka on the tansu test broker).

examples/faust_fastapi/fastapi_example.py   Faust's examples/fastapi_example.py
examples/faust_fastapi/fastapi_project/     Faust's examples/fastapi_project/
examples/faust_django/                      Faust's examples/django/
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from tests.helpers import until_sync
from tests.servers import free_port
from tests.test_worker import read

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FASTAPI = os.path.join(ROOT, "examples", "faust_fastapi")
PROJECT = os.path.join(FASTAPI, "fastapi_project")
DJANGO = os.path.join(ROOT, "examples", "faust_django")


def http(port, path, *, data=None):
    """``(status, body)`` of a request (JSON parsed), or None while nothing listens."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data)
    try:
        with urllib.request.urlopen(request, timeout=60) as resp:
            body = resp.read().decode()
            if resp.headers.get_content_type() != "application/json":
                return resp.status, body
            return resp.status, json.loads(body)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except (urllib.error.URLError, ConnectionError):
        return None


class Served:
    """A subprocess serving HTTP on ``port``, its output in ``log``."""

    def __init__(self, args, cwd, env, tmp_path):
        self.port = free_port()
        self.log = tmp_path / "served.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [a.replace("{port}", str(self.port)) for a in args], cwd=cwd,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
                stdout=out, stderr=subprocess.STDOUT)

    def text(self):
        return read(self.log)

    def get(self, path, **kwargs):
        """Once it answers: the answer to ``path``."""
        def answered():
            assert self.proc.poll() is None, self.text()
            return http(self.port, path, **kwargs)
        return until_sync(answered, 90, lambda: f"no answer on {path}:\n{self.text()}",
                          interval=0.2)

    def wait_for_output(self, text, timeout=90):
        until_sync(lambda: text in self.text(), timeout,
                   lambda: f"{text!r} never printed:\n{self.text()}", interval=0.2)

    def stop(self):
        """SIGTERM, as uvicorn and ``sabot worker`` are stopped: a graceful exit
        (uvicorn >= 0.29 ends by re-raising the signal, after its shutdown)."""
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(60) in (0, -signal.SIGTERM), self.text()
        if self.proc.returncode:
            assert "Application shutdown complete" in self.text()

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def serve(tmp_path):
    started = []

    def start(args, cwd, env):
        served = Served(args, cwd, env, tmp_path / str(len(started)))
        started.append(served)
        return served
    for n in range(4):
        (tmp_path / str(n)).mkdir()
    yield start
    for served in started:
        served.kill()


def uvicorn(target):
    return [sys.executable, "-m", "uvicorn", target, "--port", "{port}", "--host", "127.0.0.1"]


def sabot_worker(module):
    return [sys.executable, "-m", "sabot", "-A", module, "worker", "-l", "info",
            "--web-port", "{port}"]


@pytest.fixture(params=["memory", "kafka"])
def broker(request):
    if request.param == "memory":
        return "memory://"
    return f"kafka://{request.getfixturevalue('kafka_broker')}"


def test_fastapi_example_under_uvicorn(serve, broker):
    api = serve(uvicorn("fastapi_example:api"), FASTAPI, {"SABOT_BROKER": broker})
    assert api.get("/") == (200, {"Hello": "World"})
    assert api.get("/items/5?q=somequery") == (200, {"item_id": 5, "q": "somequery"})
    assert api.get("/produce") == (200, {"success": True})
    # The agent, started by the FastAPI lifespan, printed every greeting sent.
    api.wait_for_output("hello 99\n")
    for i in range(100):
        assert f"hello {i}\n" in api.text()
    api.stop()
    assert "Application shutdown complete" in api.text()


def test_fastapi_example_as_a_sabot_worker(serve):
    # "The same file also works as a plain worker": its timer produces greetings.
    worker = serve(sabot_worker("fastapi_example"), FASTAPI, {"SABOT_BROKER": "memory://"})
    worker.wait_for_output("hello 99\n")
    worker.stop()


def test_fastapi_project_under_uvicorn(serve):
    api = serve(uvicorn("main:api"), PROJECT, {"SABOT_BROKER": "memory://"})
    assert api.get("/") == (200, {"Hello": "World"})
    assert api.get("/items/3") == (200, {"item_id": 3, "q": None})
    assert api.get("/produce") == (200, {"success": True})
    api.wait_for_output("greeting: ")
    # The agent (found by autodiscovery) stored a set per greeting in a GlobalTable.
    status, rows = api.get("/table")
    assert status == 200 and rows
    greeting = api.text().split("greeting: ", 1)[1].split()[0]
    assert {greeting: ["hello world"]} in api.get("/table")[1]
    api.stop()


def test_fastapi_project_served_by_the_worker(serve):
    # worker_main.py: `faust -A worker_main worker` serves the API itself.
    worker = serve(sabot_worker("worker_main"), PROJECT, {"SABOT_BROKER": "memory://"})
    assert worker.get("/") == (200, {"Hello": "World"})
    assert worker.get("/produce") == (200, {"success": True})
    worker.wait_for_output("greeting: ")
    status, rows = worker.get("/table")
    assert status == 200 and all(list(row.values()) == [["hello world"]] for row in rows)
    worker.stop()


@pytest.fixture
def django_project(tmp_path):
    """Faust's Django example, copied so its SQLite database is the test's own."""
    pytest.importorskip("django")
    project = tmp_path / "django"
    shutil.copytree(DJANGO, project, ignore=shutil.ignore_patterns("__pycache__", "db.sqlite3"))
    return project


def test_django_project_under_uvicorn(serve, django_project, broker):
    # On Kafka the agents' topics have no value_type: the AccountRecord is
    # rebuilt from its __faust namespace, as Faust's Model._maybe_reconstruct does.
    env = {"SABOT_BROKER": broker,
           # The agents use Django's ORM on the event loop, as Faust's example does;
           # Django (>= 3.0) refuses that unless told it is fine.
           "DJANGO_ALLOW_ASYNC_UNSAFE": "true"}
    subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=django_project,
                   env={**os.environ, **env}, check=True, timeout=300)
    site = serve(uvicorn("proj.asgi:application"), django_project, env)
    # Django serves its own pages; the Sabot app started with it (the lifespan
    # middleware), its agents found in INSTALLED_APPS by autodiscovery.
    assert site.get("/admin/login/")[0] == 200
    assert site.get("/accounts/add?name=ann&score=1.5") == (200, {"pk": 1})
    assert site.get("/accounts/add?name=bob&score=2") == (200, {"pk": 2})
    assert site.get("/accounts/1") == (200, {"name": "ann", "score": "1.5000000000",
                                             "active": True})
    assert site.get("/accounts/2/disable") == (200, {"active": False})
    assert site.get("/accounts/2")[1]["active"] is False
    assert site.get("/accounts/1")[1]["active"] is True
    site.stop()


def test_django_project_faust_worker(serve, django_project):
    # `proj-faust worker -l info`, the console script faustapp.app:main: the
    # agents of the Django apps are found by autodiscovery, Django set up first.
    main = "import sys; from faustapp.app import main; sys.argv[0] = 'proj-faust'; main()"
    worker = serve([sys.executable, "-c", main, "worker", "-l", "info",
                    "--web-port", "{port}"], django_project, {"SABOT_BROKER": "memory://"})
    assert worker.get("/health")[0] == 200
    banner = worker.text()
    assert "accounts.agents.add_account" in banner and "accounts.agents.disable_account" in banner
    worker.stop()
