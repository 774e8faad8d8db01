"""``serve_asgi``: ``sabot worker`` serves a FastAPI app instead of its pages (Faust's).

A real worker process runs an app module that calls ``serve_asgi``; the
FastAPI routes answer on the worker's port, send into the Sabot app on the
same loop, and see the lifespan's state; the lifespan runs after the app
started and ends before it stops. In-process, a bare ASGI app shows the
bridge streams bodies both ways and answers 500 for an app that raises.
"""
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request

import aiohttp
import pytest

import sabot
from sabot.contrib.asgi import serve_asgi
from sabot.exceptions import ConfigurationError, SabotCompatibilityWarning
from sabot.monitor import WorkerMonitor
from sabot.web import WebServer, WorkerMetrics
from sabot.worker import Worker
from tests.helpers import http_get, until_sync
from tests.servers import free_port
from tests.test_worker import read

pytest.importorskip("fastapi")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

APP = '''
import contextlib
import os

from fastapi import FastAPI

import sabot
from sabot.contrib.fastapi import serve_asgi   # Faust's older path, as its example uses

app = sabot.App("served-asgi")
greetings = app.channel(name="greetings")
seen = []


@app.agent(greetings, name="greeter")
async def greeter(stream):
    async for greeting in stream:
        seen.append(greeting)


@contextlib.asynccontextmanager
async def lifespan(api):
    print("lifespan start, agent running:", app.agents["greeter"].running, flush=True)
    yield {"model": "answer-42"}
    print("lifespan stop, agent running:", app.agents["greeter"].running, flush=True)


api = FastAPI(lifespan=lifespan)


@api.post("/greet/{name}")
async def greet(name: str):
    await greetings.send(value=f"hello {name}")
    return {"ok": True}


@api.get("/seen")
async def seen_so_far():
    return {"seen": seen}


@api.get("/model")
async def model(request: __import__("fastapi").Request):
    return {"model": request.state.model}


@app.page("/not-mounted")
async def not_mounted(self, request):
    return self.text("pages are not served with serve_asgi")


serve_asgi(app, api, port=int(os.environ["SERVE_ASGI_PORT"]))
'''


def call(port, method, path):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_sabot_worker_serves_the_fastapi_app_given_to_serve_asgi(tmp_path):
    (tmp_path / "served.py").write_text(APP)
    port = free_port()
    log_path = tmp_path / "worker.log"
    env = {**os.environ, "SERVE_ASGI_PORT": str(port),
           "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"}
    with open(log_path, "wb") as log:
        # No --web-port: serve_asgi's port is enough, as in Faust.
        proc = subprocess.Popen([sys.executable, "-m", "sabot", "-A", "served", "worker",
                                 "-l", "info"], cwd=tmp_path, env=env, stdout=log,
                                stderr=subprocess.STDOUT)
    try:
        def up():
            assert proc.poll() is None, read(log_path)
            return http_get(port, "/seen")
        until_sync(up, 30, lambda: read(log_path), interval=0.1)
        for name in ("ada", "grace"):
            assert call(port, "POST", f"/greet/{name}") == (200, {"ok": True})
        until_sync(lambda: call(port, "GET", "/seen")[1] == {"seen": ["hello ada", "hello grace"]},
                   10, lambda: read(log_path))
        assert call(port, "GET", "/model") == (200, {"model": "answer-42"})
        assert call(port, "GET", "/metrics")[0] == 404  # FastAPI's 404: Sabot's pages are off
        assert call(port, "GET", "/not-mounted")[0] == 404
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, read(log_path)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log = read(log_path)
    assert "lifespan start, agent running: True" in log, log
    assert "lifespan stop, agent running: True" in log, log  # the app stops after the server
    assert "serving <fastapi.applications.FastAPI object" in log and f":{port}" in log


def test_serve_asgi_arguments():
    app = sabot.App("serve-asgi-args")
    with pytest.warns(SabotCompatibilityWarning, match="uvicorn options.*workers"):
        serve_asgi(app, object(), workers=4)
    with pytest.raises(ConfigurationError, match="port"):
        serve_asgi(app, object(), port=70000)
    service = serve_asgi(app, object(), host="127.0.0.1", port=8123)
    worker = Worker(app)
    assert (worker.web_port, worker.web_bind) == (8123, "127.0.0.1")
    assert Worker(sabot.App("x", web_enabled=False)).web_port is None
    off = sabot.App("serve-asgi-off", web_enabled=False)
    serve_asgi(off, object(), port=8124)
    assert Worker(off).web_port is None  # web_enabled=False wins, as in Faust
    default = sabot.App("serve-asgi-default")
    serve_asgi(default, object())
    assert Worker(default).web_port == 6066 and Worker(default, web_port=9999).web_port == 9999
    assert service.port == 8123


async def test_the_bridge_streams_both_ways_and_answers_500_for_an_app_that_raises(caplog):
    async def raw_app(scope, receive, send):
        if scope["type"] == "lifespan":
            message = await receive()
            scope["state"]["greeting"] = "hi"
            await send({"type": "lifespan.startup.complete"})
            message = await receive()
            assert message["type"] == "lifespan.shutdown"
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["path"] == "/boom":
            raise RuntimeError("secret=xyz")
        total = b""
        while True:
            message = await receive()
            total += message.get("body", b"")
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain"), (b"x-path", scope["path"].encode())]})
        for part in (b"got ", str(len(total)).encode(), b" bytes, ", scope["state"]["greeting"].encode()):
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    app = sabot.App("bridge")
    server = WebServer(WorkerMetrics(WorkerMonitor(app)), 0, asgi_app=raw_app)
    await server.start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{base}/up%20load?x=1", data=b"y" * 300_000) as resp:
                assert resp.status == 200 and resp.headers["x-path"] == "/up load"
                assert await resp.text() == "got 300000 bytes, hi"
            async with session.get(f"{base}/boom") as resp:
                assert resp.status == 500
                assert await resp.json() == {"error": "Internal server error."}
            async with session.get(f"{base}/again") as resp:
                assert resp.status == 200
    finally:
        await server.stop()
    assert any("ASGI app failed on GET /boom: RuntimeError" in r.getMessage()
               for r in caplog.records)


def test_an_app_with_pages_is_served_on_faust_port_unless_told_otherwise():
    app = sabot.App("pages-default-port")

    @app.page("/x")
    async def x(self, request):
        return self.text("x")

    assert Worker(app).web_port == 6066  # Faust's web_enabled default serves its pages
    assert Worker(app, web_port=9000).web_port == 9000
    assert Worker(sabot.App("no-pages")).web_port is None  # nothing to serve: off, as before
    quiet = sabot.App("pages-off", web_enabled=False)
    quiet.page("/x")(x)
    assert Worker(quiet).web_port is None
