"""Codecs: values to bytes and back, for every transport (Kafka, Redis).

Built in: ``raw`` (bytes as they are), ``json`` and ``arrow`` (each message
holds one Arrow IPC stream; decoding builds the ``RecordBatch`` over the
message's own bytes, without a copy, and validates it in full first). Users
add their own with ``register_codec``. A codec's ``decode`` raises
``DecodeError`` and nothing else, so a transport can send exactly the bad
values to a dead-letter channel; ``decode_many`` does that split for a whole
fetch at once.

A null value (a Kafka tombstone) decodes to ``None`` as in Faust, without
calling the codec, except where every value must be a row or a RecordBatch
(the ``arrow`` codec, a channel with a ``schema``): there it is a decode
failure, so a dead letter.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import pyarrow as pa
import pyarrow.types as pat

from .arrow_ipc import decoded_size
from .exceptions import ConfigurationError, DecodeError, EncodeError, SchemaError
from .schema import RowChecker, check_batch, rows_to_batch
from .types import CodecT

__all__ = ["Codec", "RawCodec", "JsonCodec", "ArrowCodec", "register_codec",
           "get_codec", "codec_names", "decode_many"]

#: ``(index in the fetched payloads, the error)`` for each value that failed.
Failures = List[Tuple[int, DecodeError]]

#: How a null value (a Kafka tombstone) is named in decode errors.
TOMBSTONE = "null value (tombstone)"
#: Default bound on what one Arrow message may take once decoded (256 MiB).
DEFAULT_MAX_DECODED_BYTES = 256 * 1024 * 1024

#: An Arrow message may hold at most this many rows per byte: a boolean
#: column without nulls, the densest column with buffers, takes one bit a row.
MAX_ROWS_PER_BYTE = 8


class Codec:
    """Base of codecs: a ``name``, ``encode(value) -> bytes``, ``decode(bytes)``.

    ``yields_batches`` is true for codecs whose every decoded value is a
    ``pyarrow.RecordBatch``: transports then deliver each message as its own
    batch instead of gathering the values of a fetch into one list.
    A codec need not subclass this: ``sabot.types.CodecT`` says what one is.
    """

    name = "codec"
    yields_batches = False

    def encode(self, value: Any) -> bytes:
        """Serialize ``value``; raise ``EncodeError`` when it cannot be."""
        raise NotImplementedError

    def decode(self, data: bytes) -> Any:
        """Deserialize ``data``; raise ``DecodeError`` (only) when it cannot be."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


class RawCodec(Codec):
    """Bytes in, bytes out. ``str`` is accepted on encode as UTF-8."""

    name = "raw"

    def encode(self, value: Any) -> bytes:
        if isinstance(value, bytes):
            return value
        if isinstance(value, (bytearray, memoryview)):
            return bytes(value)
        if isinstance(value, str):
            return value.encode("utf-8")
        raise EncodeError(f"raw codec takes bytes or str, got {type(value).__name__}")

    def decode(self, data: bytes) -> Any:
        return data


def _json_default(value: Any) -> Any:
    # Faust's conversions (faust.utils.json.on_default): sets, tuples and
    # deques as lists, UUID and Decimal as text, dates in ISO 8601 with Z for
    # UTC, an Enum as its value, a Counter as a dict, a Record in Faust's
    # layout (``__json__``); and a dataclass as a dict (Faust has none).
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    from .models.json_layout import on_default  # here: models import this module
    return on_default(value)


class JsonCodec(Codec):
    """UTF-8 JSON, compact separators, what Faust's ``json`` codec writes.

    Values JSON has no type for are written as Faust writes them (see
    ``sabot.models.json_layout.on_default``), except ``bytes``: UTF-8 text,
    where Faust writes their ``repr``.
    """

    name = "json"

    def __init__(self) -> None:
        self._encoder = json.JSONEncoder(separators=(",", ":"), default=_json_default)
        self._decode = json.JSONDecoder().decode

    def encode(self, value: Any) -> bytes:
        try:
            return self._encoder.encode(value).encode("utf-8")
        except (TypeError, ValueError) as exc:
            raise EncodeError(f"json codec cannot encode {type(value).__name__}: {exc}") from exc

    def decode(self, data: bytes) -> Any:
        if data is None:  # a tombstone: no value, as in Faust
            return None
        try:
            if isinstance(data, memoryview):
                data = bytes(data)
            text = data if isinstance(data, str) else data.decode("utf-8")
            return self._decode(text)
        except (ValueError, AttributeError, RecursionError) as exc:
            # JSONDecodeError, UnicodeDecodeError, not bytes, nested too deep
            raise DecodeError(f"invalid JSON: {exc}", codec=self.name,
                              payload=_as_bytes(data)) from exc


class ArrowCodec(Codec):
    """One Arrow IPC stream per message; decodes to a ``pyarrow.RecordBatch``.

    Decoding wraps the message bytes in a ``pyarrow.Buffer`` (no copy), so the
    batch's columns point into the message. Every batch read is validated in
    full (``validate(full=True)``: every offset, dictionary index, UTF-8
    string, child length) before anything else touches it: a message from
    outside the process can be crafted so that the cheap checks pass and
    reading its values crashes the process. A stream with several batches is
    then combined into one (that case copies). A compressed stream that would
    grow past ``max_decoded_bytes`` is refused before it is decompressed.
    """

    name = "arrow"
    yields_batches = True

    def __init__(self, max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES) -> None:
        #: A message whose buffers would take more than this once decoded is
        #: refused before anything is decompressed (a decompression bomb).
        self.max_decoded_bytes = max_decoded_bytes

    def encode(self, value: Any) -> bytes:
        if isinstance(value, pa.Table):
            batches = value.combine_chunks().to_batches()
            value = batches[0] if len(batches) == 1 else pa.RecordBatch.from_pylist([], schema=value.schema)
        if not isinstance(value, pa.RecordBatch):
            raise EncodeError(f"arrow codec takes a pyarrow.RecordBatch, got {type(value).__name__}")
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, value.schema) as writer:
            writer.write_batch(value)
        return sink.getvalue().to_pybytes()

    def decode(self, data: bytes) -> Any:
        if data is None:
            raise DecodeError(f"{TOMBSTONE}: the arrow codec needs one Arrow IPC stream "
                              f"per message", codec=self.name, payload=None)
        try:
            size = decoded_size(data)
            if size > self.max_decoded_bytes:
                raise DecodeError(
                    f"Arrow IPC stream would take {size} bytes once decompressed, more than "
                    f"the codec's max_decoded_bytes ({self.max_decoded_bytes}): refused "
                    f"before decoding", codec=self.name)
            return _read_ipc_stream(data)
        except DecodeError as exc:
            if exc.payload is None:
                exc.payload = _as_bytes(data)
            raise
        except Exception as exc:  # noqa: BLE001 - whatever the bytes did, it is a bad value
            # pyarrow raises ArrowInvalid, ArrowIndexError, OSError, MemoryError
            # (a length claiming terabytes), UnicodeDecodeError (a field name),
            # or what a registered extension type's deserializer raises.
            raise DecodeError(f"invalid Arrow IPC stream: {type(exc).__name__}: {exc}",
                              codec=self.name, payload=_as_bytes(data)) from exc


def _read_ipc_stream(data: Any) -> pa.RecordBatch:
    """The one RecordBatch of an IPC stream, every batch validated in full first."""
    reader = pa.ipc.open_stream(data if isinstance(data, pa.Buffer) else pa.py_buffer(data))
    schema = reader.schema
    _check_field_names(schema)
    most_rows = MAX_ROWS_PER_BYTE * len(data) + 64
    batches = []
    rows = 0
    for batch in reader:
        rows += batch.num_rows
        if rows > most_rows:
            # Valid Arrow, yet a few bytes claiming billions of rows (no
            # column, a null column, one long run) would have every per-row
            # step after this, down to the transport's, run out of memory.
            raise DecodeError(f"invalid Arrow IPC stream: {rows} rows in a message of "
                              f"{len(data)} bytes", codec="arrow")
        # Before anything reads a value (combine_chunks below would follow
        # the offsets): the cheap validate() misses out-of-range offsets in
        # the middle of a column, dictionary indices and invalid UTF-8.
        batch.validate(full=True)
        _check_what_validate_misses(batch)
        batches.append(batch)
    if len(batches) == 1:
        return batches[0]
    table = pa.Table.from_batches(batches, schema=schema).combine_chunks()
    chunks = table.to_batches()
    if not chunks:
        return pa.RecordBatch.from_arrays(
            [pa.array([], type=field.type) for field in schema], schema=schema)
    if len(chunks) > 1:
        raise DecodeError("invalid Arrow IPC stream: its batches do not fit in one",
                          codec="arrow")
    return chunks[0]


#: Type ids of the arrays with an offsets buffer and no child.
_BINARY_IDS = frozenset(t.id for t in (pa.string(), pa.binary(), pa.large_string(),
                                       pa.large_binary()))
_LARGE_IDS = frozenset(t.id for t in (pa.large_string(), pa.large_binary(),
                                      pa.large_list(pa.int8())))
#: String and binary views (pyarrow >= 16; older ones have no view types).
_VIEW_IDS = frozenset(getattr(pa, name)().id for name in ("string_view", "binary_view")
                      if hasattr(pa, name))


def _needs_a_look(t: pa.DataType, rows: int) -> bool:
    """Whether a column of type ``t`` may hide what full validation misses."""
    if t.num_fields or isinstance(t, (pa.DictionaryType, pa.BaseExtensionType)):
        return True
    return t.id in _VIEW_IDS or (rows == 0 and t.id in _BINARY_IDS)


def _check_what_validate_misses(batch: pa.RecordBatch) -> None:
    """Two holes of ``validate(full=True)`` that crash pyarrow afterwards:

    - the one offset of an empty list or binary array (nested ones too):
      offsets are checked only for arrays with values, yet ``flatten()`` of
      an empty list whose offset points past its child aborts the process;
    - the views of null slots of a string or binary view array: they are
      not checked, and casting one whose null slot has a negative length
      to ``string`` segfaults.

    Flat columns with rows (numbers, strings: the common case) need nothing.
    """
    rows = batch.num_rows
    todo = [batch.column(i) for i, t in enumerate(batch.schema.types) if _needs_a_look(t, rows)]
    while todo:
        arr = todo.pop()
        t = arr.type
        if isinstance(t, pa.BaseExtensionType):
            todo.append(arr.storage)
        elif isinstance(t, pa.DictionaryType):
            todo.append(arr.dictionary)
        elif t.id in _BINARY_IDS:
            if len(arr) == 0:
                data = arr.buffers()[2]
                _check_first_offset(arr, 8 if t.id in _LARGE_IDS else 4,
                                    data.size if data is not None else 0)
        elif t.id in _VIEW_IDS:
            if arr.null_count:
                _check_null_views(arr)
        elif pat.is_list(t) or pat.is_large_list(t) or pat.is_map(t):
            values = arr.values  # the whole child, whatever the offsets say
            if len(arr) == 0:
                _check_first_offset(arr, 8 if t.id in _LARGE_IDS else 4, len(values))
            todo.append(values)
        elif t.num_fields:  # struct, union, fixed-size list, run-end encoded, list view
            todo.extend(_children(arr, t))


def _check_null_views(arr: pa.Array) -> None:
    import pyarrow.compute as pc

    buffers = arr.buffers()
    sizes = [b.size if b is not None else 0 for b in buffers[2:]]
    # Each view is four int32s: length, then a prefix or inline bytes, then
    # (for longer strings) the data buffer's index and the offset in it.
    words = pa.Array.from_buffers(pa.int32(), 4 * (arr.offset + len(arr)),
                                  [None, buffers[1]]).slice(4 * arr.offset)
    views = pa.FixedSizeListArray.from_arrays(words, 4)
    lengths = pc.list_element(views, 0)
    nulls = arr.is_null()
    out_of_line = pc.and_(nulls, pc.greater(lengths, 12))
    if pc.any(pc.and_(nulls, pc.less(lengths, 0))).as_py():
        raise DecodeError(f"invalid Arrow IPC stream: a null slot of a {arr.type} array "
                          f"has a negative length", codec="arrow")
    if not pc.any(out_of_line).as_py():
        return
    for length, index, offset in zip(pc.filter(lengths, out_of_line).to_pylist(),
                                     pc.filter(pc.list_element(views, 2), out_of_line).to_pylist(),
                                     pc.filter(pc.list_element(views, 3), out_of_line).to_pylist()):
        if not (0 <= index < len(sizes) and 0 <= offset and offset + length <= sizes[index]):
            raise DecodeError(f"invalid Arrow IPC stream: a null slot of a {arr.type} "
                              f"array points outside its data", codec="arrow")


def _children(arr: pa.Array, t: pa.DataType) -> List[pa.Array]:
    if pat.is_struct(t) or pat.is_union(t):
        return [arr.field(i) for i in range(t.num_fields)]
    if pat.is_run_end_encoded(t):
        return [arr.values]
    values = getattr(arr, "values", None)  # fixed-size list, list views
    return [values] if values is not None else []


def _check_first_offset(arr: pa.Array, width: int, limit: int) -> None:
    offsets = arr.buffers()[1]
    start = arr.offset * width
    if offsets is None or offsets.size < start + width:
        return  # an empty array may leave its offsets out
    first = int.from_bytes(memoryview(offsets)[start:start + width], "little", signed=True)
    if not 0 <= first <= limit:
        raise DecodeError(f"invalid Arrow IPC stream: an empty {arr.type} array has "
                          f"offset {first} outside 0..{limit}", codec="arrow")


def _check_field_names(schema: pa.Schema) -> None:
    """Every field name, nested ones too, must be UTF-8: pyarrow decodes them
    when a value is read (``to_pylist``), and a bad one would raise there,
    inside an agent, instead of here."""
    try:
        _ = schema.names  # the top level, decoded in one go
        todo = [t for t in schema.types
                if t.num_fields or isinstance(t, (pa.DictionaryType, pa.BaseExtensionType))]
        while todo:
            t = todo.pop()
            if isinstance(t, pa.BaseExtensionType):
                todo.append(t.storage_type)
            elif isinstance(t, pa.DictionaryType):
                todo.append(t.value_type)
            else:
                for i in range(t.num_fields):
                    field = t.field(i)
                    _ = field.name
                    todo.append(field.type)
    except UnicodeDecodeError:
        raise DecodeError("invalid Arrow IPC stream: a field name is not UTF-8",
                          codec="arrow") from None


def _as_bytes(data: Any) -> Optional[bytes]:
    try:
        return bytes(data)
    except TypeError:
        return None


_REGISTRY: Dict[str, CodecT] = {}

#: What a codec object needs (``sabot.types.CodecT``), for error messages.
_CODEC_NEEDS = "name, yields_batches, encode() and decode() (subclass sabot.codecs.Codec)"


def register_codec(name: str, codec: CodecT) -> None:
    """Make ``codec`` available by ``name`` (``value_serializer=name``)."""
    if not isinstance(name, str) or not name:
        raise ConfigurationError(f"codec name must be a non-empty string, got {name!r}")
    if not isinstance(codec, CodecT):
        raise ConfigurationError(f"codec {name!r} needs {_CODEC_NEEDS}")
    _REGISTRY[name] = codec


def get_codec(name_or_codec: Union[str, CodecT]) -> CodecT:
    """The codec registered as ``name_or_codec``, or the codec object itself."""
    if isinstance(name_or_codec, str):
        try:
            return _REGISTRY[name_or_codec]
        except KeyError:
            raise ConfigurationError(
                f"unknown codec {name_or_codec!r} (known: {', '.join(codec_names())})") from None
    if not isinstance(name_or_codec, CodecT):
        raise ConfigurationError(f"not a codec: {name_or_codec!r} (a codec has {_CODEC_NEEDS})")
    return name_or_codec


def codec_names() -> List[str]:
    """Names of every registered codec, sorted."""
    return sorted(_REGISTRY)


def decode_many(codec: Union[str, CodecT], payloads: Sequence[bytes],
                schema: Optional[pa.Schema] = None) -> Tuple[Any, Failures]:
    """Decode a fetch at once: ``(values, failures)``.

    ``values`` holds the good values in order (the failed indices left out):
    a list, or with ``schema`` and a value codec one ``RecordBatch`` of all
    rows. ``arrow`` values stay one RecordBatch per message (checked against
    ``schema``), because joining them would copy. ``failures`` lists
    ``(index, DecodeError)``; a value that does not fit ``schema`` is a failure.

    A null payload (a Kafka tombstone) is ``None`` among the values, as in
    Faust, without calling the codec; where every value must be a
    RecordBatch (``arrow``) or a row (``schema``) it is a failure.
    """
    codec = get_codec(codec)
    if type(codec) is RawCodec:  # hot path: nothing to decode, nothing fails
        return (payloads if type(payloads) is list else list(payloads)), []
    failures: Failures = []
    values: List[Any] = []
    decode = codec.decode
    batches = codec.yields_batches
    for i, data in enumerate(payloads):
        if data is None:
            if batches or schema is not None:
                failures.append((i, _tombstone_failure(codec, batches)))
            else:
                values.append(None)
            continue
        try:
            values.append(decode(data))
        except DecodeError as exc:
            failures.append((i, exc))
        except Exception as exc:  # a user codec broke the contract: still a decode error
            failures.append((i, DecodeError(f"{codec.name} codec failed: {exc!r}",
                                            codec=codec.name, payload=_as_bytes(data))))
    if schema is None:
        return values, failures
    if batches:
        return _check_batches(codec, payloads, values, failures, schema)
    return _rows_to_batch(codec, payloads, values, failures, schema)


def _tombstone_failure(codec: CodecT, batches: bool) -> DecodeError:
    if batches:
        why = f"the {codec.name} codec needs a RecordBatch in every message"
    else:
        why = "a channel with a schema needs a row in every message"
    return DecodeError(f"{TOMBSTONE}: {why}", codec=codec.name, payload=None)


def _good_indices(n: int, failures: Failures) -> List[int]:
    bad = {i for i, _ in failures}
    return [i for i in range(n) if i not in bad]


def _schema_failure(codec: CodecT, data: Any, exc: SchemaError) -> DecodeError:
    err = DecodeError(f"value does not fit the schema: {exc}", codec=codec.name,
                      payload=_as_bytes(data))
    err.__cause__ = exc
    return err


def _check_batches(codec: CodecT, payloads: Sequence[bytes], batches: List[Any],
                   failures: Failures, schema: pa.Schema) -> Tuple[Any, Failures]:
    good: List[Any] = []
    for i, batch in zip(_good_indices(len(payloads), failures), batches):
        try:
            check_batch(schema, batch)
        except SchemaError as exc:
            failures.append((i, _schema_failure(codec, payloads[i], exc)))
            continue
        good.append(batch)
    failures.sort(key=lambda f: f[0])
    return good, failures


def _rows_to_batch(codec: CodecT, payloads: Sequence[bytes], rows: List[Any],
                   failures: Failures, schema: pa.Schema) -> Tuple[Any, Failures]:
    checker = RowChecker(schema)
    good: List[Any] = []
    for i, row in zip(_good_indices(len(payloads), failures), rows):
        try:
            checker.check(row)
        except SchemaError as exc:
            failures.append((i, _schema_failure(codec, payloads[i], exc)))
            continue
        good.append((i, row))
    try:
        batch = rows_to_batch(schema, [row for _, row in good])
    except SchemaError:
        # A value passed the quick check but Arrow refused it (an int out of
        # range, say): find it row by row so only it is dead-lettered.
        kept = []
        for i, row in good:
            try:
                rows_to_batch(schema, [row])
            except SchemaError as exc:
                failures.append((i, _schema_failure(codec, payloads[i], exc)))
                continue
            kept.append(row)
        batch = rows_to_batch(schema, kept)
    failures.sort(key=lambda f: f[0])
    return batch, failures


register_codec("raw", RawCodec())
register_codec("json", JsonCodec())
register_codec("arrow", ArrowCodec())
