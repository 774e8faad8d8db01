"""The current event: the value the calling agent task is processing.

``current_event()`` (also ``sabot.current_event``, as ``faust.current_event``)
finds it lazily, from the running asyncio task to the ``Stream`` it iterates
(``sabot.streams.current_stream``) to the batch and index of the value in
hand: nothing is recorded per value, so agents that use no table pay
nothing.

A value's *source* is where it came from, in the terms tables record:

* Kafka ``(topic, partition, offset)``: source ``"topic:partition"``,
  partition ``partition``, position ``offset`` (an int);
* Redis ``(stream, entry_id)``: source ``"stream"``, partition 0, position
  the entry id (a str, compared as ``(milliseconds, sequence)``);
* memory (no position): no source; partition 0.
"""
from __future__ import annotations

from typing import Any, NamedTuple, Optional, Tuple

from ..streams import current_stream
from ..types import BatchT, Headers, StorePosition

__all__ = ["CurrentEvent", "current_event", "current_row", "source_of", "position_le"]


class CurrentEvent(NamedTuple):
    """The value in hand with its envelope (Faust's ``EventT`` and its ``message``).

    ``event.message.partition``/``.topic``/``.offset``/``.timestamp`` work as
    in Faust: ``message`` is the event itself.
    """

    key: Any
    value: Any
    headers: Optional[Headers]
    timestamp: float
    position: Any
    partition: int
    offset: Optional[StorePosition]
    topic: str
    channel: Any

    @property
    def message(self) -> "CurrentEvent":
        """Faust's ``event.message``: topic, partition, offset, timestamp, key, value."""
        return self


def source_of(position: Any) -> Tuple[Optional[str], int, Optional[StorePosition]]:
    """``(source, partition, position)`` of a transport position (see the module doc)."""
    if position is None:
        return None, 0, None
    if len(position) == 3:
        topic, partition, offset = position
        return f"{topic}:{partition}", partition, offset
    stream, entry_id = position
    if isinstance(entry_id, bytes):
        entry_id = entry_id.decode()
    return stream, 0, entry_id


def _entry_id(value: str) -> Tuple[int, int]:
    ms, _, seq = value.partition("-")
    return int(ms), int(seq or 0)


def position_le(a: StorePosition, b: StorePosition) -> bool:
    """``a <= b`` for two positions of one source (Kafka offsets or Redis entry ids)."""
    if type(a) is int and type(b) is int:
        return a <= b
    if isinstance(a, str) and isinstance(b, str):
        return _entry_id(a) <= _entry_id(b)
    raise TypeError(f"positions {a!r} and {b!r} are not of one kind")


def current_row() -> Tuple[Optional[BatchT], int, bool]:
    """``Stream.current_row()`` of the calling task's stream; ``(None, -1, True)`` outside one."""
    stream = current_stream()
    if stream is None:
        return None, -1, True
    return stream.current_row()


def current_event() -> Optional[CurrentEvent]:
    """The event the calling agent is processing, or ``None`` outside one."""
    stream = current_stream()
    if stream is None:
        return None
    batch, i, _ = stream.current_row()
    if batch is None or i < 0:
        return None
    key = batch.keys[i] if batch.keys is not None else None
    headers = batch.headers[i] if batch.headers is not None else None
    timestamp = batch.timestamps[i] if batch.timestamps is not None else batch.timestamp
    position = batch.positions[i] if batch.positions is not None else None
    _, partition, offset = source_of(position)
    return CurrentEvent(key, batch.rows()[i], headers, timestamp, position, partition, offset,
                        stream.channel.name, stream.channel)
