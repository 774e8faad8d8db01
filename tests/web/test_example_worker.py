"""``examples/web_views.py`` as a real ``sabot worker`` process, asked over HTTP.

Its pages answer, bad input is refused with a 400 that says why, a view
that raises answers 500 without its details, and the worker goes on
serving and stops cleanly on SIGTERM.
"""
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request

from tests.helpers import http_get, until_sync
from tests.servers import free_port
from tests.test_worker import read

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

#: The example with one more page: a view that fails with a secret in its error.
FAILING_PAGE = '''
import runpy, sys
sys.argv[0] = {example!r}
namespace = runpy.run_path({example!r}, run_name="web_views_example")
app = namespace["app"]

@app.page("/fail")
async def fail(self, request):
    raise RuntimeError("token=sk-live-0123456789 refused")

app.main()
'''


def request(port, method, path, body=None):
    """``(status, parsed JSON body)``."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method, data=body)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_the_example_worker_serves_its_pages_and_survives_a_failing_view(tmp_path):
    script = tmp_path / "with_failing_page.py"
    script.write_text(FAILING_PAGE.format(example=os.path.join(ROOT, "examples", "web_views.py")))
    port = free_port()
    log_path = tmp_path / "worker.log"
    env = {**os.environ, "SABOT_DEMO_SENTENCES": "50", "PYTHONPATH": ROOT}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, str(script), "worker", "-l", "info",
                                 "--web-port", str(port)], cwd=tmp_path, env=env,
                                stdout=log, stderr=subprocess.STDOUT)
    try:
        def counted():
            assert proc.poll() is None, read(log_path)
            got = http_get(port, "/count/stream/")
            return got and got[0] == 200 and json.loads(got[1])["count"] > 0 and got
        until_sync(counted, 60, lambda: read(log_path), interval=0.1)
        status, top = request(port, "GET", "/words/?top=3")
        assert status == 200 and len(top["top"]) == 3
        assert request(port, "GET", "/words/?top=many") == (
            400, {"error": "top must be a whole number"})
        assert request(port, "POST", "/words/", b"not json")[0] == 400
        assert request(port, "POST", "/words/", b'{"text": ""}') == (
            400, {"error": 'give a non-empty string in "text"'})
        assert request(port, "POST", "/words/", b'{"text": "zebra zebra"}') == (
            202, {"accepted": 2})
        until_sync(lambda: request(port, "GET", "/count/zebra/")[1]["count"] == 2, 20,
                   lambda: read(log_path))
        assert request(port, "GET", "/admin/ping") == (
            200, {"pong": True, "count_url": "/count/stream/"})
        for _ in range(3):
            assert request(port, "GET", "/fail") == (500, {"error": "Internal server error."})
        assert request(port, "GET", "/health")[0] == 200
        assert request(port, "GET", "/count/zebra/") == (200, {"word": "zebra", "count": 2})
        status, page = http_get(port, "/")
        assert status == 200 and "<title>Sabot status</title>" in page
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, read(log_path)
        log = read(log_path)
        assert log.count("view fail failed on GET /fail: RuntimeError") == 3, log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
