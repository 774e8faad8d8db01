"""Arrow-native windows: ``stream.window(spec, key=, time=, grace=).agg(...)``.

>>> from sabot.windows import tumbling, count, sum
>>> # async for closed in stream.window(tumbling(60), key="user", time="ts")
>>> #         .agg(n=count(), total=sum("amount")).final(): ...

``count`` is both the count window (``count(100)``: every 100 events per key)
and the aggregation (``count()`` rows, ``count("col")`` non-null values), as
the API reads; ``count_window`` and ``count_rows`` are the unambiguous names.
"""
from typing import Optional, Union, overload

from .aggregations import Aggregation, Count as CountAggregation, count_rows, max, mean, min, sum
from .operator import WindowedStream, WindowOperator
from .specs import (Count, Hopping, Session, Sliding, Tumbling, WindowSpec, count_window,
                    hopping, session, sliding, tumbling)
from .watermark import Watermarks, partition_of

__all__ = ["tumbling", "hopping", "sliding", "session", "count", "count_window", "count_rows",
           "sum", "min", "max", "mean", "WindowedStream", "WindowOperator", "WindowSpec",
           "Tumbling", "Hopping", "Sliding", "Session", "Count", "Aggregation",
           "Watermarks", "partition_of"]


@overload
def count(n: int) -> Count: ...
@overload
def count(n: Optional[str] = None) -> CountAggregation: ...


def count(n: Union[int, str, None] = None) -> Union[Count, CountAggregation]:
    """``count(n)`` (an int): a count window; ``count()``/``count("col")``: the aggregation."""
    if n is None or isinstance(n, str):
        return count_rows(n)
    return count_window(n)  # refuses anything but a positive int
