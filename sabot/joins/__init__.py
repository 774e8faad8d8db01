"""Joins: a stream with a table (``stream.join``), two streams in time (``stream.join_within``)."""
from .interval import IntervalJoin
from .table_join import StreamTableJoin

__all__ = ["StreamTableJoin", "IntervalJoin"]
