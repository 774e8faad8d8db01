"""What crosses a process boundary: Arrow IPC for data, JSON for the rest.

A message is one *frame*: a fixed prefix (header length, body length), a JSON
header, then a body made of the inline parts back to back. Values are
described in the header:

* ``{"k": "json", "v": ...}``: a JSON-able value, inline in the header;
* ``{"k": "batch", "s": i, "p": j}``: a small RecordBatch as its two IPC
  messages, schema (part ``i``) and record batch (part ``j``);
* ``{"k": "table" | "values" | "list", "p": i}``: a small IPC stream, part ``i``
  (also a small RecordBatch with dictionary fields: ``serialize()`` omits
  dictionaries, a stream carries them);
* ``{"k": ..., "shm": name}``: a large value's IPC stream in a one-shot
  shared-memory segment, which the reader maps (no copy) and unlinks;
* ``{"k": ..., "shm": name, "n": size, "pool": 1}``: the same in a segment of
  the writer's ``ShmArena``, reused once the reader releases it.

``values`` is a list of one plain type (int, float, str, bool or bytes)
carried as one Arrow column; ``list`` is any other list of JSON-able values,
carried as one ``large_string`` column of JSON texts, so that it takes the
same road as a batch. ``tjson`` and ``tlist`` are ``json`` and ``list`` whose
values hold bytes, tuples or records (``sabot.Record``), which JSON has no
type for: those are tagged (``tag``/``untag``) and come back as they were. Nothing here pickles: a frame
is bytes the reader parses.
"""
from __future__ import annotations

import base64
import json
import struct
from typing import Any, Dict, List, Optional, Sequence, Tuple

import pyarrow as pa

from .._fastpath import Batch
from ..exceptions import ConversionError
from ..models.json_layout import dumps as faust_json
from ..models.namespace import registry
from ..models.record import Record
from .arena import ShmArena
from .shm import discard_segment, map_segment, write_segment

__all__ = ["DEFAULT_INLINE_THRESHOLD", "FrameWriter", "FrameReader", "convert",
           "discard_frame",
           "FrameDecoder", "pack_frame", "Frame"]

#: Data smaller than this travels inside the message; larger goes by shm.
DEFAULT_INLINE_THRESHOLD = 64 * 1024

_PREFIX = struct.Struct("<IQ")  # header length, body length
_JSON_LIST_FIELD = "json"
_JSON_LIST_SCHEMA = pa.schema([(_JSON_LIST_FIELD, pa.large_string())])


# json.dumps with default arguments reuses one cached encoder; any keyword
# argument builds a new encoder per call, which costs more than the message.
_dumps = json.dumps
_SCALARS = (str, int, float, bool, type(None))
_SCHEMA_CACHE_SIZE = 64
# Schemas repeat from batch to batch: serialize and parse each one once.
_schema_bytes: Dict[int, Tuple[pa.Schema, Optional[pa.Buffer]]] = {}
_schemas_read: Dict[bytes, pa.Schema] = {}


def _has_dictionary(arrow_type: pa.DataType) -> bool:
    if pa.types.is_dictionary(arrow_type):
        return True
    return any(_has_dictionary(arrow_type.field(i).type)
               for i in range(arrow_type.num_fields))


def _serialized_schema(schema: pa.Schema) -> Optional[pa.Buffer]:
    """The schema's IPC message; None if it has dictionary fields.

    ``RecordBatch.serialize()`` leaves dictionaries out, so a batch with a
    dictionary-encoded field (at any depth) must travel as a whole stream.
    """
    hit = _schema_bytes.get(id(schema))
    # The cached schema object is kept alive, so its id cannot be reused.
    if hit is not None and hit[0] is schema:
        return hit[1]
    if len(_schema_bytes) >= _SCHEMA_CACHE_SIZE:
        _schema_bytes.clear()
    if any(_has_dictionary(field.type) for field in schema):
        buf = None
    else:
        buf = schema.serialize()
    _schema_bytes[id(schema)] = (schema, buf)
    return buf


def _parsed_schema(buf: pa.Buffer) -> pa.Schema:
    key = buf.to_pybytes()
    schema = _schemas_read.get(key)
    if schema is None:
        if len(_schemas_read) >= _SCHEMA_CACHE_SIZE:
            _schemas_read.clear()
        schema = _schemas_read[key] = pa.ipc.read_schema(buf)
    return schema


# Python types that an Arrow column gives back unchanged (to_pylist), so a
# list of one of them can skip JSON.
_NATIVE_TYPES = {int: pa.int64(), float: pa.float64(), str: pa.large_string(),
                 bool: pa.bool_(), bytes: pa.large_binary()}


def _native_column(values: Any) -> Optional[pa.RecordBatch]:
    """A one-column batch for a non-empty list of one plain type, else None."""
    if not values:
        return None
    kind = type(values[0])
    arrow_type = _NATIVE_TYPES.get(kind)
    if arrow_type is None or any(type(v) is not kind for v in values):
        return None
    try:
        column = pa.array(values, type=arrow_type)
    except (pa.ArrowException, OverflowError, UnicodeError):
        # e.g. an int beyond 64 bits, or a str with a lone surrogate (not
        # UTF-8): JSON keeps it exact.
        return None
    return pa.RecordBatch.from_arrays([column], names=["value"])


_CONTAINERS = (dict, list, tuple)


def _check_keys(value: Any) -> None:
    """``ConversionError`` if a dict in ``value`` has a key that is not a str.

    JSON would turn such a key into a string (``{1: "a"}`` arriving as
    ``{"1": "a"}``): refused rather than silently changed.
    """
    pending = [value]
    while pending:
        node = pending.pop()
        if isinstance(node, dict):
            for key, item in node.items():
                if not isinstance(key, str):
                    raise ConversionError(
                        f"dict key {key!r} ({type(key).__name__}) cannot cross the "
                        f"bridge: JSON would turn it into a string")
                if isinstance(item, _CONTAINERS):
                    pending.append(item)
        else:
            for item in node:
                if isinstance(item, _CONTAINERS):
                    pending.append(item)


#: Tags that carry what JSON has no type for: bytes (base64) and tuples.
_BYTES_TAG = "__sabot_bytes__"
_TUPLE_TAG = "__sabot_tuple__"
#: A record crosses as ``[namespace, its Faust JSON]`` and is rebuilt as its
#: class on the other side (the app's module defines it there too).
_RECORD_TAG = "__sabot_record__"


def tag(value: Any) -> Any:
    """``value`` made JSON-able: bytes and tuples become tagged dicts."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {_BYTES_TAG: base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, tuple):
        return {_TUPLE_TAG: [tag(v) for v in value]}
    if isinstance(value, Record):
        return {_RECORD_TAG: [value._options.namespace, faust_json(value).decode("utf-8")]}
    if isinstance(value, list):
        return [tag(v) for v in value]
    if isinstance(value, dict):
        return {k: tag(v) for k, v in value.items()}
    return value


def untag(value: Any) -> Any:
    """The inverse of ``tag``."""
    if isinstance(value, dict):
        if len(value) == 1:
            if _BYTES_TAG in value:
                return base64.b64decode(value[_BYTES_TAG])
            if _TUPLE_TAG in value:
                return tuple(untag(v) for v in value[_TUPLE_TAG])
            if _RECORD_TAG in value:
                return _record(value[_RECORD_TAG])
        return {k: untag(v) for k, v in value.items()}
    if isinstance(value, list):
        return [untag(v) for v in value]
    return value


def _record(tagged: Any) -> Any:
    """A record tagged by ``tag``, rebuilt as its class (registered here too)."""
    try:
        namespace, text = tagged
        model = registry[namespace]
        return model.from_data(json.loads(text), preferred_type=model)
    except Exception as exc:  # noqa: BLE001 - whatever it was, the value cannot cross
        raise ConversionError(f"a record cannot cross the bridge: {type(exc).__name__}: "
                              f"{exc} (is its class defined in the worker process?)") from exc


def _needs_tags(value: Any) -> bool:
    """True when ``value`` holds bytes, a tuple or a record (plain JSON would lose them)."""
    pending = [value]
    while pending:
        node = pending.pop()
        if isinstance(node, (bytes, bytearray, memoryview, tuple, Record)):
            return True
        if isinstance(node, dict):
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)
    return False


def _json_texts(values: Sequence[Any]) -> List[str]:
    try:
        return [_dumps(v) for v in values]
    except (TypeError, ValueError) as exc:
        raise ConversionError(f"list item cannot cross the bridge as JSON: {exc}") from exc


def _as_arrow(value: Any) -> Tuple[str, pa.Schema, Any]:
    """Classify ``value``: (kind, schema, batch or table) or kind ``json``."""
    if isinstance(value, pa.RecordBatch):
        return "batch", value.schema, value
    if isinstance(value, pa.Table):
        return "table", value.schema, value
    if isinstance(value, (list, tuple)):
        native = _native_column(value)
        if native is not None:
            return "values", native.schema, native
        kind = "list"
        if _needs_tags(list(value)):
            kind, value = "tlist", [tag(v) for v in value]
        texts = _json_texts(value)
        _check_keys(value)  # after dumps, which refuses circular values
        column = pa.array(texts, type=pa.large_string())
        return kind, _JSON_LIST_SCHEMA, pa.RecordBatch.from_arrays(
            [column], schema=_JSON_LIST_SCHEMA)
    return "json", None, None


def _write_stream(sink: Any, schema: pa.Schema, data: Any) -> None:
    with pa.ipc.new_stream(sink, schema) as writer:
        if isinstance(data, pa.Table):
            writer.write_table(data)
        else:
            writer.write_batch(data)


class FrameWriter:
    """Builds one frame: describe values into the header, collect the body.

    ``segments`` lists the shared-memory names this frame hands over; if the
    frame is never read the sender passes them to ``discard_segment``.
    """

    def __init__(self, inline_threshold: int = DEFAULT_INLINE_THRESHOLD,
                 arena: Optional[ShmArena] = None) -> None:
        self.inline_threshold = inline_threshold
        self.arena = arena
        self.parts: List[Any] = []
        self.segments: List[str] = []
        #: Pooled segments (of ``arena``) this frame fills.
        self.leased: List[str] = []
        #: Arrow bytes this frame carries (inline and shm), for metrics.
        self.data_bytes = 0

    def describe(self, value: Any) -> Dict[str, Any]:
        """Return the header description of ``value``, storing its data."""
        if isinstance(value, Batch):
            value = value.payload  # a sabot Batch: its payload is the data
        kind, schema, data = _as_arrow(value)
        if kind == "json":
            if isinstance(value, _SCALARS):
                return {"k": "json", "v": value}
            kind = "json"
            if _needs_tags(value):
                kind, value = "tjson", tag(value)
            try:
                _dumps(value)
            except (TypeError, ValueError) as exc:
                raise ConversionError(
                    f"{type(value).__name__} cannot cross the bridge: it is "
                    f"neither Arrow data, a list, nor JSON-able ({exc})") from exc
            _check_keys(value)
            return {"k": kind, "v": value}
        try:
            if data.get_total_buffer_size() < self.inline_threshold:
                # A batch goes as its two IPC messages, schema and record
                # batch: a third of the cost of writing a whole stream;
                # unless it has dictionaries, which only a stream carries.
                schema_buf = None if kind == "table" else _serialized_schema(schema)
                if schema_buf is None:
                    sink = pa.BufferOutputStream()
                    _write_stream(sink, schema, data)
                    return {"k": kind, "p": self._add_part(sink.getvalue())}
                return {"k": kind, "s": self._add_part(schema_buf),
                        "p": self._add_part(data.serialize())}
            counter = pa.MockOutputStream()
            _write_stream(counter, schema, data)
            size = counter.size()
            leased = self.arena.lease(size) if self.arena is not None else None
            if leased is not None:
                name, target = leased
                self.leased.append(name)
                _fill(target, schema, data)
                del target
                self.data_bytes += size
                return {"k": kind, "shm": name, "n": size, "pool": 1}
            name = write_segment(size, lambda target: _fill(target, schema, data))
        except pa.ArrowException as exc:
            raise ConversionError(f"cannot write {kind} as Arrow IPC: {exc}") from exc
        self.segments.append(name)
        self.data_bytes += size
        return {"k": kind, "shm": name}

    def _add_part(self, buf: pa.Buffer) -> int:
        self.parts.append(buf)
        self.data_bytes += buf.size
        return len(self.parts) - 1

    def describe_many(self, values: Sequence[Any]) -> List[Dict[str, Any]]:
        """Describe each of ``values``; a list of descriptions."""
        return [self.describe(v) for v in values]

    def finish(self, header: Dict[str, Any]) -> List[Any]:
        """Return the frame's buffers: prefix, header, then the body parts.

        With an arena, the header also tells the peer which of its segments
        this side has released.
        """
        header["parts"] = [p.size for p in self.parts]
        if self.arena is not None:
            released = self.arena.take_released()
            if released:
                header["released"] = released
        head = _dumps(header).encode()
        body_len = sum(p.size for p in self.parts)
        return [_PREFIX.pack(len(head), body_len), head, *self.parts]

    def discard(self) -> None:
        """Remove the segments of a frame that will never be read."""
        for name in self.segments:
            discard_segment(name)
        self.segments.clear()
        if self.arena is not None:
            self.arena.give_back(self.leased)
        self.leased.clear()


def _fill(target: pa.Buffer, schema: pa.Schema, data: Any) -> None:
    sink = pa.FixedSizeBufferWriter(target)
    try:
        _write_stream(sink, schema, data)
    finally:
        sink.close()


def pack_frame(header: Dict[str, Any]) -> List[Any]:
    """A frame with a header and no data."""
    return FrameWriter().finish(header)


class FrameReader:
    """Turns the descriptions of one received frame back into values.

    Inline data is read in place from the received body and shared-memory
    data from the mapping: no copy either way.
    """

    def __init__(self, header: Dict[str, Any], body: Any,
                 arena: Optional[ShmArena] = None) -> None:
        self.header = header
        self.arena = arena
        if arena is not None:
            arena.give_back(header.get("released"))
        self._parts: List[pa.Buffer] = []
        whole = pa.py_buffer(body) if body is not None else None
        offset = 0
        for size in header.get("parts", ()):
            if whole is None:
                raise ConversionError("a bridge frame names data parts but has no body")
            self._parts.append(whole.slice(offset, size))
            offset += size
        #: Arrow bytes read out of this frame, for metrics.
        self.data_bytes = 0
        #: Shared-memory mappings read: the decoded data points into these.
        self.mapped: List[pa.Buffer] = []
        self._viewed: List[Dict[str, Any]] = []

    def value(self, desc: Dict[str, Any]) -> Any:
        """Decode one description into RecordBatch, Table, list or JSON value."""
        kind = desc.get("k")
        if kind == "json":
            return desc.get("v")
        if kind == "tjson":
            return untag(desc.get("v"))
        try:
            if desc.get("pool"):
                if self.arena is None:
                    raise ConversionError(f"cannot read {kind!r} data from the bridge: "
                                          f"a pooled segment needs the connection's arena")
                self._viewed.append(desc)
                source = self.arena.view(desc["shm"], desc["n"])
                self.mapped.append(source)
            elif "shm" in desc:
                source = map_segment(desc["shm"])
                self.mapped.append(source)
            else:
                source = self._parts[desc["p"]]
            self.data_bytes += source.size
            if "s" in desc:
                batch = pa.ipc.read_record_batch(source, self._schema(desc["s"]))
            else:
                reader = pa.ipc.open_stream(source)
                if kind == "table":
                    return reader.read_all()
                batch = reader.read_next_batch()
        except (pa.ArrowException, KeyError, IndexError, FileNotFoundError,
                AttributeError) as exc:
            raise ConversionError(f"cannot read {kind!r} data from the bridge: {exc}") from exc
        if kind == "batch":
            return batch
        if kind == "values":
            return batch.column(0).to_pylist()
        if kind == "list":
            return [json.loads(t) for t in batch.column(0).to_pylist()]
        if kind == "tlist":
            return [untag(json.loads(t)) for t in batch.column(0).to_pylist()]
        raise ConversionError(f"unknown value kind {kind!r} in a bridge message")

    def _schema(self, index: int) -> pa.Schema:
        part = self._parts[index]
        self.data_bytes += part.size
        return _parsed_schema(part)

    def values(self, descs: Sequence[Dict[str, Any]]) -> List[Any]:
        """Decode a list of descriptions."""
        return [self.value(d) for d in descs]

    def discard_unread(self, descs: Sequence[Dict[str, Any]]) -> None:
        """Unlink the segments of descriptions that will not be read."""
        viewed = {id(d) for d in self._viewed}
        for desc in descs:
            if desc.get("pool"):
                if id(desc) not in viewed and self.arena is not None:
                    self.arena.release_unread(desc["shm"])
            elif "shm" in desc:
                discard_segment(desc["shm"])


def discard_frame(header: Dict[str, Any], arena: Optional[ShmArena] = None) -> None:
    """Drop a received frame unread, releasing the shared memory it names.

    Its one-shot segments are unlinked, its pooled ones handed back to the
    peer, and the segments it says the peer released return to our pool.
    """
    if arena is not None:
        arena.give_back(header.get("released"))
    pending = [header]
    while pending:
        node = pending.pop()
        if isinstance(node, dict) and "k" in node:  # a value description
            if node.get("pool"):
                if arena is not None:
                    arena.release_unread(node["shm"])
            elif "shm" in node:
                discard_segment(node["shm"])
        elif isinstance(node, dict):
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)


def convert(value: Any, inline_threshold: int = DEFAULT_INLINE_THRESHOLD
            ) -> Tuple[Any, int, bool]:
    """Send ``value`` through a frame and read it back in this process.

    What a process boundary does to a value, without the process: returns
    ``(value, arrow_bytes, went_through_shm)``.
    """
    writer = FrameWriter(inline_threshold)
    desc = writer.describe(value)
    buffers = writer.finish({"v": desc})
    body = b"".join(memoryview(b) for b in buffers[2:]) or None
    try:
        out = FrameReader({"parts": [p.size for p in writer.parts]}, body).value(desc)
    except BaseException:
        writer.discard()
        raise
    return out, writer.data_bytes, bool(writer.segments)


#: A received frame: its header and its body bytes (None when empty).
#: ``(header, body)``: the body is a view of the received bytes (None: no data).
Frame = Tuple[Dict[str, Any], Optional[memoryview]]


class FrameDecoder:
    """Splits a received byte stream into frames."""

    def __init__(self) -> None:
        # The start of a frame split across receives, as received: joined
        # once, when the frame is complete (joining at every receive would
        # copy a large frame over and over: quadratic).
        self._chunks: List[bytes] = []
        self._have = 0
        self._need = 0  # the pending frame's whole size; 0 until its prefix came

    def feed(self, data: bytes) -> List[Frame]:
        """Add received bytes; return the complete ``(header, body)`` frames.

        Bodies are views of immutable bytes, so Arrow data read from them
        stays valid however long it is kept.
        """
        if self._chunks:
            self._chunks.append(data)
            self._have += len(data)
            if not self._need and self._have >= _PREFIX.size:
                hlen, blen = _PREFIX.unpack_from(b"".join(self._chunks)[:_PREFIX.size])
                self._need = _PREFIX.size + hlen + blen
            if not self._need or self._have < self._need:
                return []
            data = b"".join(self._chunks)
            self._chunks = []
            self._have = self._need = 0
        frames = []
        pos = 0
        size = len(data)
        view = memoryview(data)
        while size - pos >= _PREFIX.size:
            hlen, blen = _PREFIX.unpack_from(data, pos)
            end = pos + _PREFIX.size + hlen + blen
            if end > size:
                break
            hstart = pos + _PREFIX.size
            header = json.loads(data[hstart:hstart + hlen].decode())
            frames.append((header, view[hstart + hlen:end] if blen else None))
            pos = end
        if pos < size:
            rest = data[pos:]
            self._chunks = [rest]
            self._have = len(rest)
            if len(rest) >= _PREFIX.size:
                hlen, blen = _PREFIX.unpack_from(rest)
                self._need = _PREFIX.size + hlen + blen
        return frames
