"""The memory layout a WASM node and Sabot agree on (the ABI, version 1).

A batch lives in the module's linear memory as a *batch descriptor*, all
integers little-endian ``u32``::

    +0   num_rows
    +4   num_columns
    +8   num_columns column descriptors of 40 bytes each:
         +0  type          (``TYPE_CODES``)
         +4  null_count    (output: ignored, Sabot counts the bitmap)
         +8  validity_ptr  (0: every value valid) +12 validity_len (bytes)
         +16 values_ptr    +20 values_len  (fixed width: the values; bool:
                           bit-packed; utf8/binary: int32 offsets, rows + 1)
         +24 data_ptr      +28 data_len    (utf8/binary: the bytes; else 0)
         +32 name_ptr      +36 name_len    (UTF-8, no terminator)

Buffers are Arrow's own (validity bitmaps least significant bit first, 1 =
valid), so each crosses with one ``memmove`` in and one out: no Python object
is made per value. Per batch the host makes two calls: ``sabot_alloc(size)``
asks the module for one block holding the descriptor, the names, every
buffer (8-byte aligned) and the parameters' JSON (the module may then reuse
whatever it handed out for the previous batch, which the host has read);
``sabot_run(batch, params, params_len)`` returns the address of the output's
descriptor, which the node allocated in its own memory (0: it failed, and
the optional ``sabot_error()`` points at a NUL-terminated message). Everything a module hands back is checked
against the size of its memory before it is read: a module is hostile input.
"""
from __future__ import annotations

import ctypes
import json
import struct
from typing import Any, Dict, List, Mapping, Optional, Tuple

import pyarrow as pa

from ..exceptions import ConversionError

__all__ = ["ABI_VERSION", "TYPE_CODES", "InputLayout", "as_record_batch",
           "read_batch", "read_cstring", "AbiViolation"]

ABI_VERSION = 1
#: Arrow type -> code in the column descriptor.
TYPE_CODES: Dict[pa.DataType, int] = {
    pa.bool_(): 1, pa.int8(): 2, pa.int16(): 3, pa.int32(): 4, pa.int64(): 5,
    pa.uint8(): 6, pa.uint16(): 7, pa.uint32(): 8, pa.uint64(): 9,
    pa.float32(): 10, pa.float64(): 11, pa.utf8(): 12, pa.binary(): 13,
}
_TYPES = {code: t for t, code in TYPE_CODES.items()}

_HEADER = struct.Struct("<II")
_COLUMN = struct.Struct("<10I")
_ALIGN = 8
_U32_MAX = 0xFFFFFFFF


class AbiViolation(ValueError):
    """A module's output breaks the ABI (a pointer outside memory, a bad type...)."""


def _aligned(n: int) -> int:
    return (n + _ALIGN - 1) & ~(_ALIGN - 1)


def as_record_batch(value: Any) -> pa.RecordBatch:
    """The node's input as one RecordBatch (a Table is combined, a list of
    dicts converted); anything else is a ``ConversionError``."""
    if isinstance(value, pa.RecordBatch):
        return value
    if isinstance(value, pa.Table):
        value = value.combine_chunks()
        batches = value.to_batches()
        return batches[0] if batches else pa.RecordBatch.from_pylist([], schema=value.schema)
    if isinstance(value, list) and all(isinstance(v, Mapping) for v in value):
        try:
            return pa.RecordBatch.from_pylist(value)
        except (pa.ArrowException, TypeError, ValueError) as exc:
            raise ConversionError(f"values do not form an Arrow batch: {exc}") from exc
    raise ConversionError(
        f"a WASM node takes a RecordBatch, a Table or a list of dicts, "
        f"not {type(value).__name__}")


def _column_buffers(name: str, column: pa.Array) -> Tuple[int, List[Optional[pa.Buffer]]]:
    """``(type code, [validity, values, data])`` for one column, offset 0."""
    code = TYPE_CODES.get(column.type)
    if code is None:
        raise ConversionError(
            f"column {name!r} has type {column.type}, which the WASM ABI does not carry "
            f"(it carries {', '.join(str(t) for t in TYPE_CODES)})")
    if column.offset:
        # A slice: bitmaps and offsets would need shifting; one copy resets it.
        column = pa.concat_arrays([column])
    bufs = column.buffers()
    validity = bufs[0] if column.null_count else None
    if code in (12, 13):
        return code, [validity, bufs[1], bufs[2]]
    return code, [validity, bufs[1], None]


class InputLayout:
    """Where a batch and its parameters go in one block of linear memory.

    Built before the module is asked for memory (``size`` is what to ask
    for); ``write(base_address, block)`` then copies every buffer once.
    """

    def __init__(self, batch: pa.RecordBatch, params: Mapping[str, Any]) -> None:
        try:
            self.params = json.dumps(dict(params), separators=(",", ":")).encode()
        except (TypeError, ValueError) as exc:
            raise ConversionError(f"parameters must be JSON-able: {exc}") from exc
        self.rows = batch.num_rows
        ncols = batch.num_columns
        pos = _aligned(_HEADER.size + _COLUMN.size * ncols)
        #: (offset in block, source address, length) of every copy.
        self.copies: List[Tuple[int, int, int]] = []
        #: The buffers copied from, alive until written (a slice's are new).
        self._sources: List[pa.Buffer] = []
        self.descriptors: List[List[int]] = []
        self.names: List[Tuple[int, bytes]] = []
        for name, column in zip(batch.schema.names, batch.columns):
            code, bufs = _column_buffers(name, column)
            fields = [code, column.null_count]
            for buf in bufs:
                if buf is None or buf.size == 0:
                    fields += [0, 0]
                    continue
                self.copies.append((pos, buf.address, buf.size))
                self._sources.append(buf)
                fields += [pos, buf.size]
                pos = _aligned(pos + buf.size)
            encoded = name.encode()
            self.names.append((pos, encoded))
            fields += [pos, len(encoded)]
            pos = _aligned(pos + len(encoded))
            self.descriptors.append(fields)
        self.params_offset = pos
        self.size = _aligned(pos + len(self.params)) or _ALIGN
        if self.size > _U32_MAX:
            raise ConversionError(f"a batch of {self.size} bytes does not fit in the "
                                  f"4 GiB a 32-bit WASM memory can address")

    def write(self, base: int, block: int) -> None:
        """Copy the descriptor, names, buffers and params to ``block``.

        ``base`` is the address of linear memory in this process, ``block``
        the module's pointer to the memory it allocated.
        """
        at = base + block
        # Pointers in descriptors are module addresses: block + offset.
        header = bytearray(_HEADER.pack(self.rows, len(self.descriptors)))
        for fields in self.descriptors:
            moved = fields[:2] + [block + f if i % 2 == 0 and f else f
                                  for i, f in enumerate(fields[2:])]
            header += _COLUMN.pack(*moved)
        ctypes.memmove(at, bytes(header), len(header))
        for offset, encoded in self.names:
            ctypes.memmove(at + offset, encoded, len(encoded))
        for offset, source, length in self.copies:
            ctypes.memmove(at + offset, source, length)
        ctypes.memmove(at + self.params_offset, self.params, len(self.params))


def _span(memory_size: int, ptr: int, length: int, what: str) -> None:
    if ptr + length > memory_size:
        raise AbiViolation(f"{what} [{ptr}, {ptr + length}) lies outside the module's "
                           f"memory of {memory_size} bytes")


def _copy_out(base: int, memory_size: int, ptr: int, length: int, what: str) -> pa.Buffer:
    _span(memory_size, ptr, length, what)
    buf = pa.allocate_buffer(length)
    if length:
        ctypes.memmove(buf.address, base + ptr, length)
    return buf


def read_cstring(base: int, memory_size: int, ptr: int, limit: int = 4096) -> str:
    """A NUL-terminated UTF-8 string at ``ptr`` (at most ``limit`` bytes)."""
    if not 0 < ptr < memory_size:
        return ""
    raw = ctypes.string_at(base + ptr, min(limit, memory_size - ptr))
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def _read_column(base: int, memory_size: int, rows: int, index: int,
                 fields: Tuple[int, ...]) -> Tuple[str, pa.Array]:
    (code, _null_count, validity_ptr, validity_len, values_ptr, values_len,
     data_ptr, data_len, name_ptr, name_len) = fields
    what = f"output column {index}"
    arrow_type = _TYPES.get(code)
    if arrow_type is None:
        raise AbiViolation(f"{what} has unknown type code {code}")
    _span(memory_size, name_ptr, name_len, f"{what}'s name")
    name = (ctypes.string_at(base + name_ptr, name_len).decode("utf-8", "replace")
            if name_len else f"column{index}")
    validity = None
    if validity_ptr:
        if validity_len * 8 < rows:
            raise AbiViolation(f"{what} ({name!r}) has a validity bitmap of {validity_len} "
                               f"bytes for {rows} rows")
        validity = _copy_out(base, memory_size, validity_ptr, validity_len, f"{what}'s validity")
    if code in (12, 13):
        needed = (rows + 1) * 4
    elif code == 1:
        needed = (rows + 7) // 8
    else:
        needed = rows * arrow_type.bit_width // 8
    if values_len < needed:
        raise AbiViolation(f"{what} ({name!r}) has {values_len} bytes of values; "
                           f"{rows} rows of {arrow_type} need {needed}")
    buffers = [validity, _copy_out(base, memory_size, values_ptr, values_len,
                                   f"{what}'s values")]
    if code in (12, 13):
        buffers.append(_copy_out(base, memory_size, data_ptr, data_len, f"{what}'s data"))
    try:
        # The module's null_count is not trusted: Arrow counts the bitmap.
        array = pa.Array.from_buffers(arrow_type, rows, buffers,
                                      null_count=-1 if validity is not None else 0)
        # Full validation: offsets in range and monotonic, strings UTF-8.
        array.validate(full=True)
    except (pa.ArrowException, ValueError) as exc:
        raise AbiViolation(f"{what} ({name!r}) is not a valid {arrow_type} array: {exc}") from exc
    return name, array


def read_batch(base: int, memory_size: int, ptr: int) -> pa.RecordBatch:
    """The output batch whose descriptor the module returned at ``ptr``."""
    _span(memory_size, ptr, _HEADER.size, "the output descriptor")
    rows, ncols = _HEADER.unpack(ctypes.string_at(base + ptr, _HEADER.size))
    _span(memory_size, ptr + _HEADER.size, ncols * _COLUMN.size, "the output columns")
    names: List[str] = []
    arrays: List[pa.Array] = []
    at = ptr + _HEADER.size
    for index in range(ncols):
        fields = _COLUMN.unpack(ctypes.string_at(base + at, _COLUMN.size))
        name, array = _read_column(base, memory_size, rows, index, fields)
        names.append(name)
        arrays.append(array)
        at += _COLUMN.size
    if len(set(names)) != len(names):
        raise AbiViolation(f"output columns have duplicate names: {names}")
    if not arrays:
        return pa.RecordBatch.from_pylist([])
    return pa.RecordBatch.from_arrays(arrays, names=names)
