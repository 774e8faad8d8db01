"""Rows a join cannot use go to their channel's dead-letter channel, with why.

A row is rejected when its key cannot be read or looked up, its event time is
missing, a table value for it does not convert, or (interval join) it came
later than its side's watermark. Each goes, alone, to the dead-letter channel
of the channel it was read from (``<name>.dlq``), with the reason in
``sabot-error`` and ``sabot-join`` naming the join. The join awaits the
writes before it moves past the batch, so the batch is acknowledged only
once its rejected rows are stored (the rule of ``sabot.channels.dead_letters``).
"""
from __future__ import annotations

import asyncio
from typing import Any, List, Sequence

import pyarrow as pa

from ..types import BatchT, ChannelT
from .frames import Reject

__all__ = ["dead_letter_rows", "row_of"]


def row_of(payload: Any, i: int) -> Any:
    """Row ``i`` of a batch's payload as a dead letter carries it.

    A value of a list as it came; a RecordBatch row as a one-row RecordBatch
    (an Arrow channel writes it as Arrow, others as a JSON list of one dict).
    """
    if isinstance(payload, pa.RecordBatch):
        return payload.slice(i, 1)
    return payload[i]


async def dead_letter_rows(channel: ChannelT, batch: BatchT, rejects: Sequence[Reject],
                           join_name: str) -> None:
    """Write each rejected row of ``batch`` to ``channel``'s dead letters; wait until stored."""
    payload = batch.payload
    positions = batch.positions
    stored: List["asyncio.Future[None]"] = []
    for i, reason in rejects:
        stored.append(await channel.dead_letter(
            row_of(payload, i), reason, {"sabot-join": join_name},
            position=positions[i] if positions is not None else None))
    if stored:
        await asyncio.gather(*stored)
