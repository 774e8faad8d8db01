"""What an Arrow IPC stream from outside will cost to decode, before decoding it.

An IPC body may be compressed (LZ4 frame or zstd), and each compressed buffer
says how large it becomes. A few kilobytes of zeros compress to a message
that asks for gigabytes: decoding it would take the worker's memory, and the
message, never acknowledged, would do the same to the next worker (a
decompression bomb). ``decoded_size`` reads those sizes from the messages'
metadata without decompressing anything, so the codec can refuse a message
that would grow past a limit.

The metadata is a flatbuffer (``Message.fbs``: a ``Message`` whose header is a
``RecordBatch`` or a ``DictionaryBatch``, with its ``buffers`` and optional
``compression``); this reads only those fields, checking every offset
against the bytes it has.
"""
from __future__ import annotations

import struct
from typing import Any, Iterator, Optional, Tuple

from .exceptions import DecodeError

__all__ = ["decoded_size"]

_U16 = struct.Struct("<H")
_I32 = struct.Struct("<i")
_U32 = struct.Struct("<I")
_I64 = struct.Struct("<q")

#: Message.header union tags (Message.fbs MessageHeader).
_DICTIONARY_BATCH, _RECORD_BATCH = 2, 3


class _Flat:
    """Bounds-checked reads of one flatbuffer."""

    __slots__ = ("buf",)

    def __init__(self, buf: memoryview) -> None:
        self.buf = buf

    def _read(self, fmt: struct.Struct, pos: int) -> Any:
        if pos < 0 or pos + fmt.size > len(self.buf):
            raise ValueError("metadata offset out of range")
        return fmt.unpack_from(self.buf, pos)[0]

    def root(self) -> int:
        return self._read(_U32, 0)

    def field(self, table: int, index: int) -> Optional[int]:
        """Where field ``index`` of the table at ``table`` is, or None if absent."""
        vtable = table - self._read(_I32, table)
        vsize = self._read(_U16, vtable)
        slot = 4 + 2 * index
        if slot + 2 > vsize:
            return None
        offset = self._read(_U16, vtable + slot)
        return table + offset if offset else None

    def deref(self, pos: int) -> int:
        return pos + self._read(_U32, pos)

    def byte(self, pos: int) -> int:
        if pos < 0 or pos >= len(self.buf):
            raise ValueError("metadata offset out of range")
        return self.buf[pos]

    def structs(self, pos: int, size: int) -> Iterator[int]:
        """Positions of the elements of the vector of structs at ``pos``."""
        vector = self.deref(pos)
        count = self._read(_U32, vector)
        if vector + 4 + count * size > len(self.buf):
            raise ValueError("metadata vector out of range")
        return (vector + 4 + i * size for i in range(count))

    def i64(self, pos: int) -> int:
        return self._read(_I64, pos)


def _batch_buffers(flat: _Flat, message: int) -> Tuple[Optional[int], bool]:
    """``(the RecordBatch table, compressed)`` of a message, or ``(None, False)``."""
    kind_pos = flat.field(message, 1)  # header_type
    header_pos = flat.field(message, 2)  # header
    if kind_pos is None or header_pos is None:
        return None, False
    kind = flat.byte(kind_pos)
    table = flat.deref(header_pos)
    if kind == _DICTIONARY_BATCH:
        data = flat.field(table, 1)  # DictionaryBatch.data
        if data is None:
            return None, False
        table = flat.deref(data)
    elif kind != _RECORD_BATCH:
        return None, False
    return table, flat.field(table, 3) is not None  # RecordBatch.compression


def decoded_size(data: Any) -> int:
    """Bytes the buffers of the IPC stream ``data`` take once decoded.

    Uncompressed buffers count as they are; a compressed one counts the
    length its first eight bytes announce. Raises ``DecodeError`` when the
    stream's metadata cannot be read.
    """
    raw = memoryview(data)
    total = 0
    try:
        for metadata, body in _messages(raw):
            flat = _Flat(metadata)
            table, compressed = _batch_buffers(flat, flat.root())
            if table is None:
                continue
            if not compressed:
                total += len(body)  # what is there is what it takes
                continue
            buffers = flat.field(table, 2)  # RecordBatch.buffers
            if buffers is None:
                continue
            for pos in flat.structs(buffers, 16):
                offset, length = flat.i64(pos), flat.i64(pos + 8)
                if offset < 0 or length < 0 or offset + length > len(body):
                    raise ValueError("a buffer lies outside the message body")
                if length >= 8:
                    announced = _I64.unpack_from(body, offset)[0]
                    # -1: stored uncompressed after the length prefix.
                    total += length - 8 if announced == -1 else max(announced, 0)
    except (ValueError, struct.error) as exc:
        raise DecodeError(f"invalid Arrow IPC stream: {exc}", codec="arrow") from None
    return total


def _messages(raw: memoryview) -> Iterator[Tuple[memoryview, memoryview]]:
    """``(metadata, body)`` of each message of an IPC stream (the framing of
    the Arrow columnar format: continuation marker, metadata length, the
    ``Message`` flatbuffer, then ``bodyLength`` bytes of body)."""
    pos, end = 0, len(raw)
    while pos + 4 <= end:
        length = _I32.unpack_from(raw, pos)[0]
        pos += 4
        if length == -1:  # 0xFFFFFFFF: continuation marker, then the length
            if pos + 4 > end:
                raise ValueError("truncated message length")
            length = _I32.unpack_from(raw, pos)[0]
            pos += 4
        if length == 0:  # end of stream
            return
        if length < 0 or pos + length > end:
            raise ValueError("message metadata out of range")
        metadata = raw[pos:pos + length]
        pos += length
        flat = _Flat(metadata)
        body_field = flat.field(flat.root(), 3)  # Message.bodyLength
        body_length = flat.i64(body_field) if body_field is not None else 0
        if body_length < 0 or pos + body_length > end:
            raise ValueError("message body out of range")
        yield metadata, raw[pos:pos + body_length]
        pos += body_length
    if pos != end:
        raise ValueError("truncated message length")
