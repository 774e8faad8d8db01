"""Sabot: streaming agents for Python, Faust's API on Apache Arrow.

>>> import sabot
>>> app = sabot.App("demo")
"""
from typing import TYPE_CHECKING, Any

from ._fastpath import fastpath_enabled
from .exceptions import (ConfigurationError, SabotError, SchemaError,
                         ChannelClosed, DecodeError, AgentError)

if TYPE_CHECKING:  # what __getattr__ below returns, for mypy
    from .app import App
    from .tables.context import current_event
    from .types import Event
    from .windows.specs import hopping, session, sliding, tumbling

#: Arrow windows (``stream.window(tumbling(60), ...)``); aggregations are in sabot.windows.
_WINDOW_SPECS = ("tumbling", "hopping", "sliding", "session")

__version__ = "0.1.0"

__all__ = ["App", "fastpath_enabled", "SabotError", "ConfigurationError",
           "SchemaError", "ChannelClosed", "DecodeError", "AgentError",
           "Event", "current_event", "__version__",
           # Arrow windows (sabot.windows)
           "tumbling", "hopping", "sliding", "session"]


def __getattr__(name: str) -> Any:
    # Imported lazily so that `import sabot` stays cheap for worker processes.
    if name == "App":
        from .app import App
        return App
    if name == "Event":
        from .types import Event
        return Event
    if name == "current_event":
        from .tables.context import current_event
        return current_event
    if name in _WINDOW_SPECS:
        from .windows import specs
        return getattr(specs, name)
    raise AttributeError(f"module 'sabot' has no attribute {name!r}")
