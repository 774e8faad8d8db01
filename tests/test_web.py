"""Where the worker's web server listens: ``web_bind`` and ``--web-bind`` (issue 10, point 5).

Sabot listens on 127.0.0.1 unless told otherwise (Faust binds every
interface). 127.0.0.2 is another address of this machine (all of 127/8 is
the loopback interface on Linux): a server bound to 127.0.0.1 cannot be
reached there, one bound to 0.0.0.0 can.
"""
import os
import signal
import socket
import subprocess
import sys

import pytest

import sabot
from sabot.exceptions import ConfigurationError
from sabot.worker import Worker
from tests.helpers import until_sync
from tests.servers import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: An app whose web_bind setting comes from the environment (unset: the default).
BIND_APP = '''\
import os

import sabot

settings = {}
if os.environ.get("BIND_TEST_WEB_BIND"):
    settings["web_bind"] = os.environ["BIND_TEST_WEB_BIND"]
app = sabot.App("bind-test", shutdown_timeout=3.0, **settings)


@app.agent(app.channel(name="in"), name="idle")
async def idle(stream):
    async for _ in stream:
        pass
'''


def can_connect(host, port):
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def loopback_alias_works():
    """True when 127.0.0.2 reaches this machine (so it can tell the two binds apart)."""
    with socket.socket() as server:
        try:
            server.bind(("0.0.0.0", 0))
        except OSError:
            return False
        server.listen()
        return can_connect("127.0.0.2", server.getsockname()[1])


@pytest.fixture
def bind_worker(tmp_path):
    """Start ``sabot worker --web-port P ARGS`` on BIND_APP; yields ``start(args, setting)``."""
    (tmp_path / "bind_app.py").write_text(BIND_APP)
    procs = []

    def start(*args, setting=None):
        env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"}
        if setting:
            env["BIND_TEST_WEB_BIND"] = setting
        log_path = tmp_path / f"worker{len(procs)}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen([sys.executable, "-m", "sabot", "-A", "bind_app", "worker",
                                     *args], cwd=str(tmp_path), env=env, stdout=log,
                                    stderr=subprocess.STDOUT)
        proc.log_path = log_path
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def wait_listening(proc, port):
    """Wait for the 'metrics on' log line; the log so far."""
    def listening():
        log = proc.log_path.read_text(errors="replace")
        if "metrics on " in log:
            return log
        assert proc.poll() is None, log
    return until_sync(listening, 30, lambda: proc.log_path.read_text(errors="replace"),
                      interval=0.05)


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0, proc.log_path.read_text(errors="replace")
    return proc.log_path.read_text(errors="replace")


# -- the setting ----------------------------------------------------------------------

def test_web_bind_defaults_to_the_loopback_address():
    assert sabot.App("a").conf.web_bind == "127.0.0.1"


@pytest.mark.parametrize("value", ["0.0.0.0", "127.0.0.1", "::1", "::", "localhost", "metrics.internal"])
def test_web_bind_takes_an_address_or_a_host_name(value):
    assert sabot.App("a", web_bind=value).conf.web_bind == value


@pytest.mark.parametrize("value", ["", "999.1.1.1", "1.2.3.4.5", "not an address", "-x", 80, None])
def test_a_bad_web_bind_is_a_one_line_error_naming_it(value):
    with pytest.raises(ConfigurationError) as info:
        sabot.App("a", web_bind=value)
    assert "web_bind" in str(info.value) and "\n" not in str(info.value)


# -- the server itself ------------------------------------------------------------------

@pytest.mark.parametrize("setting, override, bound", [
    (None, None, "127.0.0.1"),
    ("0.0.0.0", None, "0.0.0.0"),
    ("0.0.0.0", "127.0.0.1", "127.0.0.1"),  # the command line wins over the setting
])
async def test_the_listening_socket_is_where_web_bind_says(setting, override, bound):
    app = sabot.App("a", **({"web_bind": setting} if setting else {}))
    worker = Worker(app, web_port=0, web_bind=override, configure_logging=False)
    await worker._start_web()
    try:
        port = worker.web.port
        assert worker.web.addresses == [(bound, port)]
        assert f"web:      {bound}:{port}" in worker.banner()
        assert can_connect("127.0.0.1", port)
    finally:
        await worker.web.stop()


def test_the_banner_names_the_address_and_port_before_the_start():
    assert "web:      127.0.0.1:9100" in Worker(sabot.App("a"), web_port=9100).banner()
    assert "web:      [::1]:9100" in Worker(sabot.App("a"), web_port=9100, web_bind="::1").banner()
    assert "web:      off" in Worker(sabot.App("a"), web_bind="0.0.0.0").banner()


# -- the real command ------------------------------------------------------------------------

def test_sabot_worker_listens_on_127_0_0_1_by_default(bind_worker):
    port = free_port()
    proc = bind_worker("--web-port", str(port))
    log = wait_listening(proc, port)
    assert f"metrics on http://127.0.0.1:{port}/metrics" in log
    assert f"web:      127.0.0.1:{port}" in log
    assert "0.0.0.0" not in log
    assert can_connect("127.0.0.1", port)
    if loopback_alias_works():
        assert not can_connect("127.0.0.2", port)
    stop(proc)


def test_sabot_worker_web_bind_0_0_0_0_listens_everywhere(bind_worker):
    port = free_port()
    proc = bind_worker("--web-port", str(port), "--web-bind", "0.0.0.0")
    log = wait_listening(proc, port)
    assert f"metrics on http://0.0.0.0:{port}/metrics" in log
    assert can_connect("127.0.0.1", port)
    if loopback_alias_works():
        assert can_connect("127.0.0.2", port)
    stop(proc)


def test_sabot_worker_takes_the_setting_and_the_option_overrides_it(bind_worker):
    port = free_port()
    proc = bind_worker("--web-port", str(port), setting="0.0.0.0")
    assert f"metrics on http://0.0.0.0:{port}/metrics" in wait_listening(proc, port)
    stop(proc)
    port = free_port()
    proc = bind_worker("--web-port", str(port), "-b", "127.0.0.1", setting="0.0.0.0")
    assert f"metrics on http://127.0.0.1:{port}/metrics" in wait_listening(proc, port)
    stop(proc)


def one_line_error(proc):
    proc.wait(30)
    out = proc.log_path.read_text(errors="replace")
    assert proc.returncode != 0, out
    assert "Traceback" not in out, out
    errors = [line for line in out.splitlines()
              if line.startswith("Error:") or "worker could not start" in line]
    assert len(errors) == 1, out
    return proc.returncode, errors[0]


@pytest.mark.parametrize("value", ["999.1.1.1", "not an address", "::1::2"])
def test_a_bad_web_bind_option_is_one_line_and_exit_2(bind_worker, value):
    code, line = one_line_error(bind_worker("--web-port", str(free_port()), "--web-bind", value))
    assert code == 2 and "--web-bind" in line and repr(value) in line, line


def test_a_bad_web_bind_setting_is_one_line(bind_worker):
    code, line = one_line_error(bind_worker("--web-port", str(free_port()), setting="999.1.1.1"))
    assert code == 1 and "web_bind" in line and "999.1.1.1" in line, line


def test_an_address_of_another_machine_is_one_line_and_exit_1(bind_worker):
    port = free_port()
    code, line = one_line_error(bind_worker("-l", "warning", "--web-port", str(port),
                                            "--web-bind", "192.0.2.1"))  # TEST-NET-1
    assert code == 1, line
    assert f"cannot serve metrics on port {port} of 192.0.2.1" in line, line
