"""Agents: user coroutines over channels, in this process or in child processes."""
from .agent import EXECUTORS, ON_ERROR, Agent, AgentFailure
from .testing import AgentTestContext

__all__ = ["Agent", "AgentFailure", "AgentTestContext", "ON_ERROR", "EXECUTORS"]
