"""Counters a bridge keeps: executions and time per node, transfers, bytes.

Everything is updated from the event loop's thread, so plain integers do;
``as_dict`` is what status pages and the worker's metrics endpoint read.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any, Dict

__all__ = ["BridgeMetrics"]


class BridgeMetrics:
    """Executions, time, transfers, bytes and conversion latency of a bridge."""

    def __init__(self) -> None:
        self.executions: Dict[str, int] = defaultdict(int)
        self.execution_time_us: Dict[str, int] = defaultdict(int)
        self.failures: Dict[str, int] = defaultdict(int)
        self.transfers = 0
        self.bytes_transferred = 0
        self.shm_transfers = 0
        self.conversion_latency_us = 0
        self.worker_restarts = 0

    def record_execution(self, node_id: str, seconds: float) -> None:
        """Count one finished execution of ``node_id`` that took ``seconds``."""
        self.executions[node_id] += 1
        self.execution_time_us[node_id] += int(seconds * 1e6)

    def record_failure(self, node_id: str) -> None:
        """Count one execution of ``node_id`` that raised."""
        self.failures[node_id] += 1

    def record_transfer(self, nbytes: int, seconds: float, *, shm: bool = False) -> None:
        """Count one conversion of ``nbytes`` of Arrow data that took ``seconds``."""
        self.transfers += 1
        self.bytes_transferred += nbytes
        self.conversion_latency_us += int(seconds * 1e6)
        if shm:
            self.shm_transfers += 1

    def record_restart(self) -> None:
        """Count one worker process replaced after it died."""
        self.worker_restarts += 1

    def as_dict(self) -> Dict[str, Any]:
        """A snapshot: per-node dicts and bridge-wide totals."""
        return {
            "executions": dict(self.executions),
            "execution_time_us": dict(self.execution_time_us),
            "failures": dict(self.failures),
            "total_executions": sum(self.executions.values()),
            "transfers": self.transfers,
            "bytes_transferred": self.bytes_transferred,
            "shm_transfers": self.shm_transfers,
            "conversion_latency_us": self.conversion_latency_us,
            "avg_conversion_latency_us":
                self.conversion_latency_us / max(self.transfers, 1),
            "worker_restarts": self.worker_restarts,
        }
