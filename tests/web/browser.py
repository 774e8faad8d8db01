"""A real headless Chromium driven over the DevTools protocol, for the status page tests.

Debian's ``chromium`` package (``.ci/run`` installs it). The protocol is
JSON over a WebSocket; aiohttp's client speaks WebSocket, so nothing else is
needed. Without a Chromium the tests skip, except under ``CI=true`` where
they fail (a CI that cannot run them must say so).
"""
import asyncio
import contextlib
import itertools
import json
import os
import re
import shutil
import subprocess

import aiohttp
import pytest

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def chromium_binary():
    """The path of a Chromium on PATH; skips (or fails under CI=true) when there is none."""
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    message = "no chromium on PATH (apt-get install chromium)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


class Page:
    """One browser tab: navigate, then evaluate JavaScript in it."""

    def __init__(self, ws):
        self.ws = ws
        self._ids = itertools.count(1)

    async def call(self, method, **params):
        """Send a DevTools command; its result (events in between are skipped)."""
        msg_id = next(self._ids)
        await self.ws.send_json({"id": msg_id, "method": method, "params": params})
        while True:
            msg = await asyncio.wait_for(self.ws.receive(), 30)
            if msg.type != aiohttp.WSMsgType.TEXT:
                raise RuntimeError(f"DevTools connection closed: {msg!r}")
            data = json.loads(msg.data)
            if data.get("id") == msg_id:
                if "error" in data:
                    raise RuntimeError(f"{method}: {data['error']}")
                return data.get("result", {})

    async def navigate(self, url):
        await self.call("Page.navigate", url=url)

    async def evaluate(self, expression):
        """The value of a JavaScript expression in the page (JSON-able)."""
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")


@contextlib.asynccontextmanager
async def browser_page(tmp_path):
    """A headless Chromium with one blank tab; yields its ``Page``, kills it on the way out."""
    binary = chromium_binary()
    proc = await asyncio.create_subprocess_exec(
        binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-extensions", "--disable-dev-shm-usage", "--remote-debugging-port=0",
        f"--user-data-dir={tmp_path / 'chromium-profile'}", "about:blank",
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        seen = []

        async def devtools_port():
            while True:
                line = await proc.stderr.readline()
                if not line:
                    raise RuntimeError("chromium exited:\n" + "".join(seen))
                text = line.decode(errors="replace")
                seen.append(text)
                found = re.search(r"DevTools listening on ws://[^:]+:(\d+)/", text)
                if found:
                    return int(found.group(1))
        port = await asyncio.wait_for(devtools_port(), 30)
        drain = asyncio.ensure_future(proc.stderr.read())  # keep the pipe from filling
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/json/list") as resp:
                targets = await resp.json()
            page_target = next(t for t in targets if t["type"] == "page")
            async with session.ws_connect(page_target["webSocketDebuggerUrl"],
                                          max_msg_size=0) as ws:
                yield Page(ws)
        drain.cancel()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
