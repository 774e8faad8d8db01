"""When ``@app.timer`` and ``@app.crontab`` functions run (Faust's meaning).

* ``app.timer(interval, on_leader=False, name=None)``: every ``interval``
  seconds (a number or a ``timedelta``), the first run one interval after the
  worker started. The beats are kept on a fixed grid (start + k * interval):
  a slow run does not shift later beats, and beats missed while a run was
  still going are skipped, not run back to back.
* ``app.crontab(cron_format, timezone=None, on_leader=False)``: at the times
  of a cron expression (``croniter``), in ``timezone`` or else the app's
  ``timezone`` setting (UTC unless set).
* ``on_leader=True``: the beat comes on every worker but the function runs
  only where ``app.is_leader()`` (``sabot.leader``).

A function that raises is logged and keeps its schedule. Functions that take
an argument get the app, as in Faust.
"""
from __future__ import annotations

import asyncio
import datetime
import inspect
import logging
import time
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Optional

from .exceptions import ConfigurationError

if TYPE_CHECKING:
    from .app import App

__all__ = ["Schedule", "Interval", "Crontab"]

logger = logging.getLogger(__name__)


class Schedule:
    """A function and when it runs; ``run(app)`` is its loop while the worker runs."""

    def __init__(self, fun: Callable[..., Any], *, on_leader: bool = False,
                 name: Optional[str] = None, kind: str = "timer") -> None:
        if not inspect.iscoroutinefunction(fun):
            raise ConfigurationError(f"{kind} {getattr(fun, '__qualname__', fun)!r} "
                                     f"must be an async function")
        self.fun = fun
        self.on_leader = bool(on_leader)
        self.name = name or getattr(fun, "__qualname__", repr(fun))
        self.kind = kind
        #: Runs done and beats skipped because this worker did not lead.
        self.runs = 0
        self.skipped_not_leader = 0

    def next_delay(self, started: float, now: float) -> float:
        """Seconds from ``now`` (``time.time()``) until the next beat."""
        raise NotImplementedError

    async def run(self, app: "App") -> None:
        started = time.time()
        while True:
            await asyncio.sleep(max(0.0, self.next_delay(started, time.time())))
            if self.on_leader and not app.is_leader():
                self.skipped_not_leader += 1
                continue
            try:
                await self._call(app)
                self.runs += 1
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.exception("%s %s raised (it keeps running): %r", self.kind, self.name, exc)

    def _call(self, app: "App") -> Awaitable[Any]:
        return self.fun(app) if _takes_argument(self.fun) else self.fun()

    def __repr__(self) -> str:
        leader = " on_leader" if self.on_leader else ""
        return f"<{type(self).__name__} {self.name}{leader}>"


class Interval(Schedule):
    """Every ``seconds``, on a fixed grid from the start."""

    def __init__(self, fun: Callable[..., Any], seconds: float, **kwargs: Any) -> None:
        super().__init__(fun, **kwargs)
        self.seconds = seconds

    def next_delay(self, started: float, now: float) -> float:
        beats = int((now - started) // self.seconds) + 1
        return started + beats * self.seconds - now


class Crontab(Schedule):
    """At the times of a cron expression, in a time zone."""

    def __init__(self, fun: Callable[..., Any], cron_format: str,
                 timezone: Optional[datetime.tzinfo], **kwargs: Any) -> None:
        super().__init__(fun, kind="crontab", **kwargs)
        from croniter import croniter
        if not isinstance(cron_format, str) or not croniter.is_valid(cron_format):
            raise ConfigurationError(f"crontab {self.name!r}: {cron_format!r} is not a cron expression "
                                     f"(five fields: minute hour day month weekday)")
        if timezone is not None and not isinstance(timezone, datetime.tzinfo):
            raise ConfigurationError(f"crontab {self.name!r}: timezone must be a tzinfo, got {timezone!r}")
        self.cron_format = cron_format
        self.timezone = timezone

    def next_delay(self, started: float, now: float) -> float:
        from croniter import croniter
        tz = self.timezone or datetime.timezone.utc
        base = datetime.datetime.fromtimestamp(now, tz)
        nxt = croniter(self.cron_format, start_time=base).get_next(float)
        return float(nxt) - now


def _takes_argument(fun: Callable[..., Any]) -> bool:
    try:
        return len(inspect.signature(fun).parameters) >= 1
    except (TypeError, ValueError):
        return False
