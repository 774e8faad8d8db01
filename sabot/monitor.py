"""``WorkerMonitor``: the figures a worker reports, read from the running app.

One snapshot feeds the status line, ``/metrics`` and ``/health``: per agent
the values in and out, crashes, backlog and whether it runs; dead letters per
source channel; consumer lag per topic; each transport's ``status()``; the
bridge metrics of process agents. Reading costs nothing on the data path:
agents count in their fast path, transports keep their own state.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Dict, List, NamedTuple, Optional

from .types import AppT, TransportT

__all__ = ["AgentFigures", "Snapshot", "WorkerMonitor", "DeadLetterCounter",
           "consumer_lag", "format_status"]

logger = logging.getLogger("sabot.worker")

class AgentFigures(NamedTuple):
    """Counters of one agent at one moment."""

    name: str
    events_in: int
    events_out: int
    errors: int
    backlog: int
    running: bool


class Snapshot(NamedTuple):
    """Everything the worker reports, taken at ``time`` (monotonic seconds)."""

    time: float
    agents: List[AgentFigures]
    dead_letters: Dict[str, int]
    #: Dead letters written as a truncated copy (too large whole), per channel.
    truncated: Dict[str, int]
    lag: Dict[str, int]
    transports: Dict[str, Dict[str, Any]]
    bridges: Dict[str, Dict[str, Any]]

    @property
    def healthy(self) -> bool:
        """True while every agent runs."""
        return all(a.running for a in self.agents)


class DeadLetterCounter:
    """Dead letters per source channel, read from the channels' own counters.

    Every dead letter, whether the agent raised or the codec refused the
    bytes, passes through ``Channel.dead_letter``, which counts it on the
    source channel; this sums them over the app's channels and topics.
    """

    def __init__(self, app: Optional[AppT] = None) -> None:
        self.app = app

    @property
    def counts(self) -> Dict[str, int]:
        """Channel name -> dead letters sent from it so far."""
        if self.app is None:
            return {}
        return {ch.name: ch.dead_letters_sent for ch in self.app.all_channels()
                if ch.dead_letters_sent}

    @property
    def truncated(self) -> Dict[str, int]:
        """Channel name -> dead letters from it written as a truncated copy."""
        if self.app is None:
            return {}
        return {ch.name: ch.dead_letters_truncated for ch in self.app.all_channels()
                if ch.dead_letters_truncated}


class WorkerMonitor:
    """Takes snapshots of ``app``; ``rates`` turns two into per-second figures."""

    def __init__(self, app: AppT, dead_letters: Optional[DeadLetterCounter] = None) -> None:
        self.app = app
        self.dead_letters = dead_letters or DeadLetterCounter(app)

    def agents(self) -> List[AgentFigures]:
        """Counters of every agent, now."""
        return [AgentFigures(a.name, a.events_in, a.events_out, a.crash_count,
                             a.backlog, a.running)
                for a in self.app.agents.values()]

    async def snapshot(self) -> Snapshot:
        """Every figure, including consumer lag (which asks the broker)."""
        transports: Dict[str, Dict[str, Any]] = {}
        lag: Dict[str, int] = {}
        for transport in self.app.transports:
            try:
                transports[transport.scheme] = transport.status()
                lag.update(await consumer_lag(transport))
            except Exception as exc:  # a status page must not stop the worker
                logger.debug("status of %s failed: %r", transport.scheme, exc)
        bridges: Dict[str, Dict[str, Any]] = {}
        for agent in self.app.agents.values():
            metrics = agent.bridge_metrics
            if metrics is not None:
                bridges[agent.name] = metrics.as_dict()
        return Snapshot(time.monotonic(), self.agents(), dict(self.dead_letters.counts),
                        dict(self.dead_letters.truncated), lag, transports, bridges)


async def consumer_lag(transport: TransportT, timeout: float = 1.0) -> Dict[str, int]:
    """Messages not yet read by this worker's group, per topic (``{}`` if unknown).

    Asks the transport (``Transport.lag``), at most ``timeout`` seconds.
    """
    try:
        return await asyncio.wait_for(transport.lag(), timeout)
    except (asyncio.TimeoutError, Exception) as exc:
        logger.debug("lag of %s unknown: %r", transport.label, exc)
    return {}


def rates(before: Optional[Snapshot], after: Snapshot) -> Dict[str, tuple]:
    """``{agent: (in per second, out per second)}`` between two snapshots."""
    out = {}
    prev = {a.name: a for a in before.agents} if before is not None else {}
    for a in after.agents:
        p = prev.get(a.name)
        elapsed = after.time - before.time if before is not None else 0.0
        if p is None or elapsed <= 0:
            out[a.name] = (0.0, 0.0)
        else:
            out[a.name] = ((a.events_in - p.events_in) / elapsed,
                           (a.events_out - p.events_out) / elapsed)
    return out


def format_status(before: Optional[Snapshot], after: Snapshot) -> str:
    """The worker's periodic status line (one line per agent below a header)."""
    per_s = rates(before, after)
    dead = sum(after.dead_letters.values())
    truncated = sum(after.truncated.values())
    lag = ", ".join(f"{t}={n}" for t, n in sorted(after.lag.items())) or "-"
    dead_text = f"{dead} ({truncated} truncated)" if truncated else str(dead)
    lines = [f"status: {len(after.agents)} agents, lag {lag}, dead letters {dead_text}"]
    for scheme, status in sorted(after.transports.items()):
        if status:
            lines.append(f"  {scheme}: " + ", ".join(f"{k} {v}" for k, v in sorted(status.items())))
    for a in after.agents:
        rate_in, rate_out = per_s[a.name]
        state = "" if a.running else " STOPPED"
        lines.append(f"  {a.name}: {rate_in:,.0f} in/s {rate_out:,.0f} out/s "
                     f"(total {a.events_in:,} in, {a.events_out:,} out), backlog {a.backlog:,}, "
                     f"errors {a.errors}{state}")
    return "\n".join(lines)


def delays(before: Optional[Snapshot], after: Snapshot) -> Dict[str, float]:
    """Estimated seconds a value waits before its agent finishes with it.

    Little's law: backlog divided by the agent's rate over the interval.
    Agents that finished nothing in the interval are left out (no estimate).
    """
    out = {}
    for name, (rate_in, _) in rates(before, after).items():
        if rate_in > 0:
            agent = next(a for a in after.agents if a.name == name)
            out[name] = agent.backlog / rate_in
    return out
