"""NodeState: where one node stands within one pipeline run."""
from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

__all__ = ["NodeStatus", "NodeState"]


class NodeStatus(str, enum.Enum):
    """Life of a node in a run; ``SKIPPED`` when an input failed upstream."""

    PENDING = "pending"
    RUNNING = "running"
    RETRYING = "retrying"
    COMPLETED = "completed"
    FAILED = "failed"
    SKIPPED = "skipped"


@dataclass
class NodeState:
    """Status, attempts, timing and error of one node in one run.

    ``data`` is scratch space the pipeline keeps per node and run (counters,
    caches) for callers and event subscribers.
    """

    node_id: str
    status: NodeStatus = NodeStatus.PENDING
    attempts: int = 0
    error: Optional[BaseException] = None
    started_at: Optional[float] = None
    finished_at: Optional[float] = None
    data: Dict[str, Any] = field(default_factory=dict)

    def start(self) -> None:
        """Mark an attempt as begun."""
        self.status = NodeStatus.RUNNING
        self.attempts += 1
        if self.started_at is None:
            self.started_at = time.time()

    def finish(self, status: NodeStatus, error: Optional[BaseException] = None) -> None:
        """Mark the node done with ``status`` (and ``error`` when it failed)."""
        self.status = status
        self.error = error
        self.finished_at = time.time()

    @property
    def duration(self) -> Optional[float]:
        """Seconds from the first attempt to the end, once finished."""
        if self.started_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.started_at
