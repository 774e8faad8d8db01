"""No secret is ever shown (issue 10, point 4).

One distinctive secret is planted in every form Sabot accepts (a URL's
userinfo, percent-encoded; a ``?password=`` query parameter; ``sasl_password``;
``broker_credentials`` as a ``(user, password)`` pair and as a mapping; an
``ssl_context`` whose repr would give it away) and in forms it refuses (a
wrong type, a bad scheme, a bad port, a password not percent-encoded). Every
output is then scanned for it, raw, percent-encoded and repr()'d: reprs,
labels, ``as_dict()``, the worker banner, ``ConfigurationError`` messages,
log records of a worker that starts and fails, the output of the real
``sabot worker`` command against an unreachable broker, a real redis-server
with a wrong password, bad settings, and ``/metrics`` and ``/health`` of a
running worker.
"""
import json
import logging
import os
import signal
import ssl
import subprocess
import sys
import uuid
from urllib.parse import quote, quote_plus

import pytest

import sabot
from sabot.exceptions import ConfigurationError
from sabot.settings import redact_url
from sabot.worker import Worker
from tests.helpers import http_get, until_sync
from tests.servers import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: The planted secret: ``/``, ``:`` and ``@`` make its percent-encoded form differ.
SECRET = "Qz7s3cr3t/Wq8:Lk@x"
#: Pieces of it that every form (raw, percent-encoded, repr, JSON) contains:
#: finding either one is a leak, even of part of the secret.
FRAGMENTS = ("Qz7s3cr3t", "Wq8")
#: A secret of the wrong type (an int): its digits must not show either.
INT_SECRET = 739146285
Q = quote(SECRET, safe="")


def forms(secret):
    """Every way ``secret`` could appear in a text."""
    s = str(secret)
    return {s, quote(s, safe=""), quote(s), quote_plus(s), repr(s), json.dumps(s),
            repr(s.encode()), *([] if s != SECRET else FRAGMENTS)}


def assert_clean(text, where, secrets=(SECRET,)):
    """``text`` holds no form of any of ``secrets``."""
    for secret in secrets:
        found = sorted(f for f in forms(secret) if f in text)
        assert not found, f"secret shown in {where} (as {found}):\n{text}"


def secret_context():
    """An SSL context whose repr and str are the secret: neither may be shown."""
    class SecretContext(ssl.SSLContext):
        def __repr__(self):
            return SECRET
        __str__ = __repr__
    return SecretContext(ssl.PROTOCOL_TLS_CLIENT)


def closed_port():
    """A local port nobody listens on: an unreachable broker."""
    return free_port()


# -- redact_url -------------------------------------------------------------------

@pytest.mark.parametrize("url, shown", [
    (f"redis://alice:{Q}@h:6379/0", "redis://alice:***@h:6379/0"),
    (f"redis://:{Q}@h:6379/0", "redis://:***@h:6379/0"),
    (f"redis://{Q}@h", "redis://***@h"),  # a lone userinfo may be a password
    (f"redis://h:6379/0?password={Q}", "redis://h:6379/0?password=***"),
    (f"redis://h/0?db=1&PassWord={Q}&x=y", "redis://h/0?db=1&PassWord=***&x=y"),
    (f"redis://h/0?pass%77ord={Q}", "redis://h/0?pass%77ord=***"),  # percent-encoded name
    *[(f"redis://h?{name}={Q}", f"redis://h?{name}=***")
      for name in ("passwd", "pass", "pwd", "secret", "token", "sasl_password", "api_key",
                   "API-KEY", "ssl_password", "auth_token", "access_key")],
    (f"kafka://alice:{Q}@h1:9092,h2:9092", "kafka://alice:***@h1:9092,h2:9092"),
    (f"kafkaa://alice:{Q}@h:9092", "kafkaa://alice:***@h:9092"),
    (f"rediss://u:{Q}@[::1]:6379/0#{Q}", "rediss://u:***@[::1]:6379/0#***"),
    # Not percent-encoded: '@', '/', ':' in the password.
    (f"redis://alice:{SECRET}@h:6379/0", "redis://<unparsable URL>"),
    (f"redis://:p@ss{Q}@h", "redis://:***@h"),
    (f"redis://:{SECRET.replace('/', '?')}@h", "redis://<unparsable URL>"),
    (f"redis://:{SECRET.replace('/', '#')}@h", "redis://<unparsable URL>"),
    (f"redis://:a b{Q}@h", "redis://<unparsable URL>"),
    (f"redis//:{Q}@h", "<unparsable URL>"),
    (f"{Q}", "<unparsable URL>"),
    ("memory://", "memory://"),
    ("kafka://127.0.0.1:9092", "kafka://127.0.0.1:9092"),
    ("redis://127.0.0.1:6379/0?db=2", "redis://127.0.0.1:6379/0?db=2"),
])
def test_redact_url(url, shown):
    assert redact_url(url) == shown
    assert_clean(redact_url(url), "redact_url")


def test_redact_url_of_a_non_string_shows_only_its_type():
    assert redact_url(SECRET.encode()) == "<bytes, not a URL>"
    assert redact_url(INT_SECRET) == "<int, not a URL>"


# -- reprs, labels, as_dict, banner -------------------------------------------------

#: Settings that plant the secret in every accepted form (the broker URL varies).
ACCEPTED = {
    "sasl_password": {"sasl_username": "alice", "sasl_password": SECRET},
    "credentials pair": {"broker_credentials": ("alice", SECRET)},
    "credentials mapping": {"broker_credentials": {
        "mechanism": "PLAIN", "username": "alice", "password": SECRET,
        "ssl_context": "secret-context"}},
    "ssl_context": {"ssl_context": "secret-context"},
}

BROKERS = {
    "kafka userinfo": f"kafka://alice:{Q}@127.0.0.1:{{port}}",
    "kafka query": f"kafka://127.0.0.1:{{port}}?password={Q}",
    "redis userinfo": f"redis://alice:{Q}@127.0.0.1:{{port}}/0",
    "redis no user": f"redis://:{Q}@127.0.0.1:{{port}}/0",
    "redis query": f"redis://127.0.0.1:{{port}}/0?password={Q}",
}


def with_contexts(settings):
    """``settings`` with ``"secret-context"`` replaced by a ``secret_context()``."""
    out = dict(settings)
    if out.get("ssl_context") == "secret-context":
        out["ssl_context"] = secret_context()
    creds = out.get("broker_credentials")
    if isinstance(creds, dict) and creds.get("ssl_context") == "secret-context":
        out["broker_credentials"] = {**creds, "ssl_context": secret_context()}
    return out


def build_app(broker, redis_url=None, **settings):
    """An app with a topic on ``broker`` and a Redis channel, each with an agent."""
    app = sabot.App("secrets-" + uuid.uuid4().hex[:8], broker=broker,
                    redis_url=redis_url or BROKERS["redis query"].format(port=closed_port()),
                    broker_connect_timeout=1.0, **with_contexts(settings))

    @app.agent(app.topic("secret-events", value_serializer="json"), name="consume")
    async def consume(stream):
        async for _ in stream:
            pass

    if not broker.startswith("redis"):
        @app.agent(app.redis_channel("secret-stream"), name="consume_redis")
        async def consume_redis(stream):
            async for _ in stream:
                pass
    return app


def texts_of(app):
    """Every text the app shows about itself, by where it comes from."""
    out = {"repr(app)": repr(app), "app.label": app.label, "repr(app.conf)": repr(app.conf),
           "as_dict()": str(app.conf.as_dict()), "banner": Worker(app, web_port=0).banner()}
    for transport in app.transports:
        out[f"repr({transport.scheme} transport)"] = repr(transport)
        out[f"{transport.scheme} label"] = transport.label
        out[f"{transport.scheme} shortlabel"] = transport.shortlabel
    for channel in app.channels + [c for t in app.transports for c in t.topics.values()]:
        out[f"repr({channel.name})"] = repr(channel)
        out[f"{channel.name} label"] = channel.label
    return out


@pytest.mark.parametrize("broker", BROKERS)
@pytest.mark.parametrize("planted", ACCEPTED)
def test_reprs_labels_settings_and_banner_hide_the_secret(broker, planted):
    app = build_app(BROKERS[broker].format(port=closed_port()), **ACCEPTED[planted])
    assert {t.scheme for t in app.transports} == {"redis"} | ({"kafka"} if "kafka" in broker else set())
    for where, text in texts_of(app).items():
        assert_clean(text, where)


def test_as_dict_redacts_and_keeps_the_rest():
    app = build_app(BROKERS["redis userinfo"].format(port=6390), sasl_password=SECRET,
                    broker_credentials=("alice", SECRET), ssl_context="secret-context")
    shown = app.conf.as_dict()
    assert shown["broker"] == "redis://alice:***@127.0.0.1:6390/0"
    assert shown["redis_url"].endswith("?password=***")
    assert shown["sasl_password"] == shown["broker_credentials"] == shown["ssl_context"] == "***"
    assert app.conf.as_dict(redact=False)["sasl_password"] == SECRET  # the value itself is kept


# -- ConfigurationError messages ------------------------------------------------------

@pytest.mark.parametrize("settings, names", [
    ({"sasl_password": INT_SECRET}, ["sasl_password", "int"]),
    ({"sasl_password": SECRET.encode()}, ["sasl_password", "bytes"]),
    ({"broker_credentials": ["alice", SECRET]}, ["broker_credentials", "list"]),
    ({"broker_credentials": ("alice", SECRET, "PLAIN")}, ["broker_credentials", "tuple"]),
    ({"broker_credentials": SECRET}, ["broker_credentials", "str"]),
    ({"ssl_context": SECRET}, ["ssl_context", "str"]),
    ({"broker": f"redis://:{Q}@h/0".encode()}, ["broker", "bytes"]),
    ({"redis_url": f"redis://:{Q}@h/0".encode()}, ["redis_url", "bytes"]),
])
def test_a_wrong_typed_secret_is_named_by_setting_and_type_only(settings, names):
    with pytest.raises(ConfigurationError) as info:
        sabot.App("secrets", **settings)
    message = str(info.value)
    assert all(name in message for name in names), message
    assert_clean(message, "the error", secrets=(SECRET, INT_SECRET))


def test_a_wrong_typed_secret_set_later_is_named_by_type_only():
    app = sabot.App("secrets")
    with pytest.raises(ConfigurationError) as info:
        app.conf.sasl_password = INT_SECRET
    assert "sasl_password" in str(info.value) and "int" in str(info.value)
    assert_clean(str(info.value), "the error", secrets=(INT_SECRET,))


@pytest.mark.parametrize("settings", [
    {"broker": f"kafkaa://alice:{Q}@127.0.0.1:9092"},
    {"broker": f"kafka//alice:{Q}@127.0.0.1:9092"},
    {"broker": f"alice:{Q}@127.0.0.1:9092"},
    {"broker": f"kafka://alice:{Q}@"},
    {"broker": f"redis://:{Q}@127.0.0.1:notaport/0"},
    {"broker": f"redis://:{Q}@127.0.0.1:99999/0"},
    {"broker": f"redis://:{SECRET}@127.0.0.1:6379/0"},  # not percent-encoded
    {"redis_url": f"kafkaa://alice:{Q}@127.0.0.1:9092"},
    {"redis_url": f"kafka://alice:{Q}@127.0.0.1:9092"},
    {"redis_url": f"redis://:{Q}@127.0.0.1:notaport/0"},
    {"redis_url": f"redis://:{SECRET}@127.0.0.1:6379/0"},
])
def test_bad_urls_are_refused_without_the_secret(settings):
    """A refused URL names what is wrong, never the password (there or in a repr)."""
    try:
        app = sabot.App("secrets", **settings)
        app.topic("t")
        app.redis_channel("s")
    except ConfigurationError as exc:
        assert_clean(str(exc), "the error")
        return
    for where, text in texts_of(app).items():  # accepted as it is: shown redacted
        assert_clean(text, where)


# -- a worker that starts and fails, in this process ----------------------------------

def run_worker_in_process(app, caplog):
    """``Worker(app).execute()`` with every log record captured; all their text."""
    caplog.set_level(logging.DEBUG)
    code = Worker(app, web_port=0, configure_logging=False).execute()
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    texts = []
    for record in caplog.records:
        texts.append(formatter.format(record))  # message and traceback, if any
        texts.append(repr(record.args))
    return code, "\n".join(texts)


@pytest.mark.parametrize("broker", BROKERS)
@pytest.mark.parametrize("planted", ["sasl_password", "credentials pair", "credentials mapping"])
def test_log_records_of_a_worker_that_cannot_reach_its_broker(broker, planted, caplog):
    app = build_app(BROKERS[broker].format(port=closed_port()), **ACCEPTED[planted])
    code, logs = run_worker_in_process(app, caplog)
    assert code == 1, logs
    assert "worker could not start" in logs
    assert_clean(logs, "the log records")


@pytest.mark.redis
@pytest.mark.parametrize("form", ["userinfo", "query"])
def test_log_records_of_a_worker_refused_by_redis(redis_auth_server, form, caplog):
    port = redis_auth_server.port
    url = (f"redis://:{Q}@127.0.0.1:{port}/0" if form == "userinfo"
           else f"redis://127.0.0.1:{port}/0?password={Q}")
    app = build_app("memory://", redis_url=url, sasl_password=SECRET)
    code, logs = run_worker_in_process(app, caplog)
    assert code == 1, logs
    assert "refused the credentials" in logs
    assert_clean(logs, "the log records")


# -- the real `sabot worker` command ----------------------------------------------------

#: The app the subprocess runs: configured from the environment, so that a
#: traceback (which shows source lines) could not show the secret either.
SECRET_APP = '''\
import ast
import os
import ssl

import sabot

SECRET = os.environ["SECRET_TEST_SECRET"]


class SecretContext(ssl.SSLContext):
    def __repr__(self):
        return SECRET
    __str__ = __repr__


settings = ast.literal_eval(os.environ.get("SECRET_TEST_SETTINGS", "{}"))
if settings.get("ssl_context") == "secret-context":
    settings["ssl_context"] = SecretContext(ssl.PROTOCOL_TLS_CLIENT)
creds = settings.get("broker_credentials")
if isinstance(creds, dict) and creds.get("ssl_context") == "secret-context":
    creds["ssl_context"] = SecretContext(ssl.PROTOCOL_TLS_CLIENT)

app = sabot.App(os.environ.get("SECRET_TEST_APP_ID", "secret-test"), broker_connect_timeout=1.0,
                shutdown_timeout=3.0, status_interval=0.5, **settings)


@app.agent(app.topic("secret-events", value_serializer="json"), name="consume")
async def consume(stream):
    async for _ in stream:
        pass


if os.environ.get("SECRET_TEST_REDIS_CHANNEL"):
    @app.agent(app.redis_channel("secret-stream"), name="consume_redis")
    async def consume_redis(stream):
        async for _ in stream:
            pass
'''


@pytest.fixture
def secret_app(tmp_path):
    """Write the app module; returns a function that runs ``sabot ... worker`` on it."""
    (tmp_path / "secret_app.py").write_text(SECRET_APP)

    def env_for(settings, redis_channel=False):
        env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}",
               "SECRET_TEST_SECRET": SECRET, "SECRET_TEST_SETTINGS": repr(settings),
               "SECRET_TEST_APP_ID": "secret-" + uuid.uuid4().hex[:8]}
        if redis_channel:
            env["SECRET_TEST_REDIS_CHANNEL"] = "1"
        return env

    def run(settings, *args, redis_channel=False, timeout=60):
        proc = subprocess.run([sys.executable, "-m", "sabot", "-A", "secret_app", "worker",
                               "-l", "debug", *args], cwd=str(tmp_path),
                              env=env_for(settings, redis_channel), capture_output=True,
                              timeout=timeout, check=False)
        return proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")

    def start(settings, *args, redis_channel=False):
        with open(tmp_path / "worker.log", "wb") as log:
            return subprocess.Popen([sys.executable, "-m", "sabot", "-A", "secret_app", "worker",
                                     "-l", "debug", *args], cwd=str(tmp_path),
                                    env=env_for(settings, redis_channel), stdout=log,
                                    stderr=subprocess.STDOUT)

    run.start = start
    run.log = tmp_path / "worker.log"
    return run


def assert_one_line_failure(code, out, err, fragment):
    text = out + err
    assert code != 0, text
    assert "Traceback" not in text, text
    failures = [line for line in text.splitlines()
                if line.startswith("Error:") or "worker could not start" in line]
    assert len(failures) == 1 and fragment in failures[0], text


@pytest.mark.parametrize("broker", BROKERS)
@pytest.mark.parametrize("planted", ACCEPTED)
def test_cli_worker_against_an_unreachable_broker(secret_app, broker, planted):
    settings = dict(broker=BROKERS[broker].format(port=closed_port()), **ACCEPTED[planted])
    code, out, err = secret_app(settings)
    assert_one_line_failure(code, out, err, "cannot reach")
    assert_clean(out + err, "the output of sabot worker")


@pytest.mark.redis
@pytest.mark.parametrize("form", ["broker userinfo", "broker query", "redis_url userinfo",
                                  "redis_url query"])
def test_cli_worker_against_redis_with_a_wrong_password(secret_app, redis_auth_server, form):
    port = redis_auth_server.port
    url = (f"redis://:{Q}@127.0.0.1:{port}/0" if form.endswith("userinfo")
           else f"redis://127.0.0.1:{port}/0?password={Q}")
    settings = ({"broker": url} if form.startswith("broker")
                else {"redis_url": url, "sasl_password": SECRET})
    code, out, err = secret_app(settings, redis_channel=form.startswith("redis_url"))
    assert_one_line_failure(code, out, err, "refused the credentials")
    assert_clean(out + err, "the output of sabot worker")


@pytest.mark.parametrize("settings, fragment", [
    ({"broker": f"kafkaa://alice:{Q}@127.0.0.1:9092"}, "unknown scheme 'kafkaa'"),
    ({"broker": f"kafka//alice:{Q}@127.0.0.1:9092"}, "no scheme"),
    ({"redis_url": f"kafkaa://alice:{Q}@127.0.0.1:9092"}, "kafkaa"),
    ({"broker": f"redis://:{Q}@127.0.0.1:notaport/0"}, "port"),
    ({"redis_url": f"redis://:{Q}@127.0.0.1:99999/0"}, "port"),
    ({"broker": f"redis://:{SECRET}@127.0.0.1:6379/0"}, "redis"),
    ({"sasl_password": INT_SECRET}, "'sasl_password' has a value of the wrong type (int"),
    ({"sasl_password": SECRET.encode()}, "'sasl_password' has a value of the wrong type (bytes"),
    ({"broker_credentials": ["alice", SECRET]}, "'broker_credentials' has a value of the wrong type"),
    ({"ssl_context": SECRET}, "'ssl_context' has a value of the wrong type (str"),
])
def test_cli_worker_with_a_bad_setting(secret_app, settings, fragment):
    code, out, err = secret_app(settings, redis_channel="redis_url" in settings)
    assert_one_line_failure(code, out, err, fragment)
    assert_clean(out + err, "the output of sabot worker", secrets=(SECRET, INT_SECRET))


BAD_KAFKA_PORT = {"broker": f"kafka://alice:{Q}@127.0.0.1:notaport", "sasl_password": SECRET}


def test_cli_worker_with_a_bad_kafka_port_shows_no_secret(secret_app):
    code, out, err = secret_app(BAD_KAFKA_PORT)
    assert code != 0, out + err
    assert_clean(out + err, "the output of sabot worker")


def test_cli_worker_with_a_bad_kafka_port_is_one_line(secret_app):
    code, out, err = secret_app(BAD_KAFKA_PORT)
    assert_one_line_failure(code, out, err, "port")


#: A password not percent-encoded whose characters NFKC-normalize to a URL
#: delimiter: urllib's error for it quotes the whole netloc, password included.
NFKC_SECRET = SECRET.replace("/", "\uff03")  # FULLWIDTH NUMBER SIGN -> '#'


def test_a_url_urllib_refuses_is_not_echoed_by_the_scheme_check():
    url = f"kafka://alice:{NFKC_SECRET}@127.0.0.1:9092"
    try:
        app = sabot.App("secrets", broker=url)
    except ValueError as exc:
        assert_clean(str(exc), "the error")
    else:
        for where, text in texts_of(app).items():
            assert_clean(text, where)


def test_a_redis_url_urllib_refuses_is_not_echoed():
    url = f"redis://:{NFKC_SECRET}@127.0.0.1:6379/0"
    with pytest.raises(ValueError) as info:
        sabot.App("secrets", redis_url=url).redis_channel("s")
    assert_clean(str(info.value), "the error")


# -- a running worker: /metrics, /health, its whole log ------------------------------------

@pytest.mark.redis
@pytest.mark.parametrize("form", ["broker userinfo", "redis_url query"])
def test_a_running_worker_shows_the_secret_nowhere(secret_app, redis_server_factory, form):
    server = redis_server_factory(password=SECRET)
    port = server.port
    if form == "broker userinfo":
        settings = {"broker": f"redis://:{Q}@127.0.0.1:{port}/0", "sasl_password": SECRET,
                        "broker_credentials": ("alice", SECRET)}
    else:
        settings = {"redis_url": f"redis://127.0.0.1:{port}/0?password={Q}",
                        "sasl_password": SECRET, "ssl_context": "secret-context"}
    web_port = free_port()
    proc = secret_app.start(settings, "--web-port", str(web_port),
                            redis_channel=form.startswith("redis_url"))
    bodies = []
    try:
        def healthy():
            assert proc.poll() is None, secret_app.log.read_text()
            got = http_get(web_port, "/health")
            return got is not None and got[0] == 200
        until_sync(healthy, 30, lambda: secret_app.log.read_text(), interval=0.1)
        # a status line, whose text is scanned with the rest of the log
        until_sync(lambda: "status:" in secret_app.log.read_text(), 30,
                   lambda: f"a status line:\n{secret_app.log.read_text()}", interval=0.1)
        for path in ("/health", "/metrics", "/nope", "/metrics?password=x"):
            bodies.append(f"{path}: {http_get(web_port, path)}")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    log = secret_app.log.read_text()
    assert proc.returncode == 0, log
    assert "sabot_agent_events_in_total" in "\n".join(bodies)
    assert "status:" in log and "stopped after" in log
    assert_clean("\n".join(bodies), "the HTTP responses")
    assert_clean(log, "the worker's output")
