"""``sabot.contrib.asgi`` in a real FastAPI app (Starlette's TestClient drives it over ASGI).

The Sabot app starts and stops with the FastAPI app's lifespan; its pages
are mounted under ``/sabot`` and answer as on the worker's own server; a
FastAPI endpoint sends into a Sabot channel and the agents process it on
the same event loop.
"""
import contextlib
import os

import pytest

import sabot
from sabot import web
from sabot.contrib.asgi import CLIENT_MAX_SIZE, lifespan, pages
from tests.helpers import until_sync

fastapi = pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402 - after the importorskip


def make_api(app, **kwargs):
    api = fastapi.FastAPI(lifespan=lifespan(app, **kwargs))
    api.mount("/sabot", pages(app))
    return api


def word_app():
    app = sabot.App("asgi-words")
    words = app.channel(name="words")
    counts = app.Table("counts", default=int)

    @app.agent(words, name="counter")
    async def counter(stream):
        async for word in stream:
            counts[word] += 1

    @app.page("/count/{word}/")
    class Count(web.View):
        @app.table_route(table=counts, match_info="word")
        async def get(self, request, word):
            return self.json({"word": word, "count": counts[word],
                              "self": self.path_for("Count", word=word)})

        async def post(self, request, word):
            body = await request.json()
            return self.json({"echo": body, "q": request.query.get("q")}, status=201)

    @app.page("/boom")
    async def boom(self, request):
        raise RuntimeError("secret token abc123 leaked?")

    @app.page("/missing")
    async def missing(self, request):
        raise self.NotFound("no such thing")

    return app, words, counts


def test_the_sabot_app_runs_inside_fastapi_and_its_pages_are_mounted():
    app, words, counts = word_app()
    api = make_api(app)

    @api.post("/words/{word}")
    async def add_word(word: str):
        await words.send(value=word)
        return {"sent": word}

    assert not app.started
    with TestClient(api) as client:
        assert app.started
        for word in ["kafka", "arrow", "kafka"]:
            assert client.post(f"/words/{word}").json() == {"sent": word}
        until_sync(lambda: counts["kafka"] == 2, 10, "the agent counted inside FastAPI's loop")
        resp = client.get("/sabot/count/kafka/")
        assert resp.status_code == 200
        assert resp.json() == {"word": "kafka", "count": 2, "self": "/count/kafka/"}
        resp = client.post("/sabot/count/x/?q=1", json={"a": [1, 2]})
        assert (resp.status_code, resp.json()) == (201, {"echo": {"a": [1, 2]}, "q": "1"})
        assert client.delete("/sabot/count/x/").status_code == 405
        resp = client.get("/sabot/boom")
        assert (resp.status_code, resp.json()) == (500, {"error": "Internal server error."})
        assert "abc123" not in resp.text
        assert client.get("/sabot/missing").json() == {"error": "no such thing"}
        assert client.get("/sabot/nope").status_code == 404
        # The built-in pages, the same as the worker's.
        status = client.get("/sabot/status.json").json()
        assert [a["name"] for a in status["agents"]] == ["counter"]
        assert status["agents"][0]["events_in"] == 3
        health = client.get("/sabot/health").json()
        assert health["status"] == "ok" and health["agents"] == {"counter": True}
        assert health["worker"]["consumers"] == [] and health["worker"]["pid"] == os.getpid()
        assert 'sabot_agent_events_in_total{agent="counter"} 3.0' in client.get(
            "/sabot/metrics").text
        page = client.get("/sabot/", follow_redirects=False)
        assert page.status_code == 200 and "status.json" in page.text
        # The page's relative links need the trailing slash: /sabot redirects there.
        resp = client.get("/sabot", follow_redirects=False)
        assert resp.status_code in (307, 308) and resp.headers["location"].endswith("/sabot/")
    assert not app.agents["counter"].running  # stopped with the server


def test_a_body_over_the_limit_is_refused_unread():
    app, _, _ = word_app()
    with TestClient(make_api(app)) as client:
        resp = client.post("/sabot/count/x/", content=b"x" * (CLIENT_MAX_SIZE + 1))
        assert resp.status_code == 413


def test_another_lifespan_runs_inside_the_sabot_one():
    app, _, _ = word_app()
    events = []

    @contextlib.asynccontextmanager
    async def mine(asgi_app):
        events.append(("start", app.started))
        yield {"answer": 42}
        events.append(("stop", bool(app.should_stop)))

    api = make_api(app, then=mine)

    @api.get("/answer")
    async def answer(request: fastapi.Request):
        return {"answer": request.state.answer}

    with TestClient(api) as client:
        assert client.get("/answer").json() == {"answer": 42}
    assert events == [("start", True), ("stop", False)]  # inside: Sabot still ran


async def test_the_lifespan_middleware_starts_and_stops_the_app_around_any_asgi_app():
    from sabot.contrib.asgi import FaustLifespanMiddleware, LifespanMiddleware
    assert FaustLifespanMiddleware is LifespanMiddleware
    app, _, _ = word_app()
    calls = []

    async def plain(scope, receive, send):  # a framework without a lifespan hook
        calls.append(scope["type"])

    middleware = LifespanMiddleware(plain, app)
    inbox = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent = []

    async def receive():
        return inbox.pop(0)

    async def send(message):
        sent.append((message["type"], app.agents["counter"].running))

    await middleware({"type": "http"}, receive, send)
    assert calls == ["http"]
    await middleware({"type": "lifespan"}, receive, send)
    assert sent == [("lifespan.startup.complete", True), ("lifespan.shutdown.complete", False)]
    assert calls == ["http"]  # the lifespan scope is the middleware's own


async def test_the_middleware_reports_a_failed_start():
    from sabot.contrib.asgi import LifespanMiddleware
    app = sabot.App("asgi-bad", broker="kafka://127.0.0.1:1", broker_connect_timeout=0.5)
    app.agent(app.topic("t"), name="t")(_noop)
    sent = []

    async def receive():
        return {"type": "lifespan.startup"}

    async def send(message):
        sent.append(message)

    await LifespanMiddleware(lambda *a: None, app)({"type": "lifespan"}, receive, send)
    assert [m["type"] for m in sent] == ["lifespan.startup.failed"]
    assert "127.0.0.1:1" in sent[0]["message"]


async def _noop(stream):
    async for _ in stream:
        pass


async def test_app_running_leaves_an_app_it_did_not_start_running():
    from sabot.contrib.asgi import app_running, faust_app_running, faust_lifespan
    assert faust_app_running is app_running and faust_lifespan is lifespan
    app, words, counts = word_app()
    await app.start()
    try:
        async with app_running(app) as running:
            assert running is app
        assert app.agents["counter"].running  # not stopped: someone else started it
    finally:
        await app.stop()
    fresh, _, _ = word_app()
    async with app_running(fresh, stop_timeout=10.0):
        assert fresh.agents["counter"].running
    assert not fresh.agents["counter"].running


def test_faust_opentelemetry_option_warns():
    from sabot.exceptions import SabotCompatibilityWarning
    app, _, _ = word_app()
    with pytest.warns(SabotCompatibilityWarning, match="opentelemetry"):
        lifespan(app, opentelemetry=True)


def test_faust_older_fastapi_import_path_gives_the_same_names():
    import sabot.contrib.asgi as asgi
    import sabot.contrib.fastapi as old
    assert old.__all__ == asgi.__all__
    assert all(getattr(old, name) is getattr(asgi, name) for name in asgi.__all__)


async def test_hostile_requests_to_the_mounted_pages_get_clear_answers():
    """Driven over raw ASGI: a Host header that is no host, a path outside the mount."""
    app, _, _ = word_app()
    sabot_pages = pages(app)
    await app.start()
    try:
        async def get(path, host=b"[::1", root_path="/sabot"):
            sent = []

            async def receive():
                return {"type": "http.request", "body": b"", "more_body": False}

            async def send(message):
                sent.append(message)
            scope = {"type": "http", "method": "GET", "path": path, "root_path": root_path,
                     "query_string": b"x=%ZZ&y=\xff", "headers": [(b"host", host)],
                     "scheme": "http"}
            await sabot_pages(scope, receive, send)
            return sent[0]["status"], sent[1]["body"]

        status, body = await get("/sabot/count/word/")
        assert (status, body) == (200, b'{"word":"word","count":0,"self":"/count/word/"}')
        assert (await get("/elsewhere/health"))[0] == 404  # not under the mount: no page
        assert (await get("/sabot/health", host=b"x:99999"))[0] == 200
    finally:
        await app.stop()
