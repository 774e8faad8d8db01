"""The fast path in use is the one asked for: a silent fallback fails here."""
import os

import pytest

import sabot
from sabot import _fastpath


def test_extension_is_loaded_unless_pure_python_was_asked_for():
    pure = os.environ.get("SABOT_PURE_PYTHON", "") not in ("", "0", "false", "no")
    if pure:
        assert not sabot.fastpath_enabled()
        assert _fastpath.Batch.__module__ == "sabot._cython.channels_py"
    else:
        assert _fastpath.IMPORT_ERROR is None, f"extension failed to import: {_fastpath.IMPORT_ERROR}"
        assert sabot.fastpath_enabled()
        assert _fastpath.Batch.__module__ == "sabot._cython.channels"


PURE = os.environ.get("SABOT_PURE_PYTHON", "") not in ("", "0", "false", "no")
#: What only the compiled iterators have: the awaitable protocol they implement.
AWAITABLE = {"send", "throw", "close"}


def _compiled():
    try:
        from sabot._cython import channels
    except ImportError as exc:
        if PURE:
            pytest.skip(f"pure-Python run and the extension is not built: {exc}")
        pytest.fail(f"the compiled module is expected but does not import: {exc}")
    return channels


def _public(cls):
    return {n for n in dir(cls) if not n.startswith("_")}


def test_twins_expose_the_same_api():
    from sabot._cython import channels_py
    compiled = _compiled()
    assert channels_py.__all__ == compiled.__all__
    for name in channels_py.__all__:
        py_cls, c_cls = getattr(channels_py, name), getattr(compiled, name)
        assert _public(py_cls) - _public(c_cls) == set(), (name, _public(py_cls) - _public(c_cls))
        assert _public(c_cls) - _public(py_cls) - AWAITABLE == set(), (
            name, _public(c_cls) - _public(py_cls))


def test_the_stub_names_what_the_twins_define():
    """sabot/_cython/channels.pyi is what mypy reads for both: it must not drift."""
    import ast
    from sabot._cython import channels_py
    stub = os.path.join(os.path.dirname(channels_py.__file__), "channels.pyi")
    tree = ast.parse(open(stub, encoding="utf-8").read())
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    assert set(channels_py.__all__) <= set(classes)
    def members(cls_name):
        node = classes[cls_name]
        names = set()
        for base in node.bases:
            if isinstance(base, ast.Name) and base.id in classes:
                names |= members(base.id)
        for item in node.body:
            if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                names.add(item.name)
            elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                names.add(item.target.id)
        return names

    for name in channels_py.__all__:
        stubbed = members(name)
        missing = {n for n in _public(getattr(channels_py, name)) if n not in stubbed}
        assert missing == set(), (name, missing)


def test_rows_twins_expose_the_same_api_and_answer_alike():
    from sabot._cython import rows_py
    try:
        from sabot._cython import rows
    except ImportError as exc:
        if PURE:
            pytest.skip(f"pure-Python run and the extension is not built: {exc}")
        raise
    assert rows_py.__all__ == rows.__all__ == ["TASK_STREAMS", "current_row"]
    # Outside a running loop, and in a task that iterates no stream: None.
    assert rows.current_row() is None and rows_py.current_row() is None
    if not PURE:
        assert _fastpath.current_row is rows.current_row
        assert _fastpath.TASK_STREAMS is rows.TASK_STREAMS


async def test_current_row_names_the_value_in_hand_in_both_twins():
    import asyncio
    seen = []

    app = sabot.App("rows")
    channel = app.channel()

    @app.agent(channel)
    async def hold(stream):
        async for value in stream:
            stream_, batch, index, single = _fastpath.current_row()
            seen.append((batch.rows()[index], single, stream_ is stream))

    assert await asyncio.get_running_loop().run_in_executor(None, _fastpath.current_row) is None
    await app.start()
    try:
        await channel.send_batch([10, 11, 12])
        for _ in range(200):
            if len(seen) == 3:
                break
            await asyncio.sleep(0.01)
    finally:
        await app.stop()
    assert seen == [(10, True, True), (11, True, True), (12, True, True)]
