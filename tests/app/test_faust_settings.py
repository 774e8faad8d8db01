"""Every Faust app setting is accepted: with Faust's meaning, or with a warning naming it."""
import os
import subprocess
import sys
import textwrap
import warnings

import pytest

import sabot
from sabot.channels.kafka import client_settings
from sabot.exceptions import ConfigurationError, SabotCompatibilityWarning
from sabot.faust_settings import UNSUPPORTED
from sabot.settings import DEFAULTS
from sabot.worker import FAUST_WEB_PORT, Worker
from tests.helpers import unique

faust = pytest.importorskip("faust")
from faust.types.settings.settings import Settings as FaustSettings  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FAUST_NAMES = sorted(FaustSettings.setting_names())


def test_every_faust_setting_is_either_sabots_or_warned_about():
    missing = [n for n in FAUST_NAMES if n not in DEFAULTS and n not in UNSUPPORTED]
    assert missing == []
    # A name is one or the other: a setting Sabot gained must leave the warned list.
    assert set(DEFAULTS) & set(UNSUPPORTED) == set()


@pytest.fixture(scope="module")
def faust_conf():
    return faust.App("probe").conf


@pytest.mark.parametrize("name", [n for n in FAUST_NAMES if n not in ("id", "broker")])
def test_faust_default_value_of_each_setting_is_accepted(name, faust_conf):
    value = getattr(faust_conf, name)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        app = sabot.App("x", **{name: value})
    names = [str(w.message) for w in caught if issubclass(w.category, SabotCompatibilityWarning)]
    if name in UNSUPPORTED:
        assert len(names) == 1 and repr(name) in names[0] and "no effect" in names[0]
        assert app.conf.get(name) is value  # kept, for code that reads it
    else:
        assert names == []


def test_a_typo_is_still_refused_with_the_closest_name():
    with pytest.raises(ConfigurationError, match="did you mean 'web_port'"):
        sabot.App("x", web_prot=6066)


def test_version_makes_a_new_isolated_app_id():
    assert sabot.App("orders").id == "orders"
    assert sabot.App("orders", version=3).id == "orders-v3"
    with pytest.raises(ConfigurationError, match="version"):
        sabot.App("orders", version=0)


def test_processing_guarantee_accepts_fausts_enum_and_exactly_once_without_warning():
    from faust.types.enums import ProcessingGuarantee
    app = sabot.App("x", processing_guarantee=ProcessingGuarantee.AT_LEAST_ONCE)
    assert app.conf.processing_guarantee == "at_least_once"
    import warnings
    with warnings.catch_warnings():  # built on Kafka and Redis (tests/eos/)
        warnings.simplefilter("error", SabotCompatibilityWarning)
        app = sabot.App("x", broker="kafka://127.0.0.1:1",
                        processing_guarantee=ProcessingGuarantee.EXACTLY_ONCE)
        assert app.conf.processing_guarantee == "exactly_once"
        sabot.App("x", redis_url="redis://127.0.0.1:1", processing_guarantee="exactly_once")
    with pytest.raises(ConfigurationError, match="processing_guarantee"):
        sabot.App("x", processing_guarantee="at_most_once")


def test_app_serializers_are_the_default_of_its_topics(tmp_path):
    app = sabot.App("x", broker="kafka://127.0.0.1:1", value_serializer="raw", key_serializer="json")
    topic = app.topic("t")
    assert topic.codec.name == "raw" and topic.key_codec.name == "json"
    assert app.topic("u", value_serializer="arrow").codec.name == "arrow"


def test_kafka_client_settings_reach_aiokafka_with_its_names():
    conf = sabot.App("x", producer_acks=1, producer_compression_type="gzip", producer_linger=0.5,
                     broker_client_id="me", broker_max_poll_records=7,
                     consumer_group_instance_id="w-1", broker_rebalance_timeout=30.0).conf
    producer = client_settings(conf, "producer")
    assert producer == {"acks": 1, "compression_type": "gzip", "linger_ms": 500, "client_id": "me"}
    consumer = client_settings(conf, "consumer")
    assert consumer == {"max_poll_records": 7, "group_instance_id": "w-1",
                        "rebalance_timeout_ms": 30000, "check_crcs": True, "client_id": "me"}
    assert client_settings(sabot.App("y").conf, "producer") == {"acks": "all"}


@pytest.mark.kafka
async def test_compressed_producer_round_trips_on_the_broker(kafka_broker):
    from tests.helpers import collector, running, until
    app = sabot.App(unique("gz"), broker=f"kafka://{kafka_broker}", producer_compression_type="gzip",
                    broker_session_timeout=3.0, broker_heartbeat_interval=0.5)
    topic = app.topic(unique("gz"))
    seen = collector(app, topic)
    async with running(app):
        for i in range(20):
            await topic.send(value={"i": i})
        await until(lambda: len(seen) == 20, timeout=30.0, what="20 gzip values")
    assert sorted(v["i"] for v in seen) == list(range(20))


def test_web_settings_choose_the_workers_port():
    assert Worker(sabot.App("x")).web_port is None
    assert Worker(sabot.App("x", web_port=8123)).web_port == 8123
    assert Worker(sabot.App("x", web_enabled=True)).web_port == FAUST_WEB_PORT
    assert Worker(sabot.App("x", web_enabled=False, web_port=8123)).web_port is None
    assert Worker(sabot.App("x", web_port=8123), web_port=9000).web_port == 9000


PACKAGE = {
    "__init__.py": "",
    "app.py": textwrap.dedent('''
        import sabot
        app = sabot.App("disco", autodiscover=True)
    '''),
    "agents.py": textwrap.dedent('''
        from .app import app

        @app.agent()
        async def found(stream):
            async for value in stream:
                pass

        @app.command()
        async def hello():
            print("hello from a discovered module")
    '''),
    "sub/__init__.py": "",
    "sub/more.py": textwrap.dedent('''
        from ..app import app

        @app.agent()
        async def deeper(stream):
            async for value in stream:
                pass
    '''),
}


@pytest.fixture
def package(tmp_path):
    name = unique("discopkg").replace("-", "_")
    for path, text in PACKAGE.items():
        target = tmp_path / name / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    return tmp_path, name


def run_cli(cwd, *args):
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-m", "sabot", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)


def test_autodiscover_imports_the_apps_modules(package):
    cwd, name = package
    done = run_cli(cwd, "-A", f"{name}.app:app", "agents")
    assert done.returncode == 0, done.stderr
    assert "found" in done.stdout and "deeper" in done.stdout
    done = run_cli(cwd, "-A", f"{name}.app:app", "hello")
    assert done.returncode == 0, done.stderr
    assert "hello from a discovered module" in done.stdout


def test_autodiscover_a_list_and_errors_name_the_module(package):
    cwd, name = package
    sys.path.insert(0, str(cwd))
    try:
        app = sabot.App("disco2", autodiscover=[f"{name}.sub"])
        assert app.discover() == [f"{name}.sub", f"{name}.sub.more"]
        bad = sabot.App("disco3", autodiscover=[f"{name}.nosuch"])
        with pytest.raises(ConfigurationError, match=f"no module named '{name}.nosuch'"):
            bad.maybe_discover()
    finally:
        sys.path.remove(str(cwd))


def test_autodiscover_true_without_origin_in_main_is_a_clear_error(tmp_path):
    script = tmp_path / "main_app.py"
    script.write_text("import sabot\napp = sabot.App('m', autodiscover=True)\n"
                      "if __name__ == '__main__':\n    app.main()\n")
    env = dict(os.environ, PYTHONPATH=ROOT)
    done = subprocess.run([sys.executable, str(script), "agents"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode != 0
    assert "autodiscover=True needs origin=" in done.stderr and "Traceback" not in done.stderr


def test_fausts_kafka_driver_schemes_and_default_host():
    from sabot.channels.kafka import KafkaTransport
    for url in ("aiokafka://h:9093", "confluent://h:9093"):
        transport = sabot.App("x", broker=url).transport
        assert isinstance(transport, KafkaTransport) and transport.servers == ["h:9093"]
    assert sabot.App("x", broker="kafka://").transport.servers == ["localhost:9092"]
