"""Durations as Faust takes them (``mode.Seconds``): a number of seconds or a ``timedelta``.

One parser for every duration argument (timers, windows, grace, expiry), so
each refuses what is not a duration with the same clear error naming it.
"""
from __future__ import annotations

import datetime
import math
from typing import Union

from .exceptions import ConfigurationError

__all__ = ["Seconds", "want_seconds"]

#: A duration: seconds as a number, or a ``timedelta``.
Seconds = Union[int, float, datetime.timedelta]


def want_seconds(value: Seconds, what: str = "duration", *, allow_zero: bool = False) -> float:
    """Seconds from a number or a ``timedelta``; ``ConfigurationError`` naming ``what`` otherwise.

    Refused: other types (``bool`` too), NaN, infinity, negative values, and
    zero unless ``allow_zero``.
    """
    if isinstance(value, datetime.timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise ConfigurationError(f"{what} must be a number of seconds or a timedelta, "
                                 f"got {value!r}")
    if not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not allow_zero):
        bound = "zero or more" if allow_zero else "positive"
        raise ConfigurationError(f"{what} must be {bound} and finite, got {value!r}")
    return seconds
