"""``sabot tail``: a channel's values as they arrive, read from outside the app.

The channel's transport reads the raw payloads without joining the app's
consumer group (``Transport.tail``), so watching a topic never takes
partitions or pending entries away from running workers; they are decoded
here with the channel's codec. A value the codec refuses is reported and
skipped.
"""
from __future__ import annotations

from typing import Any, AsyncGenerator, Callable, Optional

import pyarrow as pa

from .exceptions import DecodeError, TailUnsupported
from .types import ChannelT

__all__ = ["tail_values", "TailUnsupported"]


async def tail_values(channel: ChannelT, *, from_beginning: bool = False,
                      on_error: Optional[Callable[[str], None]] = None,
                      ) -> AsyncGenerator[Any, None]:
    """Yield the decoded values of ``channel`` as they arrive (rows of Arrow batches).

    ``from_beginning`` starts at the oldest value kept, otherwise at the next
    one written. ``on_error`` receives a line for each value that does not
    decode. An in-memory channel raises ``TailUnsupported``.
    """
    payloads = channel.tail(from_beginning=from_beginning)  # TailUnsupported in memory
    codec = channel.codec
    if codec is None:  # nothing serialized: nothing a reader outside could decode
        await payloads.aclose()
        raise TailUnsupported(f"{channel.name!r} carries no serialized values to tail")
    try:
        async for payload in payloads:
            try:
                value = codec.decode(payload)
            except DecodeError as exc:
                if on_error is not None:
                    on_error(f"skipped a value that does not decode: {exc}")
                continue
            if isinstance(value, pa.RecordBatch):
                for row in value.to_pylist():
                    yield row
            else:
                yield value
    finally:
        await payloads.aclose()
