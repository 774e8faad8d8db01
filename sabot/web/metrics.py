"""``WorkerMetrics``: the Prometheus text of ``/metrics``.

Built by prometheus-client from a fresh ``WorkerMonitor`` snapshot at each
scrape, on the worker's own loop: a scrape never races the agents it reads.
"""
from __future__ import annotations

import asyncio
from typing import Any, Dict, Iterable, Optional, Tuple

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from ..canonical import host_port
from ..monitor import Snapshot, WorkerMonitor, delays

__all__ = ["WorkerMetrics", "host_port"]

#: Bridge counters exported per process agent: metric name -> (as_dict key, help).
_BRIDGE_COUNTERS = {
    "sabot_bridge_transfers": ("transfers", "Batches converted to Arrow IPC for a worker process."),
    "sabot_bridge_bytes": ("bytes_transferred", "Bytes of Arrow data sent to worker processes."),
    "sabot_bridge_shm_transfers": ("shm_transfers", "Transfers that went through shared memory."),
    "sabot_bridge_worker_restarts": ("worker_restarts", "Worker processes replaced after dying."),
    "sabot_bridge_executions": ("total_executions", "Batches the worker processes finished."),
}


class WorkerMetrics:
    """The Prometheus registry of one worker, read from a ``WorkerMonitor``."""

    def __init__(self, monitor: WorkerMonitor) -> None:
        self.monitor = monitor
        self.registry = CollectorRegistry(auto_describe=False)
        self.delay = Histogram(
            "sabot_agent_delay_seconds",
            "Estimated seconds a value waits before its agent finishes with it "
            "(backlog / rate, observed at every status tick).",
            ["agent"], registry=self.registry,
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0))
        self.batch_latency = Histogram(
            "sabot_batch_latency_seconds",
            "Seconds from a batch reaching an agent to the agent moving past it "
            "(queueing and processing), one observation per batch.",
            ["agent"], registry=self.registry,
            buckets=(0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0))
        self._last: Optional[Snapshot] = None
        self._partition_lag: Dict[Tuple[str, int], int] = {}
        self.registry.register(self)  # collect() below

    def observe(self, before: Optional[Snapshot], after: Snapshot) -> None:
        """Record the interval between two snapshots (called by the status ticker)."""
        for name, seconds in delays(before, after).items():
            self.delay.labels(agent=name).observe(seconds)

    async def render(self) -> bytes:
        """The Prometheus text of a fresh snapshot."""
        self._last = await self.monitor.snapshot()
        self._partition_lag = await _partition_lag(self.monitor.app.transports)
        for agent in self.monitor.app.agents.values():
            histogram = self.batch_latency.labels(agent=agent.name)
            for seconds in agent.drain_batch_latencies():
                histogram.observe(seconds)
        return generate_latest(self.registry)

    def collect(self) -> Iterable[Metric]:
        """prometheus-client's collector hook: the last snapshot as metric families."""
        snap = self._last
        if snap is None:
            return []
        events_in = CounterMetricFamily("sabot_agent_events_in", "Values an agent finished with.",
                                        labels=["agent"])
        events_out = CounterMetricFamily("sabot_agent_events_out", "Values an agent yielded.",
                                         labels=["agent"])
        errors = CounterMetricFamily("sabot_agent_errors", "Times an agent raised.",
                                     labels=["agent"])
        backlog = GaugeMetricFamily("sabot_agent_backlog",
                                    "Values sent to an agent and not yet finished.", labels=["agent"])
        running = GaugeMetricFamily("sabot_agent_running", "1 while the agent runs.",
                                    labels=["agent"])
        for a in snap.agents:
            events_in.add_metric([a.name], a.events_in)
            events_out.add_metric([a.name], a.events_out)
            errors.add_metric([a.name], a.errors)
            backlog.add_metric([a.name], a.backlog)
            running.add_metric([a.name], 1 if a.running else 0)
        dead = CounterMetricFamily("sabot_dead_letters", "Values sent to a dead-letter channel.",
                                   labels=["channel"])
        for channel, n in sorted(snap.dead_letters.items()):
            dead.add_metric([channel], n)
        truncated = CounterMetricFamily(
            "sabot_dead_letters_truncated",
            "Dead letters written as a truncated copy because the whole value did not fit.",
            labels=["channel"])
        for channel, n in sorted(snap.truncated.items()):
            truncated.add_metric([channel], n)
        lag = GaugeMetricFamily("sabot_consumer_lag",
                                "Messages of a topic not yet read by this worker's group.",
                                labels=["topic"])
        for topic, n in sorted(snap.lag.items()):
            lag.add_metric([topic], n)
        partition_lag = GaugeMetricFamily(
            "sabot_consumer_partition_lag",
            "Messages of a partition this worker holds not yet read (Kafka).",
            labels=["topic", "partition"])
        for (topic, partition), n in sorted(self._partition_lag.items()):
            partition_lag.add_metric([topic, str(partition)], n)
        families = [events_in, events_out, errors, backlog, running, dead, truncated, lag,
                    partition_lag]
        families.extend(_bridge_families(snap.bridges))
        return families


async def _partition_lag(transports: Iterable[Any]) -> Dict[Tuple[str, int], int]:
    out: Dict[Tuple[str, int], int] = {}
    for transport in transports:
        try:
            out.update(await asyncio.wait_for(transport.partition_lag(), 1.0))
        except Exception:  # a scrape must not fail on a transport mid-rebalance
            continue
    return out


def _bridge_families(bridges: Dict[str, Dict[str, Any]]) -> Iterable[Metric]:
    if not bridges:
        return []
    out = []
    for metric, (key, doc) in _BRIDGE_COUNTERS.items():
        family = CounterMetricFamily(metric, doc, labels=["agent"])
        for agent, figures in sorted(bridges.items()):
            family.add_metric([agent], figures.get(key, 0))
        out.append(family)
    seconds = CounterMetricFamily("sabot_bridge_execution_seconds",
                                  "Time worker processes spent on batches.", labels=["agent"])
    for agent, figures in sorted(bridges.items()):
        seconds.add_metric([agent], sum(figures.get("execution_time_us", {}).values()) / 1e6)
    out.append(seconds)
    return out
