"""``stream.batches()`` of a channel whose ``value_type`` is a Record.

Values travel as records (what ``async for value in stream`` yields); asked
for batches, the stream hands the agent one ``pyarrow.RecordBatch`` of the
record's Arrow schema instead of a list. A record that fits no column (text
in an ``int`` field of a model without validation, which Faust lets
through) goes to the dead-letter channel with the field and the reason, and
the agent gets the other rows. The batch is held until that dead letter is
stored, so nothing is acknowledged before it is safe.
"""
from __future__ import annotations

from typing import Any, Type

from ..channels.dead_letters import when_stored
from ..types import ChannelT, CursorT
from .arrow import schema_for, split_batch

__all__ = ["RecordBatches"]


class RecordBatches:
    """Iterates ``inner`` (a batch cursor) and yields each payload as a RecordBatch."""

    __slots__ = ("inner", "model", "channel")

    def __init__(self, inner: CursorT, model: Type[Any], channel: ChannelT) -> None:
        schema_for(model)  # a class with no Arrow schema fails here, naming the field
        self.inner = inner
        self.model = model
        self.channel = channel

    def __aiter__(self) -> "RecordBatches":
        return self

    async def __anext__(self) -> Any:
        while True:
            batch = await self.inner.__anext__()
            payload = batch.payload
            if type(payload) is not list:
                return payload  # a RecordBatch already (sent as one)
            record_batch, bad = split_batch(self.model, payload)
            for index, reason in bad:
                await self._dead_letter(batch, index, reason)
            if record_batch.num_rows or not bad:
                return record_batch
            # Every row went to the dead-letter channel: nothing to hand over.

    async def _dead_letter(self, batch: Any, index: int, reason: str) -> None:
        position = batch.positions[index] if batch.positions is not None else None
        batch.acquire()
        written = await self.channel.dead_letter(
            batch.payload[index], f"value does not fit {self.model.__name__}'s Arrow "
            f"schema: {reason}", position=position)
        when_stored(written, batch.release)
