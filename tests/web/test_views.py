"""Web views on the worker's aiohttp server: pages, class views, blueprints, errors, routes.

Each test starts the app and the real ``WebServer`` on a free port of this
process's loop and talks HTTP to it with aiohttp's client, as a browser or
``curl`` would.
"""
import contextlib
import logging
import warnings

import aiohttp
import pytest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

import sabot
from sabot import web
from sabot.exceptions import ConfigurationError, SabotCompatibilityWarning, SabotError
from sabot.models import Record
from sabot.monitor import WorkerMonitor
from sabot.web import WebServer, WorkerMetrics
from tests.helpers import until


@contextlib.asynccontextmanager
async def serving(app):
    """``app`` running with its web server; yields an aiohttp session and the base URL."""
    server = WebServer(WorkerMetrics(WorkerMonitor(app)), 0, host="127.0.0.1")
    await app.start()
    await server.start()
    try:
        async with aiohttp.ClientSession() as session:
            yield session, f"http://127.0.0.1:{server.port}"
    finally:
        await server.stop()
        await app.stop()


async def fetch(session, method, url, **kwargs):
    async with session.request(method, url, **kwargs) as resp:
        return resp.status, resp.headers.get("Content-Type", ""), await resp.text()


# -- pages ---------------------------------------------------------------------------

async def test_a_function_page_gets_the_route_placeholders_and_answers_json():
    app = sabot.App("web-pages")

    @app.page("/hello/{name}")
    async def hello(self, request, name):
        return self.json({"hello": name, "shout": request.query.get("shout") == "1"})

    assert issubclass(hello, web.View) and hello.view_name == "hello"
    async with serving(app) as (session, base):
        status, ctype, body = await fetch(session, "GET", f"{base}/hello/ada?shout=1")
        assert status == 200 and ctype.startswith("application/json")
        assert body == '{"hello":"ada","shout":true}'
        # HEAD answers like GET without a body; a method the view lacks is 405.
        async with session.head(f"{base}/hello/ada") as resp:
            assert resp.status == 200 and await resp.read() == b""
        assert (await fetch(session, "POST", f"{base}/hello/ada"))[0] == 405


async def test_a_class_view_answers_each_method_it_defines():
    app = sabot.App("web-class-view")
    store = {}

    @app.page("/items/{key}/", name="item")
    class Items(web.View):
        async def get(self, request, key):
            if key not in store:
                raise self.NotFound(f"no item {key!r}", key=key)
            return self.json({"key": key, "value": store[key]})

        async def put(self, request, key):
            store[key] = (await request.json())["value"]
            return self.json({"stored": key}, status=201)

        async def patch(self, request, key):
            store[key] += (await request.json())["value"]
            return self.text(f"{key}={store[key]}")

        async def post(self, request, key):
            return self.html(f"<b>{self.path_for('item', key=key)}</b>")

        async def delete(self, request, key):
            if store.pop(key, None) is None:
                return self.notfound()
            return self.error(410, "gone", key=key)

    assert Items.get_methods() == {"HEAD", "GET", "PUT", "PATCH", "POST", "DELETE"}
    async with serving(app) as (session, base):
        url = f"{base}/items/a%20b/"
        status, _, body = await fetch(session, "GET", url)
        assert (status, body) == (404, '{"error":"no item \'a b\'","key":"a b"}')
        assert (await fetch(session, "PUT", url, json={"value": 2}))[:1] == (201,)
        assert await fetch(session, "GET", url) == (200, "application/json; charset=utf-8",
                                                    '{"key":"a b","value":2}')
        status, ctype, body = await fetch(session, "PATCH", url, json={"value": 3})
        assert (status, body) == (200, "a b=5") and ctype.startswith("text/plain")
        status, ctype, body = await fetch(session, "POST", url)
        assert (status, body) == (200, "<b>/items/a%20b/</b>") and ctype.startswith("text/html")
        assert await fetch(session, "DELETE", url) == (
            410, "application/json; charset=utf-8", '{"error":"gone","key":"a b"}')
        status, _, body = await fetch(session, "DELETE", url)
        assert (status, body) == (404, '{"error":"Not Found"}')
        assert (await fetch(session, "OPTIONS", url))[0] == 405


async def test_json_writes_records_dates_and_decimals_as_faust_does():
    import datetime
    import decimal

    class Point(Record, namespace="web.Point"):
        x: int
        when: datetime.datetime

    app = sabot.App("web-json")

    @app.page("/point")
    async def point(self, request):
        return self.json({"p": Point(x=1, when=datetime.datetime(2024, 1, 2, 3, 4, 5,
                                                                tzinfo=datetime.timezone.utc)),
                          "amount": decimal.Decimal("1.50")})

    async with serving(app) as (session, base):
        _, _, body = await fetch(session, "GET", f"{base}/point")
    assert body == ('{"p":{"x":1,"when":"2024-01-02T03:04:05Z","__faust":{"ns":"web.Point"}},'
                    '"amount":"1.50"}')


@pytest.mark.parametrize("error, code", [
    (web.exceptions.NotFound, 404), (web.exceptions.ValidationError, 400),
    (web.exceptions.PermissionDenied, 403), (web.exceptions.NotAuthenticated, 401),
    (web.exceptions.MethodNotAllowed, 405), (web.exceptions.Throttled, 429),
    (web.exceptions.ServiceUnavailable, 503), (web.exceptions.ServerError, 500),
])
async def test_a_raised_web_error_answers_its_code_and_detail(error, code):
    app = sabot.App("web-errors")

    @app.page("/fail")
    async def fail(self, request):
        raise error()

    async with serving(app) as (session, base):
        status, ctype, body = await fetch(session, "GET", f"{base}/fail")
    assert status == code and ctype.startswith("application/json")
    assert body == '{"error":"%s"}' % error.detail
    assert issubclass(error, SabotError)


async def test_a_view_that_raises_answers_500_without_details_and_the_server_goes_on(caplog):
    app = sabot.App("web-crash")
    calls = []

    @app.page("/boom")
    async def boom(self, request):
        calls.append(1)
        password = "hunter2-secret"  # noqa: F841 - what a traceback would show
        raise RuntimeError("db password hunter2-secret rejected")

    @app.page("/not-a-response")
    async def wrong(self, request):
        return {"forgot": "self.json"}

    @app.page("/ok")
    async def ok(self, request):
        return self.text("still here")

    with caplog.at_level(logging.ERROR, logger="sabot.web"):
        async with serving(app) as (session, base):
            for _ in range(3):
                status, ctype, body = await fetch(session, "GET", f"{base}/boom")
                assert status == 500 and ctype.startswith("application/json")
                assert body == '{"error":"Internal server error."}'
            status, _, body = await fetch(session, "GET", f"{base}/not-a-response")
            assert (status, body) == (500, '{"error":"Internal server error."}')
            assert await fetch(session, "GET", f"{base}/ok") == (
                200, "text/plain; charset=utf-8", "still here")
            assert (await fetch(session, "GET", f"{base}/health"))[0] == 200
    assert len(calls) == 3
    failures = [r for r in caplog.records if "view boom failed on GET /boom" in r.getMessage()]
    assert len(failures) == 3 and failures[0].exc_info is not None  # logged with its traceback
    assert any("view wrong returned dict" in r.getMessage() for r in caplog.records)


def test_page_arguments_are_checked_at_once():
    app = sabot.App("web-bad-pages")
    with pytest.raises(ConfigurationError, match="must be a string starting with '/'"):
        app.page("no-slash")(lambda self, request: None)
    with pytest.raises(ConfigurationError, match="must be an async function"):
        app.page("/sync")(lambda self, request: None)
    with pytest.raises(TypeError, match="subclass of View"):
        app.page("/cls")(int)

    @app.page("/twice")
    async def first(self, request):
        return self.text("1")
    with pytest.raises(ConfigurationError, match="'/twice' is defined twice"):
        @app.page("/twice")
        async def second(self, request):
            return self.text("2")
    with pytest.warns(SabotCompatibilityWarning, match="cors_options"):
        app.page("/cors", cors_options={"*": object()})(first)


async def test_a_page_at_a_builtin_path_takes_its_place():
    app = sabot.App("web-own-index")

    @app.page("/")
    async def index(self, request):
        return self.text("my index")

    async with serving(app) as (session, base):
        assert (await fetch(session, "GET", f"{base}/"))[2] == "my index"
        assert (await fetch(session, "GET", f"{base}/status.json"))[0] == 200
        assert (await fetch(session, "GET", f"{base}/nope"))[0] == 404


# -- blueprints ------------------------------------------------------------------------

async def test_a_blueprint_registers_its_routes_under_a_prefix(tmp_path):
    users = web.Blueprint("users")

    @users.route("/", name="list")
    class UserList(web.View):
        async def get(self, request):
            return self.json({"users": ["ada"], "detail": self.path_for("users:detail",
                                                                         user_id="ada")})

    @users.route("/{user_id}/", name="detail")
    async def detail(self, request, user_id):
        return self.json({"user": user_id})

    (tmp_path / "hello.txt").write_text("static hello")
    users.static("/files", tmp_path)
    app = sabot.App("web-blueprint")
    users.register(app, url_prefix="/user/")
    assert [r.name for r in app.web_routes] == ["users:list", "users:detail", "users.static"]
    async with serving(app) as (session, base):
        assert (await fetch(session, "GET", f"{base}/user/"))[2] == (
            '{"users":["ada"],"detail":"/user/ada/"}')
        assert (await fetch(session, "GET", f"{base}/user/42/"))[2] == '{"user":"42"}'
        assert (await fetch(session, "GET", f"{base}/user/files/hello.txt"))[2] == "static hello"
        assert (await fetch(session, "GET", f"{base}/user/files/..%2F..%2Fetc%2Fpasswd"))[0] == 404
    other = sabot.App("web-blueprint-2")
    users.register(other, url_prefix="/people")  # one blueprint, several apps
    assert other.web_routes[1].path == "/people/{user_id}/"


def test_blueprint_cache_is_a_warning_not_a_silent_no_op():
    bp = web.Blueprint("cached")
    with pytest.warns(SabotCompatibilityWarning, match="cache"):
        cache = bp.cache(timeout=10.0)

    async def get(self, request):
        return None
    assert cache.view(timeout=1.0)(get) is get


def test_sabot_web_has_faust_web_names():
    faust_web = pytest.importorskip("faust.web")
    import faust.web.exceptions as faust_errors
    for name in faust_web.__all__:
        assert hasattr(web, name), name
    assert web.ResourceOptions._fields == faust_web.ResourceOptions._fields
    # Faust's bare WebError has no code (raising it fails there); Sabot's answers 500.
    assert web.exceptions.WebError().code == 500
    for name in [n for n in faust_errors.__all__ if n != "WebError"] + ["ServiceUnavailable"]:
        ours, theirs = getattr(web.exceptions, name), getattr(faust_errors, name)
        assert ours.code == theirs.code and ours.detail == theirs.detail, name


# -- table_route and topic_route -------------------------------------------------------------

async def test_table_route_runs_the_view_here_on_a_single_worker():
    app = sabot.App("web-table-route")
    counts = app.Table("counts", default=int)
    words = app.channel(name="words")

    @app.agent(words)
    async def count(stream):
        async for word in stream:
            counts[word] += 1

    @app.page("/count/")
    class Count(web.View):
        @app.table_route(table=counts, query_param="word")
        async def get(self, request):
            return self.json({request.query["word"]: counts[request.query["word"]]})

    @app.page("/count/{word}/fixed")
    class Fixed(web.View):
        @app.table_route(table=counts, match_info="word")
        async def get(self, request, word):
            return self.json({word: counts[word]})

    async with serving(app) as (session, base):
        for word in ["a", "b", "a"]:
            await words.send(value=word)
        await until(lambda: counts["a"] == 2, 10)
        assert (await fetch(session, "GET", f"{base}/count/?word=a"))[2] == '{"a":2}'
        assert (await fetch(session, "GET", f"{base}/count/b/fixed"))[2] == '{"b":1}'
        status, _, body = await fetch(session, "GET", f"{base}/count/")
        assert status == 400 and "missing query parameter 'word'" in body


async def test_topic_route_and_its_faust_spellings():
    app = sabot.App("web-topic-route")
    orders = app.topic("orders")

    with pytest.warns(DeprecationWarning, match="shard_param"):
        routed = app.topic_route(topic=orders, shard_param="id")
    with pytest.raises(TypeError, match="Need one of"):
        app.topic_route(topic=orders)
    with pytest.raises(TypeError, match="Cannot specify shard_param and query_param"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            app.topic_route(topic=orders, shard_param="a", query_param="b")

    @app.page("/orders/")
    class Orders(web.View):
        @routed
        async def get(self, request):
            return self.json({"order": request.query["id"]})

    @app.page("/orders/latest")
    class Latest(web.View):
        @app.topic_route(topic=orders, exact_key="latest")
        async def get(self, request):
            return self.text("latest here")

    async with serving(app) as (session, base):
        assert (await fetch(session, "GET", f"{base}/orders/?id=7"))[2] == '{"order":"7"}'
        assert (await fetch(session, "GET", f"{base}/orders/latest"))[2] == "latest here"


# -- built-in pages ------------------------------------------------------------------------

async def test_status_json_reports_agents_rates_dead_letters_tables_and_the_pipeline():
    app = sabot.App("web-status")
    source = app.channel(name="numbers")
    out = app.channel(name="doubled")
    totals = app.Table("totals", default=int)

    @app.agent(source, sink=[out], name="double")
    async def double(stream):
        async for n in stream:
            if n < 0:
                raise ValueError("negative")
            totals["sum"] += n
            yield n * 2

    @app.agent(out, name="drain")
    async def drain(stream):
        async for _ in stream:
            pass

    async with serving(app) as (session, base):
        status, _, body = await fetch(session, "GET", f"{base}/status.json")
        assert status == 200
        for n in range(1, 51):
            await source.send(value=n)
        await source.send(value=-1)
        await until(lambda: app.agents["drain"].events_in == 50, 10)
        async with session.get(f"{base}/status.json") as resp:
            first = await resp.json()
        agents = {a["name"]: a for a in first["agents"]}
        assert agents["double"]["events_in"] == 51 and agents["double"]["errors"] == 1
        assert agents["double"]["channel"] == "numbers" and agents["double"]["sinks"] == ["doubled"]
        assert agents["drain"]["events_in"] == 50
        assert first["dead_letters"] == [{"channel": "numbers", "count": 1, "truncated": 0}]
        table = next(t for t in first["tables"] if t["name"] == "totals")
        assert table["kind"] == "Table" and table["partitions"] == [0] and table["recovering"] == []
        if hasattr(app.tables["totals"], "recovery_stats"):  # tables that keep recovery figures
            assert table["recovery"]["0"]["changes"] == 0
        edges = first["pipeline"]["edges"]
        assert ["channel:numbers", "agent:double"] in edges
        # The channel double writes and drain reads is one node: left to right.
        assert ["agent:double", "channel:doubled"] in edges
        assert ["channel:doubled", "agent:drain"] in edges
        levels = {n["id"]: n["level"] for n in first["pipeline"]["nodes"]}
        assert [levels[k] for k in ("channel:numbers", "agent:double", "channel:doubled",
                                    "agent:drain")] == [0, 1, 2, 3]
        assert "<svg" in first["svg"] and ">double<" in first["svg"]
        assert first["app"] == "web-status" and first["healthy"] is True
        status, ctype, page = await fetch(session, "GET", f"{base}/")
        assert status == 200 and ctype.startswith("text/html") and "status.json" in page
        status, ctype, text = await fetch(session, "GET", f"{base}/metrics")
        assert status == 200 and ctype == CONTENT_TYPE_LATEST
        assert 'sabot_agent_events_in_total{agent="drain"} 50.0' in text


async def test_status_page_escapes_names_it_draws():
    app = sabot.App("web-escape")

    @app.agent(app.channel(name="<script>alert(1)</script>"), name="<img src=x>")
    async def evil(stream):
        async for _ in stream:
            pass

    async with serving(app) as (session, base):
        async with session.get(f"{base}/status.json") as resp:
            svg = (await resp.json())["svg"]
    assert "<script>" not in svg and "<img" not in svg
    assert "&lt;img src=x&gt;" in svg


async def test_takes_model_decodes_the_body_and_refuses_a_bad_one():
    class Order(Record, namespace="web.Order", validation=True):
        id: str
        amount: int

    app = sabot.App("web-models")

    @app.page("/orders")
    class Orders(web.View):
        @web.takes_model(Order)
        async def post(self, request, order):
            return self.json({"id": order.id, "double": order.amount * 2})

        @web.gives_model(Order)
        async def get(self, request):
            return Order(id="x", amount=1)

    async with serving(app) as (session, base):
        status, _, body = await fetch(session, "POST", f"{base}/orders",
                                      data=b'{"id": "a", "amount": 21}')
        assert (status, body) == (200, '{"id":"a","double":42}')
        status, _, body = await fetch(session, "POST", f"{base}/orders", data=b'{"id": "a"')
        assert status == 400 and "body is not a Order" in body
        status, _, body = await fetch(session, "POST", f"{base}/orders",
                                      data=b'{"id": "a", "amount": "lots"}')
        assert status == 400 and "amount" in body
        assert (await fetch(session, "GET", f"{base}/orders"))[2] == (
            '{"id":"x","amount":1,"__faust":{"ns":"web.Order"}}')


async def test_status_json_shows_no_secret_of_the_settings():
    import json

    from sabot.web.status import StatusBoard
    secret = "Sup3rS3cretPw"
    app = sabot.App("web-secret", broker=f"kafka://user:{secret}@127.0.0.1:1",
                    redis_url=f"redis://:{secret}@127.0.0.1:1/0")
    app.agent(app.topic("t"), name="reader")(_noop_agent)
    status = await StatusBoard(WorkerMonitor(app)).status()  # not started: nothing to reach
    text = json.dumps(status)
    assert secret not in text and "reader" in text
    assert status["broker"] == "kafka://user:***@127.0.0.1:1"


async def _noop_agent(stream):
    async for _ in stream:
        pass


async def test_faust_word_count_example_style_page_runs_unchanged():
    """As in Faust's examples/word_count.py: a function page under table_route."""
    app = sabot.App("web-faust-style")
    word_counts = app.Table("word_counts", default=int)
    words = app.channel(name="words")

    @app.agent(words)
    async def count_words(stream):
        async for word in stream:
            word_counts[word] += 1

    @app.page("/count/{word}/")
    @app.table_route(table=word_counts, match_info="word")
    async def get_count(web, request, word):
        return web.json({word: word_counts[word]})

    @app.page("/count/")
    @app.table_route(table=word_counts, query_param="word")
    async def get_count_q(web, request):
        return web.json({"q": request.query["word"]})

    async with serving(app) as (session, base):
        for _ in range(3):
            await words.send(value="stream")
        await until(lambda: word_counts["stream"] == 3, 10)
        assert (await fetch(session, "GET", f"{base}/count/stream/"))[2] == '{"stream":3}'
        assert (await fetch(session, "GET", f"{base}/count/?word=x"))[2] == '{"q":"x"}'
