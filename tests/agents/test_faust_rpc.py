"""Agent RPC in Faust's wire format, checked against the Faust package itself.

Requests built with Faust's own classes (``ReqRepRequest(...).dumps()``, the
``Faust-Ag-*`` headers of ``use_reply_headers``) are written straight to a
real Redis stream: a Sabot agent sees the inner value, decoded into its
``value_type``, and replies with bytes that Faust's serializer registry reads
as a ``ReqRepResponse`` carrying the same correlation id. Requests that are
not valid are dead letters naming the field. What Sabot writes when it asks
loads in Faust as a ``ReqRepRequest``. (A real Faust worker answering Sabot,
and the reverse, is ``test_faust_worker_rpc.py``.)
"""
import faust
import pytest
from faust.agents.models import (ModelReqRepRequest, ModelReqRepResponse, ReqRepRequest,
                                 ReqRepResponse)
from faust.models.base import maybe_model
from faust.serializers import Registry

import sabot
from sabot.agents import faust_wire
from sabot.codecs import get_codec
from sabot.models.codec import typed_codec
from tests.helpers import running, unique, until

faust_registry = Registry(key_serializer="raw", value_serializer="json")
WAIT = 60.0


class FPoint(faust.Record, namespace="rpc.Point"):
    x: int
    y: int


class Point(sabot.Record, namespace="rpc.Point", validation=True):
    x: int
    y: int


def test_sabot_requests_and_replies_are_fausts_bytes():
    point_codec = typed_codec(Point, None, key=False)
    data = point_codec.encode(faust_wire.request(Point(1, 2), "f-reply-1", "cid-1"))
    assert data == ModelReqRepRequest(value=FPoint(x=1, y=2), reply_to="f-reply-1",
                                      correlation_id="cid-1").dumps()
    req = faust_registry.loads_value(FPoint, data)  # a Faust agent's typed topic
    assert isinstance(req, ReqRepRequest)
    assert (req.value, req.reply_to, req.correlation_id) == (FPoint(x=1, y=2), "f-reply-1",
                                                             "cid-1")

    data = get_codec("json").encode(faust_wire.request(21, "f-reply-1", "cid-2"))
    assert data == ReqRepRequest(value=21, reply_to="f-reply-1", correlation_id="cid-2").dumps()
    req = faust_registry.loads_value(None, data)  # an untyped topic
    assert isinstance(req, ReqRepRequest) and req.value == 21

    data = get_codec("json").encode(faust_wire.response(b"k", Point(2, 1), "cid-1"))
    assert data == ModelReqRepResponse(key="k", value=FPoint(x=2, y=1),
                                       correlation_id="cid-1").dumps()
    data = get_codec("json").encode(faust_wire.response("k", 42, "cid-2"))
    assert data == ReqRepResponse(key="k", value=42, correlation_id="cid-2").dumps()


def test_a_reply_value_naming_a_record_class_is_built_into_it():
    raw = ModelReqRepResponse(key=None, value=FPoint(x=5, y=6), correlation_id="c").dumps()
    assert faust_wire.read_response(get_codec("json").decode(raw)) == ("c", Point(5, 6))
    assert faust_wire.read_response({"correlation_id": "c", "value": {"a": 1}}) == ("c", {"a": 1})
    assert faust_wire.read_response({"value": 1}) is None  # no correlation id: not a reply
    misfit = {"correlation_id": "c", "value": {"x": "one", "__faust": {"ns": "rpc.Point"}}}
    with pytest.raises(faust_wire.ReplyError, match="names 'rpc.Point' and does not fit") as err:
        faust_wire.read_response(misfit)
    assert err.value.correlation_id == "c"


def test_asking_with_an_unusable_correlation_id_is_refused():
    with pytest.raises(ValueError, match="correlation_id.*whitespace"):
        faust_wire.check_request("f-reply-1", "a b")
    with pytest.raises(ValueError, match="reply_to.*empty"):
        faust_wire.check_request("", "c")


def test_only_fausts_requests_are_unwrapped():
    ns = b'"__faust":{"ns":"@ReqRepRequest"}'
    request = b'{"value":[1],"reply_to":"r","correlation_id":"c",%s}' % ns
    others = [b'{"a":1}', None, b'{"ReqRepRequest":1}', b'{not json ReqRepRequest',
              b'{"value":1,"reply_to":"r","correlation_id":"c","__faust":{"ns":"x.ReqRepRequest"}}']
    assert faust_wire.unwrap_requests(others[:2], None) is None  # the fetch has no request
    payloads, headers, failures = faust_wire.unwrap_requests(others + [request], None)
    assert payloads == others + [b"[1]"] and failures == []
    assert headers[:-1] == [None] * len(others)
    assert faust_wire.reply_target(headers[-1]) == ("r", "c")
    deep = b'{"value":%s1%s,"reply_to":"r","correlation_id":"c",%s}' % (
        b"[" * 100_000, b"]" * 100_000, ns)
    payloads, _, failures = faust_wire.unwrap_requests([deep], [{"h": b"1"}])
    assert payloads == [deep] and [i for i, _ in failures] == []  # not JSON here: decoding says so


def replies(client, stream, n):
    """The first ``n`` entries of the reply stream, read as Faust's reply consumer reads them."""
    out = []
    for _, fields in client.xrange(stream)[:n]:
        resp = faust_registry.loads_value(ReqRepResponse, fields[b"value"])
        out.append((resp.correlation_id, maybe_model(resp.value)))
    return sorted(out)


@pytest.mark.redis
async def test_faust_requests_are_answered_in_fausts_reply_format(redis_server):
    app = sabot.App(unique("rpc"), broker=redis_server.url)
    points = app.topic(unique("points"), value_type=Point)
    numbers = app.topic(unique("numbers"))
    seen = []

    @app.agent(points)
    async def swap(stream):
        async for event in stream.events():
            seen.append((event.key, event.value))
            yield Point(event.value.y, event.value.x)

    @app.agent(numbers)
    async def double(stream):
        async for value in stream:
            seen.append(value)
            yield value * 2

    reply_to = unique("f-reply")
    client = redis_server.client()
    async with running(app):
        # Faust's ask of a record: the ModelReqRepRequest envelope.
        client.xadd(points.name, {"key": b"k1", "value": ModelReqRepRequest(
            value=FPoint(x=1, y=2), reply_to=reply_to, correlation_id="c1").dumps()})
        # Faust's ask of a plain value: the ReqRepRequest envelope.
        client.xadd(numbers.name, {"value": ReqRepRequest(
            value=21, reply_to=reply_to, correlation_id="c2").dumps()})
        # Faust's agent with use_reply_headers=True: the value as it is, and headers.
        client.xadd(numbers.name, {"value": b"4", "Faust-Ag-ReplyTo": reply_to.encode(),
                                   "Faust-Ag-CorrelationId": b"c3"})
        await until(lambda: client.xlen(reply_to) >= 3, timeout=WAIT, what="three replies")
        # The app's own ask: its reply consumer builds the record back.
        assert await swap.ask(Point(7, 8), timeout=WAIT) == Point(8, 7)
        assert not app.crash_reasons, app.crash_reasons
    assert replies(client, reply_to, 3) == [("c1", FPoint(x=2, y=1)), ("c2", 42), ("c3", 8)]
    assert (b"k1", Point(1, 2)) in seen and 21 in seen and 4 in seen  # unwrapped values


@pytest.mark.redis
async def test_requests_that_are_not_valid_are_dead_letters_naming_the_field(redis_server):
    app = sabot.App(unique("rpc"), broker=redis_server.url)
    points = app.topic(unique("points"), value_type=Point)
    seen = []

    @app.agent(points)
    async def swap(stream):
        async for point in stream:
            seen.append(point)
            yield Point(point.y, point.x)

    reply_to = unique("f-reply")
    ns = b'"__faust":{"ns":"@ReqRepRequest"}'
    good = b'{"value":{"x":1,"y":2},"reply_to":"%s","correlation_id":"ok",%s}' % (
        reply_to.encode(), ns)
    bad = [
        (b'{"value":{"x":1,"y":2},"correlation_id":"c",%s}' % ns,
         "required field 'reply_to' is missing"),
        (b'{"value":{"x":1,"y":2},"reply_to":5,"correlation_id":"c",%s}' % ns,
         "field 'reply_to' must be a string, got int"),
        (b'{"value":{"x":1,"y":2},"reply_to":"has space","correlation_id":"c",%s}' % ns,
         "field 'reply_to' holds whitespace"),
        (b'{"value":{"x":1,"y":2},"reply_to":"r","correlation_id":["c"],%s}' % ns,
         "field 'correlation_id' must be a string, got list"),
        (b'{"value":{"x":1,"y":2},"reply_to":"r","correlation_id":"",%s}' % ns,
         "field 'correlation_id' is empty"),
        (b'{"reply_to":"r","correlation_id":"c",%s}' % ns,
         "required field 'value' is missing"),
        # A valid request whose value does not fit the agent's value_type.
        (b'{"value":{"x":"one","y":2},"reply_to":"r","correlation_id":"c",%s}' % ns,
         "Point: field 'x' is not valid"),
    ]
    client = redis_server.client()
    dlq = points.name + ".dlq"
    async with running(app):
        for payload, _ in bad:
            client.xadd(points.name, {"value": payload})
        client.xadd(points.name, {"value": good})
        await until(lambda: client.xlen(reply_to) >= 1 and client.xlen(dlq) >= len(bad),
                    timeout=WAIT, what="the good request answered, the bad ones dead letters")
        await until(lambda: client.xpending(points.name, app.id)["pending"] == 0,
                    timeout=WAIT, what="every entry acknowledged")
    assert seen == [Point(1, 2)]  # the agent never saw a bad request
    assert replies(client, reply_to, 1) == [("ok", FPoint(x=2, y=1))]
    dead = [fields for _, fields in client.xrange(dlq)]
    for fields, (payload, reason) in zip(dead, bad):
        assert reason in fields[b"sabot-error"].decode()
    for fields, (payload, _) in zip(dead[:-1], bad):
        assert fields[b"value"] == payload  # kept as it came
    # The request that was valid keeps its inner value and, in headers, its reply.
    assert dead[-1][b"value"] == b'{"x":"one","y":2}'
    assert dead[-1][b"Faust-Ag-ReplyTo"] == b"r"
    assert dead[-1][b"Faust-Ag-CorrelationId"] == b"c"


@pytest.mark.redis
async def test_sabot_asks_in_the_form_faust_reads(redis_server):
    app = sabot.App(unique("rpc"), broker=redis_server.url)
    numbers = app.topic(unique("numbers"))  # JSON: Faust's envelope
    texts = app.topic(unique("texts"), value_serializer="raw")  # not JSON: Faust's headers

    @app.agent(numbers)
    async def double(stream):
        async for value in stream:
            yield value * 2

    @app.agent(texts)
    async def shout(stream):
        async for value in stream:
            yield value.upper()

    headed = app.topic(unique("headed"))  # JSON, but the agent asks for headers (Faust's option)

    @app.agent(headed, use_reply_headers=True)
    async def negate(stream):
        async for value in stream:
            yield -value

    client = redis_server.client()
    async with running(app):
        assert await double.ask(5, key="k", timeout=WAIT) == 10
        assert await double.join([1, 2, 3], timeout=WAIT) == [2, 4, 6]
        assert await shout.ask(b"abc", timeout=WAIT) == "ABC"  # bytes reply as JSON text
        assert [r async for r in shout.map([b"x"], timeout=WAIT)] == ["X"]
        await double.send(value=6, reply_to=app.replies.name, correlation_id="mine")
        assert await negate.ask(3, timeout=WAIT) == -3
    [(_, request), *_] = client.xrange(numbers.name)
    req = faust_registry.loads_value(None, request[b"value"])
    assert isinstance(req, ReqRepRequest)
    assert (req.value, req.reply_to) == (5, app.replies.name)
    assert request[b"key"] == b"k"
    last = client.xrange(numbers.name)[-1][1]
    assert faust_registry.loads_value(None, last[b"value"]).correlation_id == "mine"
    [(_, header_request), *_] = client.xrange(texts.name)
    assert header_request[b"value"] == b"abc"
    assert header_request[b"Faust-Ag-ReplyTo"] == app.replies.name.encode()
    assert header_request[b"Faust-Ag-CorrelationId"]
    [(_, header_request)] = client.xrange(headed.name)
    assert header_request[b"value"] == b"3" and b"Faust-Ag-ReplyTo" in header_request
