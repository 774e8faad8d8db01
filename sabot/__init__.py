"""Sabot: streaming agents for Python, Faust's API on Apache Arrow.

>>> import sabot
>>> app = sabot.App("demo")
"""
from typing import TYPE_CHECKING, Any

from ._fastpath import fastpath_enabled
from .exceptions import (ConfigurationError, SabotError, SchemaError,
                         ChannelClosed, DecodeError, AgentError)
from .models import (BooleanField, BytesField, CharField, DatetimeField, DecimalField,
                     FieldDescriptor, FloatField, IntegerField, Model, ModelOptions,
                     NumberField, Record, StringField, ValidationError)

if TYPE_CHECKING:  # what __getattr__ below returns, for mypy
    from mode import Service, ServiceT
    from .agents import Agent
    from .app import App
    from .codecs import Codec
    from .settings import Settings
    from .tables import GlobalTable, SetGlobalTable, SetTable, Table
    from .tables.window_ranges import HoppingWindow, SlidingWindow, TumblingWindow, Window
    from .channels import Channel
    from .streams import Stream
    from .tables.context import CurrentEvent as EventT
    from .types import AgentT, AppT, ChannelT, SinkT, StreamT
    from .types import ChannelT as TopicT
    from .worker import Worker
    from .tables.context import current_event
    from .types import Event
    from .windows.specs import hopping, session, sliding, tumbling

#: Arrow windows (``stream.window(tumbling(60), ...)``); aggregations are in sabot.windows.
_WINDOW_SPECS = ("tumbling", "hopping", "sliding", "session")

__version__ = "0.1.0"

__all__ = ["App", "fastpath_enabled", "SabotError", "ConfigurationError",
           "SchemaError", "ChannelClosed", "DecodeError", "AgentError",
           "Event", "current_event", "__version__", "uuid",
           # Faust's top-level classes and interfaces
           "Stream", "Channel", "Worker", "Service", "ChannelT", "StreamT", "AgentT", "AppT",
           "SinkT", "EventT", "TopicT", "ServiceT", "Agent", "Codec", "Settings",
           "Table", "GlobalTable", "SetTable", "SetGlobalTable",
           "Window", "HoppingWindow", "TumblingWindow", "SlidingWindow",
           # Faust's models (sabot.models)
           "Record", "Model", "ModelOptions", "ValidationError", "FieldDescriptor",
           "BooleanField", "NumberField", "IntegerField", "FloatField", "DecimalField",
           "CharField", "StringField", "BytesField", "DatetimeField",
           # Arrow windows (sabot.windows)
           "tumbling", "hopping", "sliding", "session"]


#: Faust's top-level names, imported on first use: name -> (module, attribute).
_LAZY = {
    "Stream": ("sabot.streams", "Stream"),
    "Channel": ("sabot.channels", "Channel"),
    "Worker": ("sabot.worker", "Worker"),
    "Service": ("mode", "Service"),
    "ChannelT": ("sabot.types", "ChannelT"),
    "StreamT": ("sabot.types", "StreamT"),
    "AgentT": ("sabot.types", "AgentT"),
    "AppT": ("sabot.types", "AppT"),
    "SinkT": ("sabot.types", "SinkT"),
    "EventT": ("sabot.tables.context", "CurrentEvent"),
    # Faust's TopicT is a ChannelT; Sabot's topics are channels of their broker.
    "TopicT": ("sabot.types", "ChannelT"),
    "ServiceT": ("mode", "ServiceT"),
    "Agent": ("sabot.agents", "Agent"),
    "Codec": ("sabot.codecs", "Codec"),
    "Settings": ("sabot.settings", "Settings"),
    "Table": ("sabot.tables", "Table"),
    "GlobalTable": ("sabot.tables", "GlobalTable"),
    "SetTable": ("sabot.tables", "SetTable"),
    "SetGlobalTable": ("sabot.tables", "SetGlobalTable"),
    "Window": ("sabot.tables.window_ranges", "Window"),
    "HoppingWindow": ("sabot.tables.window_ranges", "HoppingWindow"),
    "TumblingWindow": ("sabot.tables.window_ranges", "TumblingWindow"),
    "SlidingWindow": ("sabot.tables.window_ranges", "SlidingWindow"),
}


def uuid() -> str:
    """A new random UUID as a string (Faust's ``faust.uuid``)."""
    import uuid as _uuid
    return str(_uuid.uuid4())


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
    if name in _LAZY:
        import importlib
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    if name in _WINDOW_SPECS:
        from .windows import specs
        return getattr(specs, name)
    raise AttributeError(f"module 'sabot' has no attribute {name!r}")
