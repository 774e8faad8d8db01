"""The fast path in use is the one asked for: a silent fallback fails here."""
import os

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


def test_twins_expose_the_same_api():
    from sabot._cython import channels_py
    try:
        from sabot._cython import channels as compiled
    except ImportError:
        return
    for name in channels_py.__all__:
        py_cls, c_cls = getattr(channels_py, name), getattr(compiled, name)
        py_public = {n for n in dir(py_cls) if not n.startswith("_")}
        c_public = {n for n in dir(c_cls) if not n.startswith("_")}
        # The compiled iterators add the awaitable protocol (send/throw/close).
        assert py_public - c_public == set(), (name, py_public - c_public)
