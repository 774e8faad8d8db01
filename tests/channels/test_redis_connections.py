"""Redis connections: URLs, passwords, unreachable and silent servers fail fast
with one line, a write to a server that stays down fails its future, and
secrets never leak into reprs, errors or logs.
"""
import asyncio
import logging
import os
import socket
import subprocess
import sys
import textwrap
import time

import pytest

import sabot
from sabot.exceptions import AuthenticationError, BrokerUnavailable
from tests.channels.redis_streams import (make_app, redis_transport)
from tests.helpers import collector, running, unique, until

pytestmark = pytest.mark.redis

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


async def test_password_right_round_trips(redis_auth_server, stream):
    app = make_app(redis_auth_server)
    got = collector(app, app.redis_channel(stream, value_serializer="raw"))
    async with running(app):
        await (await app.redis_channel(stream).send(value=b"secret-ok"))
        await until(lambda: got, what="the value")
    assert got == [b"secret-ok"]


@pytest.mark.parametrize("which", ["wrong", "missing"])
async def test_password_wrong_is_a_clear_error_that_hides_it(redis_auth_server, stream,
                                                            caplog, which):
    url = (redis_auth_server.url_with_password("not-the-password") if which == "wrong"
           else redis_auth_server.url_without_password)
    app = sabot.App(f"auth-{which}", redis_url=url, broker_connect_timeout=2.0)
    app.redis_channel(stream)
    transport = redis_transport(app)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(AuthenticationError) as info:
        await transport.check_connection()
    message = str(info.value)
    assert "\n" not in message and "credentials" in message
    assert str(redis_auth_server.port) in message
    for text in (message, repr(transport), repr(app), caplog.text):
        assert "not-the-password" not in text
        assert redis_auth_server.password not in text
    assert info.value.retryable is False
    await transport.stop()


def test_url_forms_and_repr(redis_server):
    from sabot.channels.redis import RedisTransport
    app = sabot.App("urls")
    for url in ("redis://127.0.0.1:6390/3", "rediss://user:pw-xyz@example.com:6380/1",
                "redis://:pw-abc@localhost"):
        transport = RedisTransport(app, url)
        assert "pw-" not in repr(transport)
    kwargs = RedisTransport(app, "redis://u:p@h:7000/5").client.connection_pool.connection_kwargs
    assert (kwargs["username"], kwargs["password"], kwargs["db"], kwargs["port"]) == ("u", "p", 5, 7000)
    tls = RedisTransport(app, "rediss://h:7000/0").client.connection_pool
    assert "SSL" in tls.connection_class.__name__
    with pytest.raises(sabot.ConfigurationError):
        RedisTransport(app, "http://h:1/0")


async def test_unreachable_server_is_broker_unavailable(stream):
    from tests.servers.redis import free_port
    app = sabot.App("down", redis_url=f"redis://127.0.0.1:{free_port()}/0",
                    broker_connect_timeout=0.5)
    app.redis_channel(stream)
    with pytest.raises(BrokerUnavailable, match="cannot reach redis"):
        await redis_transport(app).check_connection()


async def test_write_to_a_server_that_stays_down_fails_its_future(redis_server_factory, stream):
    server = redis_server_factory()
    app = make_app(server, broker_connect_timeout=0.5)
    ch = app.redis_channel(stream, value_serializer="json")
    assert await (await ch.send(value={"up": True}))  # an entry id
    server.stop()
    future = await ch.send(value={"up": False})
    with pytest.raises(BrokerUnavailable, match="cannot reach redis"):
        await asyncio.wait_for(future, 10)
    server.start()
    assert await (await ch.send(value={"up": "again"}))  # and it recovers
    await app.stop()


async def test_wrong_password_fails_app_start_fast_with_one_line(redis_auth_server, stream,
                                                                 caplog):
    url = redis_auth_server.url_with_password("hunter2-wrong", username="default")
    app = sabot.App(unique("badpw"), redis_url=url, broker_connect_timeout=5.0)

    @app.agent(app.redis_channel(stream))
    async def never(entries):
        async for _ in entries:
            pass

    caplog.set_level(logging.DEBUG)
    started = time.monotonic()
    with pytest.raises(AuthenticationError) as info:
        await asyncio.wait_for(app.start(), 15)
    elapsed = time.monotonic() - started
    await asyncio.wait_for(app.stop(), 10)
    assert elapsed < 2.0, "an authentication failure is not worth retrying"
    message = str(info.value)
    assert "\n" not in message and str(redis_auth_server.port) in message
    assert "'default'" in message
    for text in (message, repr(app), caplog.text):
        assert "hunter2-wrong" not in text
        assert redis_auth_server.password not in text


@pytest.mark.parametrize("how", ["redis_url", "broker"])
async def test_wrong_password_via_broker_or_redis_url(redis_auth_server, stream, how):
    url = redis_auth_server.url_with_password("nope-" + how)
    kwargs = {how: url, "broker_connect_timeout": 5.0}
    app = sabot.App(unique("pw"), **kwargs)
    ch = app.topic(stream) if how == "broker" else app.redis_channel(stream)

    @app.agent(ch)
    async def never(entries):
        async for _ in entries:
            pass

    started = time.monotonic()
    with pytest.raises(AuthenticationError) as info:
        await asyncio.wait_for(app.start(), 15)
    assert time.monotonic() - started < 2.0
    await asyncio.wait_for(app.stop(), 10)
    assert "nope-" not in str(info.value) and "\n" not in str(info.value)


async def test_unreachable_server_fails_start_within_the_connect_timeout(stream):
    from tests.servers.redis import free_port
    app = sabot.App(unique("down"), redis_url=f"redis://:pw-zz9@127.0.0.1:{free_port()}/0",
                    broker_connect_timeout=1.0)

    @app.agent(app.redis_channel(stream))
    async def never(entries):
        async for _ in entries:
            pass

    started = time.monotonic()
    with pytest.raises(BrokerUnavailable) as info:
        await asyncio.wait_for(app.start(), 15)
    assert time.monotonic() - started < 3.0
    await asyncio.wait_for(app.stop(), 10)
    assert "\n" not in str(info.value) and "pw-zz9" not in str(info.value)


async def test_silent_server_fails_start_within_the_connect_timeout(stream):
    # Accepts TCP connections and never answers: PING must time out.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    try:
        app = sabot.App(unique("mute"), redis_url=f"redis://127.0.0.1:{port}/0",
                        broker_connect_timeout=1.0)

        @app.agent(app.redis_channel(stream))
        async def never(entries):
            async for _ in entries:
                pass

        started = time.monotonic()
        with pytest.raises(BrokerUnavailable) as info:
            await asyncio.wait_for(app.start(), 15)
        assert time.monotonic() - started < 3.0
        assert "\n" not in str(info.value)
        await asyncio.wait_for(app.stop(), 10)
    finally:
        listener.close()


async def test_secrets_never_in_repr_errors_or_logs_during_a_run(redis_server_factory,
                                                                stream, caplog):
    secret = "S3cr@t:pa/ss%"
    from urllib.parse import quote
    server = redis_server_factory(password=secret)
    url = f"redis://:{quote(secret, safe='')}@127.0.0.1:{server.port}/0"
    caplog.set_level(logging.DEBUG)
    app = sabot.App(unique("secret"), redis_url=url, broker_connect_timeout=1.0)
    ch = app.redis_channel(stream)
    got = []

    @app.agent(ch)
    async def collect(entries):
        async for value in entries:
            got.append(value)

    texts = [repr(app), repr(ch)]
    async with running(app):
        await (await ch.send(value={"a": 1}))
        await until(lambda: got, what="the value")
        transport = next(t for t in app.transports if t.scheme == "redis")
        texts += [repr(transport), transport.label, str(transport.status())]
        # Lose the server: the reconnect warnings and a failed write's error.
        server.stop(kill=True)
        future = await ch.send(value={"a": 2})
        with pytest.raises(BrokerUnavailable) as info:
            await asyncio.wait_for(future, 10)
        texts.append(str(info.value))
        server.start()
        await (await ch.send(value={"a": 3}))
        await until(lambda: len(got) == 2, timeout=15, what="after the restart")
    texts.append(caplog.text)
    encoded = quote(secret, safe="")
    for text in texts:
        assert secret not in text and encoded not in text
        assert "S3cr" not in text


PW_APP = textwrap.dedent('''
    import os, sys
    sys.path.insert(0, {root!r})
    import sabot
    app = sabot.App("pwapp", redis_url=os.environ["CONTRACT_URL"], broker_connect_timeout=3)

    @app.agent(app.redis_channel("pw-s"))
    async def read(entries):
        async for _ in entries:
            pass
''')


def test_worker_cli_with_a_wrong_password_exits_with_one_clear_line(redis_auth_server,
                                                                    tmp_path):
    (tmp_path / "pwapp.py").write_text(PW_APP.format(root=ROOT))
    env = dict(os.environ, CONTRACT_URL=redis_auth_server.url_with_password("wrong-pw-77"),
               PYTHONPATH=f"{tmp_path}{os.pathsep}{ROOT}")
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "sabot", "-A", "pwapp:app", "worker",
                           "-l", "debug"], env=env, capture_output=True, timeout=30,
                          cwd=str(tmp_path))
    output = (proc.stdout + proc.stderr).decode()
    assert proc.returncode != 0, output
    assert time.monotonic() - started < 10
    assert "wrong-pw-77" not in output and redis_auth_server.password not in output
    errors = [ln for ln in output.splitlines() if "refused the credentials" in ln]
    assert errors, output
    assert "Traceback" not in output
