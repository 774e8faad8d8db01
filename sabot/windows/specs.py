"""What a window is: ``tumbling``, ``hopping``, ``sliding``, ``session``, ``count``.

A spec is a frozen description; ``stream.window(spec, ...)`` turns it into an
operator. Durations are seconds (an ``int``, a ``float`` or a
``datetime.timedelta``), held as whole microseconds so that window boundaries
are exact integers (``hopping(0.3, 0.1)`` has panes of exactly 100,000 µs).

Time windows are cut into *panes*: a tumbling window is one pane; a hopping
window of ``size`` every ``step`` is made of panes of ``gcd(size, step)``; a
sliding window of ``size`` is made of panes of its ``resolution``. Rows are
aggregated into panes as they arrive, and panes are combined into windows
only when windows are emitted, so a row costs one pane update whatever the
number of windows it belongs to.

Sliding windows follow Kafka Streams and Quix Streams, not Flink (whose
"sliding" windows are hopping windows): there is one window per event, of
length ``size``, ending at the event (the end rounded up to the
``resolution``, 1 second by default); windows exist only where there are
events. Faust's ``.sliding(before, after)`` around each event is the
windowed tables' API, not this one.
"""
from __future__ import annotations

import datetime
import math
from dataclasses import dataclass

from ..durations import Seconds, want_seconds
from ..exceptions import ConfigurationError

__all__ = ["WindowSpec", "TimeWindowSpec", "Tumbling", "Hopping", "Sliding", "Session", "Count",
           "tumbling", "hopping", "sliding", "session", "count_window", "Seconds",
           "MAX_WINDOWS_PER_PANE", "to_micros"]


#: Windows one pane may belong to (``size/step``, or ``size/resolution`` for
#: sliding windows): each costs a row per pane when windows are emitted.
MAX_WINDOWS_PER_PANE = 10_000


def to_micros(value: Seconds, what: str, *, allow_zero: bool = False) -> int:
    """``value`` seconds as whole microseconds; ``ConfigurationError`` if not a duration."""
    seconds = want_seconds(value, what, allow_zero=allow_zero)
    micros = round(seconds * 1_000_000)
    if micros == 0 and not allow_zero:
        raise ConfigurationError(f"{what} must be at least one microsecond, got {value!r}")
    return micros


class WindowSpec:
    """Base of every window spec."""

    #: ``tumbling``, ``hopping``, ``sliding``, ``session`` or ``count``.
    kind = ""


class TimeWindowSpec(WindowSpec):
    """A window on event time made of panes: tumbling, hopping or sliding.

    In pane units: window ``w`` covers panes ``[w*stride, w*stride + width)``;
    an *anchored* spec (sliding) keeps only the windows whose last pane has
    an event for the key.
    """

    @property
    def size_us(self) -> int:
        """The window's length in microseconds."""
        raise NotImplementedError

    @property
    def pane_us(self) -> int:
        """The pane's length in microseconds."""
        raise NotImplementedError

    @property
    def stride(self) -> int:
        """Panes between the starts of two windows."""
        raise NotImplementedError

    @property
    def width(self) -> int:
        """Panes in one window."""
        return self.size_us // self.pane_us

    @property
    def anchored(self) -> bool:
        """True when windows exist only where their last pane has an event."""
        return False

    @property
    def windows_per_pane(self) -> int:
        """How many windows one pane belongs to."""
        return -(-self.width // self.stride)


@dataclass(frozen=True)
class Tumbling(TimeWindowSpec):
    """Fixed windows of ``size`` seconds, back to back, aligned to the epoch."""

    size: float
    kind = "tumbling"

    @property
    def size_us(self) -> int:
        return to_micros(self.size, "tumbling(size)")

    @property
    def pane_us(self) -> int:
        return self.size_us

    @property
    def stride(self) -> int:
        return 1


@dataclass(frozen=True)
class Hopping(TimeWindowSpec):
    """Windows of ``size`` seconds starting every ``step`` seconds (they overlap)."""

    size: float
    step: float
    kind = "hopping"

    @property
    def size_us(self) -> int:
        return to_micros(self.size, "hopping(size)")

    @property
    def step_us(self) -> int:
        """The step in microseconds."""
        return to_micros(self.step, "hopping(step)")

    @property
    def pane_us(self) -> int:
        return math.gcd(self.size_us, self.step_us)

    @property
    def stride(self) -> int:
        return self.step_us // self.pane_us


@dataclass(frozen=True)
class Sliding(TimeWindowSpec):
    """One window of ``size`` seconds ending at each event (Kafka Streams, Quix).

    The end is the event's time rounded up to ``resolution`` seconds (one
    window per key and resolution step that has events).
    """

    size: float
    resolution: float = 1.0
    kind = "sliding"

    @property
    def size_us(self) -> int:
        return to_micros(self.size, "sliding(size)")

    @property
    def pane_us(self) -> int:
        return to_micros(self.resolution, "sliding(resolution)")

    @property
    def stride(self) -> int:
        return 1

    @property
    def anchored(self) -> bool:
        return True


@dataclass(frozen=True)
class Session(WindowSpec):
    """Per key, events less than ``gap`` seconds apart form one window.

    A session runs from its first event to its last event plus ``gap``;
    sessions that come closer than ``gap`` (an out-of-order event between
    them) merge.
    """

    gap: float
    kind = "session"

    @property
    def gap_us(self) -> int:
        """The gap in microseconds."""
        return to_micros(self.gap, "session(gap)")


@dataclass(frozen=True)
class Count(WindowSpec):
    """Per key, a window of every ``n`` events in arrival order."""

    n: int
    kind = "count"


def tumbling(size: Seconds) -> Tumbling:
    """Windows of ``size`` seconds, back to back: ``[0, size)``, ``[size, 2*size)``, ..."""
    spec = Tumbling(_seconds(size))
    spec.size_us  # validates
    return spec


def hopping(size: Seconds, step: Seconds) -> Hopping:
    """Windows of ``size`` seconds, one starting every ``step`` seconds."""
    spec = Hopping(_seconds(size), _seconds(step))
    if spec.step_us > spec.size_us:
        raise ConfigurationError(f"hopping(size={size!r}, step={step!r}): the step is longer "
                                 f"than the window, so some events would be in no window")
    _check_windows_per_pane(spec, f"hopping({size!r}, {step!r})")
    return spec


def sliding(size: Seconds, *, resolution: Seconds = 1.0) -> Sliding:
    """A window of ``size`` seconds ending at each event (ends rounded up to ``resolution``)."""
    spec = Sliding(_seconds(size), _seconds(resolution))
    if spec.size_us % spec.pane_us:
        raise ConfigurationError(f"sliding(size={size!r}, resolution={resolution!r}): the size "
                                 f"must be a whole number of resolution steps")
    _check_windows_per_pane(spec, f"sliding({size!r}, resolution={resolution!r})")
    return spec


def session(gap: Seconds) -> Session:
    """Per key, events less than ``gap`` seconds apart form one window."""
    spec = Session(_seconds(gap))
    spec.gap_us  # validates
    return spec


def count_window(n: int) -> Count:
    """Per key, a window of every ``n`` events."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ConfigurationError(f"count(n): n must be a positive int, got {n!r}")
    return Count(n)


def _seconds(value: Seconds) -> float:
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    to_micros(value, "a window's duration")
    return float(value)


def _check_windows_per_pane(spec: TimeWindowSpec, what: str) -> None:
    if spec.windows_per_pane > MAX_WINDOWS_PER_PANE:
        raise ConfigurationError(
            f"{what}: each event would be in {spec.windows_per_pane} windows "
            f"(at most {MAX_WINDOWS_PER_PANE}); use a longer step or resolution")
