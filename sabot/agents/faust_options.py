"""Faust's ``@app.agent`` options Sabot takes as Faust means them, or warns about.

* ``on_error``: a string is Sabot's policy (``"dead_letter"``, ...); a
  callable is Faust's error handler, awaited as ``on_error(agent, exc)`` for
  every failure, after which Sabot's default policy (dead letter) applies.
* ``schema``: Faust's ``Schema`` gives the ``key_type``/``value_type`` of
  the topic the agent makes (its serializers too).
* ``help``: kept on the agent (``agent.help``), listed by ``sabot agents``.
* ``use_reply_headers``: as in Faust, the form of the agent's RPC requests
  (``sabot.agents.rpc``); kept on the agent by ``app.agent``.
* ``supervisor_strategy``, ``isolated_partitions=True`` and any other Faust
  option: a warning naming it (Sabot restarts each crashed instance alone;
  it has no per-partition actors).
"""
from __future__ import annotations

import asyncio
import inspect
import warnings
from typing import Any, Callable, Dict, Optional, Tuple

from ..exceptions import ConfigurationError, SabotCompatibilityWarning

__all__ = ["FaustAgentOptions"]


class FaustAgentOptions:
    """What ``app.agent``'s Faust-only arguments amount to for one agent."""

    def __init__(self, agent_name: str, *, on_error: Any, schema: Any,
                 supervisor_strategy: Any, isolated_partitions: bool, use_reply_headers: bool,
                 extra: Dict[str, Any]) -> None:
        self.name = agent_name
        unsupported = sorted(extra)
        if supervisor_strategy is not None:
            unsupported.append("supervisor_strategy")
        if isolated_partitions:
            unsupported.append("isolated_partitions")
        if unsupported:
            warnings.warn(f"agent {agent_name!r}: Faust's {', '.join(unsupported)} not supported "
                          f"by Sabot and has no effect (each crashed instance restarts alone)",
                          SabotCompatibilityWarning, stacklevel=4)
        self.handler: Optional[Callable[..., Any]] = None
        if callable(on_error):
            self.handler, self.policy = on_error, "dead_letter"
        elif isinstance(on_error, str):
            self.policy = on_error
        else:
            raise ConfigurationError(f"agent {agent_name!r}: on_error must be a policy name or "
                                     f"Faust's handler (agent, exc), got {on_error!r}")
        self.schema_options: Dict[str, Any] = {}
        if schema is not None:
            for attr in ("key_type", "value_type", "key_serializer", "value_serializer"):
                value = getattr(schema, attr, None)
                if value is not None:
                    self.schema_options[attr] = value

    def types(self, key_type: Any, value_type: Any) -> Tuple[Any, Any]:
        """The agent's key and value types: given ones win over the schema's."""
        return (key_type if key_type is not None else self.schema_options.get("key_type"),
                value_type if value_type is not None else self.schema_options.get("value_type"))

    def failure_hook(self, agent: Any) -> Optional[Callable[[Any], None]]:
        """An ``Agent.on_failure`` that runs Faust's handler, or None."""
        handler = self.handler
        if handler is None:
            return None
        tasks: set = set()

        def on_failure(failure: Any) -> None:
            result = handler(agent, failure.error)
            if inspect.isawaitable(result):
                task = asyncio.ensure_future(result)
                tasks.add(task)  # the loop holds tasks weakly
                task.add_done_callback(tasks.discard)
        return on_failure
