"""Codecs: values to bytes and back, for every transport (Kafka, Redis).

Built in: ``raw`` (bytes as they are), ``json`` and ``arrow`` (each message
holds one Arrow IPC stream; decoding builds the ``RecordBatch`` over the
message's own bytes, without a copy). Users add their own with
``register_codec``. A codec's ``decode`` raises ``DecodeError`` and nothing
else, so a transport can send exactly the bad values to a dead-letter channel;
``decode_many`` does that split for a whole fetch at once.
"""
from __future__ import annotations

import dataclasses
import datetime
import decimal
import json
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import pyarrow as pa

from .exceptions import ConfigurationError, DecodeError, EncodeError, SchemaError
from .schema import RowChecker, check_batch, rows_to_batch

__all__ = ["Codec", "RawCodec", "JsonCodec", "ArrowCodec", "register_codec",
           "get_codec", "codec_names", "decode_many"]

#: ``(index in the fetched payloads, the error)`` for each value that failed.
Failures = List[Tuple[int, DecodeError]]


class Codec:
    """Base of codecs: a ``name``, ``encode(value) -> bytes``, ``decode(bytes)``.

    ``yields_batches`` is true for codecs whose every decoded value is a
    ``pyarrow.RecordBatch``: transports then deliver each message as its own
    batch instead of gathering the values of a fetch into one list.
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
    # The few non-JSON types that stream values commonly carry.
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "backslashreplace")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


class JsonCodec(Codec):
    """UTF-8 JSON, compact separators."""

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
        try:
            if isinstance(data, memoryview):
                data = bytes(data)
            text = data if isinstance(data, str) else data.decode("utf-8")
            return self._decode(text)
        except (ValueError, AttributeError) as exc:  # JSONDecodeError, UnicodeDecodeError, None
            raise DecodeError(f"invalid JSON: {exc}", codec=self.name,
                              payload=_as_bytes(data)) from exc


class ArrowCodec(Codec):
    """One Arrow IPC stream per message; decodes to a ``pyarrow.RecordBatch``.

    Decoding wraps the message bytes in a ``pyarrow.Buffer`` (no copy), so the
    batch's columns point into the message. A stream with several batches is
    combined into one (that case copies).
    """

    name = "arrow"
    yields_batches = True

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
        try:
            reader = pa.ipc.open_stream(pa.py_buffer(data))
            batches = list(reader)
            if len(batches) == 1:
                batch = batches[0]
            else:
                table = pa.Table.from_batches(batches, schema=reader.schema).combine_chunks()
                chunks = table.to_batches()
                batch = chunks[0] if chunks else pa.RecordBatch.from_pylist([], schema=reader.schema)
            # Cheap structural check: a corrupt body must fail here, not later
            # inside an agent.
            batch.validate()
            return batch
        except (pa.ArrowException, OSError, ValueError, TypeError) as exc:
            raise DecodeError(f"invalid Arrow IPC stream: {exc}", codec=self.name,
                              payload=_as_bytes(data)) from exc


def _as_bytes(data: Any) -> Optional[bytes]:
    try:
        return bytes(data)
    except TypeError:
        return None


_REGISTRY: Dict[str, Codec] = {}


def register_codec(name: str, codec: Codec) -> None:
    """Make ``codec`` available by ``name`` (``value_serializer=name``)."""
    if not isinstance(name, str) or not name:
        raise ConfigurationError(f"codec name must be a non-empty string, got {name!r}")
    if not (callable(getattr(codec, "encode", None)) and callable(getattr(codec, "decode", None))):
        raise ConfigurationError(f"codec {name!r} needs encode() and decode() methods")
    _REGISTRY[name] = codec


def get_codec(name_or_codec: Union[str, Codec]) -> Codec:
    """The codec registered as ``name_or_codec``, or the codec object itself."""
    if isinstance(name_or_codec, str):
        try:
            return _REGISTRY[name_or_codec]
        except KeyError:
            raise ConfigurationError(
                f"unknown codec {name_or_codec!r} (known: {', '.join(codec_names())})") from None
    if name_or_codec is None or not callable(getattr(name_or_codec, "decode", None)):
        raise ConfigurationError(f"not a codec: {name_or_codec!r}")
    return name_or_codec


def codec_names() -> List[str]:
    """Names of every registered codec, sorted."""
    return sorted(_REGISTRY)


def decode_many(codec: Union[str, Codec], payloads: Sequence[bytes],
                schema: Optional[pa.Schema] = None) -> Tuple[Any, Failures]:
    """Decode a fetch at once: ``(values, failures)``.

    ``values`` holds the good values in order (the failed indices left out):
    a list, or with ``schema`` and a value codec one ``RecordBatch`` of all
    rows. ``arrow`` values stay one RecordBatch per message (checked against
    ``schema``), because joining them would copy. ``failures`` lists
    ``(index, DecodeError)``; a value that does not fit ``schema`` is a failure.
    """
    codec = get_codec(codec)
    if type(codec) is RawCodec:  # hot path: nothing to decode, nothing fails
        return (payloads if type(payloads) is list else list(payloads)), []
    failures: Failures = []
    values: List[Any] = []
    decode = codec.decode
    for i, data in enumerate(payloads):
        try:
            values.append(decode(data))
        except DecodeError as exc:
            failures.append((i, exc))
        except Exception as exc:  # a user codec broke the contract: still a decode error
            failures.append((i, DecodeError(f"{codec.name} codec failed: {exc!r}",
                                            codec=codec.name, payload=_as_bytes(data))))
    if schema is None:
        return values, failures
    if getattr(codec, "yields_batches", False):
        return _check_batches(codec, payloads, values, failures, schema)
    return _rows_to_batch(codec, payloads, values, failures, schema)


def _good_indices(n: int, failures: Failures) -> List[int]:
    bad = {i for i, _ in failures}
    return [i for i in range(n) if i not in bad]


def _schema_failure(codec: Codec, data: Any, exc: SchemaError) -> DecodeError:
    err = DecodeError(f"value does not fit the schema: {exc}", codec=codec.name,
                      payload=_as_bytes(data))
    err.__cause__ = exc
    return err


def _check_batches(codec: Codec, payloads: Sequence[bytes], batches: List[Any],
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


def _rows_to_batch(codec: Codec, payloads: Sequence[bytes], rows: List[Any],
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
