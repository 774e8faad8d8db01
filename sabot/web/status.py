"""``StatusBoard``: what ``GET /status.json`` answers and ``GET /`` draws.

Per agent: input channel, sinks, values in and out, their rates per second,
errors, backlog and whether it runs; consumer lag per partition (per topic
where the transport cannot tell partitions); each table with its partitions
and how they were recovered; dead letters per channel; the pipelines as a
graph (channels -> agents -> sinks) and as an SVG drawing of it.

Figures are read fresh at every request; rates are measured from the last
snapshot kept at least ``min_interval`` earlier, so any number of viewers
polling every second share one sampling.
"""
from __future__ import annotations

import asyncio
import html
import logging
import time
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

from ..agents import Agent
from ..channels import Channel
from ..monitor import Snapshot, WorkerMonitor, rates
from ..settings import redact_url
from .holdings import holdings

if TYPE_CHECKING:
    from ..app import App

__all__ = ["StatusBoard", "pipeline_graph", "pipeline_svg"]

logger = logging.getLogger("sabot.web")


def _label(target: Any) -> str:
    """A sink's name: a channel or an agent has one, a callable its qualified name."""
    name = getattr(target, "name", None)
    if isinstance(name, str):
        return name
    return str(getattr(target, "__qualname__", None) or repr(target))


class StatusBoard:
    """The status of one running app, sampled when asked."""

    def __init__(self, monitor: WorkerMonitor, min_interval: float = 0.5) -> None:
        self.monitor = monitor
        self.min_interval = min_interval
        self._before: Optional[Snapshot] = None
        self._last: Optional[Snapshot] = None
        self._lock = asyncio.Lock()

    @property
    def app(self) -> "App":
        """The app reported on."""
        return self.monitor.app  # type: ignore[return-value]

    async def _sample(self) -> Tuple[Optional[Snapshot], Snapshot]:
        """A fresh snapshot, and the one to measure rates from (``min_interval`` older if any)."""
        async with self._lock:
            now = await self.monitor.snapshot()
            if self._last is None:
                self._last = now
                return None, now
            if now.time - self._last.time >= self.min_interval:
                self._before, self._last = self._last, now
                return self._before, now
            return self._before, now
    async def status(self) -> Dict[str, Any]:
        """The whole status as plain JSON-able data."""
        before, now = await self._sample()
        app = self.app
        per_s = rates(before, now)
        agents = []
        for figures in now.agents:
            agent = app.agents.get(figures.name)
            rate_in, rate_out = per_s.get(figures.name, (0.0, 0.0))
            agents.append({
                "name": figures.name, "running": figures.running,
                "events_in": figures.events_in, "events_out": figures.events_out,
                "rate_in": round(rate_in, 2), "rate_out": round(rate_out, 2),
                "errors": figures.errors, "backlog": figures.backlog,
                "channel": agent.channel.name if agent is not None else None,
                "executor": agent.executor if agent is not None else None,
                "concurrency": agent.concurrency if agent is not None else None,
                "sinks": [_label(s) for s in agent.sinks] if agent is not None else [],
            })
        graph = pipeline_graph(app)
        return {
            "app": app.id,
            "broker": redact_url(app.conf.broker),
            "time": time.time(),
            "healthy": now.healthy,
            "worker": holdings(app),
            "agents": agents,
            "lag": await self._lag(now),
            "tables": self._tables(),
            "dead_letters": [{"channel": ch, "count": n, "truncated": now.truncated.get(ch, 0)}
                             for ch, n in sorted(now.dead_letters.items())],
            "transports": now.transports,
            "pipeline": graph,
            "svg": pipeline_svg(graph),
        }

    async def _lag(self, now: Snapshot) -> List[Dict[str, Any]]:
        out: List[Dict[str, Any]] = []
        by_topic = dict(now.lag)
        for transport in self.app.transports:
            try:
                per_partition = await asyncio.wait_for(transport.partition_lag(), 1.0)
            except Exception as exc:  # a status page must not stop the worker
                logger.debug("partition lag of %s unknown: %r", transport.label, exc)
                continue
            for (topic, partition), n in sorted(per_partition.items()):
                out.append({"topic": topic, "partition": partition, "lag": n})
                by_topic.pop(topic, None)
        for topic, n in sorted(by_topic.items()):  # transports without partitions (Redis)
            out.append({"topic": topic, "partition": None, "lag": n})
        return out

    def _tables(self) -> List[Dict[str, Any]]:
        tables = getattr(self.app, "tables", None)  # an app without tables has no section
        out: List[Dict[str, Any]] = []
        if tables is None:
            return out
        for name in sorted(tables):
            try:
                table = tables[name]
                # Recovery figures are kept by tables that recovered from a changelog.
                stats = getattr(table, "recovery_stats", None)
                recovery = {str(p): {"changes": s.changes, "seconds": round(s.seconds, 3),
                                     "wiped": s.wiped}
                            for p, s in sorted((stats or {}).items())}
                held = list(table.held_partitions)
                out.append({"name": name, "kind": type(table).__name__,
                            "partitions": held, "recovery": recovery,
                            "recovering": ([p for p in held if p not in stats]
                                           if stats is not None else []),
                            "changelog": table.changelog_topic_name})
            except Exception as exc:  # a table mid-recovery must not break the page
                logger.debug("status of table %s: %r", name, exc)
                out.append({"name": name, "kind": "?", "partitions": [], "recovery": {},
                            "recovering": [], "changelog": ""})
        return out


def _sink_node(sink: Any) -> Tuple[str, str]:
    if isinstance(sink, Agent):
        return "agent", sink.name
    if isinstance(sink, Channel):
        return "channel", sink.name
    return "sink", _label(sink)


def pipeline_graph(app: Any) -> Dict[str, Any]:
    """Nodes (channels, agents, other sinks) and edges: input channel -> agent -> sinks.

    A channel that one agent writes and another reads is one node, so a
    pipeline reads left to right; ``level`` is a node's distance from the
    start of its pipeline (its column in the drawing).
    """
    nodes: Dict[str, Dict[str, Any]] = {}
    edges: List[List[str]] = []

    def node(kind: str, label: str) -> str:
        key = f"{kind}:{label}"
        if key not in nodes:
            nodes[key] = {"id": key, "kind": kind, "label": label, "level": 0}
        return key

    for agent in app.agents.values():
        me = node("agent", agent.name)
        edges.append([node("channel", agent.channel.name), me])
        for sink in agent.sinks:
            edges.append([me, node(*_sink_node(sink))])
    for _ in range(len(nodes)):  # longest path from a source; a cycle stops growing here
        changed = False
        for a, b in edges:
            if nodes[b]["level"] < nodes[a]["level"] + 1 and nodes[a]["level"] < len(nodes):
                nodes[b]["level"] = nodes[a]["level"] + 1
                changed = True
        if not changed:
            break
    return {"nodes": list(nodes.values()), "edges": edges}


_FILL = {"channel": "#e3f2fd", "agent": "#e8f5e9", "sink": "#fff3e0"}
_BOX_W, _BOX_H, _GAP_X, _GAP_Y = 200, 34, 60, 16


def pipeline_svg(graph: Dict[str, Any]) -> str:
    """The graph drawn server-side: a column per level, arrows between boxes."""
    rows: Dict[int, int] = {}
    where: Dict[str, Tuple[int, int]] = {}
    parts: List[str] = []
    for n in graph["nodes"]:
        col = int(n["level"])
        row = rows.get(col, 0)
        rows[col] = row + 1
        x = 10 + col * (_BOX_W + _GAP_X)
        y = 10 + row * (_BOX_H + _GAP_Y)
        where[n["id"]] = (x, y)
        text = html.escape(n["label"] if len(n["label"]) <= 26 else n["label"][:25] + "…")
        parts.append(
            f'<g class="node {n["kind"]}" data-id="{html.escape(n["id"])}">'
            f'<rect x="{x}" y="{y}" width="{_BOX_W}" height="{_BOX_H}" rx="6" '
            f'fill="{_FILL.get(n["kind"], "#eee")}" stroke="#555"/>'
            f'<text x="{x + _BOX_W // 2}" y="{y + 22}" text-anchor="middle" '
            f'font-size="13">{text}</text><title>{html.escape(n["kind"])} '
            f'{html.escape(n["label"])}</title></g>')
    for a, b in graph["edges"]:
        (x1, y1), (x2, y2) = where[a], where[b]
        if x2 > x1:
            line = (f'<line x1="{x1 + _BOX_W}" y1="{y1 + _BOX_H // 2}" x2="{x2}" '
                    f'y2="{y2 + _BOX_H // 2}" stroke="#555" marker-end="url(#arrow)"/>')
        else:  # back to an earlier column (a cycle): around below
            line = (f'<path d="M{x1 + _BOX_W // 2},{y1 + _BOX_H} C{x1 + _BOX_W // 2},{y1 + 80} '
                    f'{x2 + _BOX_W // 2},{y2 + 80} {x2 + _BOX_W // 2},{y2 + _BOX_H}" '
                    f'fill="none" stroke="#555" marker-end="url(#arrow)"/>')
        parts.insert(0, line)
    columns = max(rows) + 1 if rows else 1
    width = 20 + columns * _BOX_W + (columns - 1) * _GAP_X
    height = 60 + max(list(rows.values()) + [1]) * (_BOX_H + _GAP_Y)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="pipelines">'
            '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="8" '
            'markerHeight="8" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#555"/></marker>'
            '</defs>' + "".join(parts) + "</svg>")
