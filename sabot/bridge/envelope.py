"""A batch's envelope, its keys, headers, timestamps and positions, as Arrow.

A process agent iterates the same ``Stream`` as a native one, so ``events()``
must see the keys, headers, timestamps and positions that came with the
values. They cross the process boundary beside the payload as one more
RecordBatch (never pickled): keys that are all bytes or all str as a binary
or string column, headers as a map column, timestamps as float64, and
anything else (positions are tuples) as JSON text with bytes and tuples
tagged, so they come back as they were. Repeated values (the envelope of an
Arrow message stands for each of its rows) are dictionary-encoded.
"""
from __future__ import annotations

import json
from typing import Any, Dict, List, Optional, Sequence

import pyarrow as pa

from ..exceptions import ConversionError
from .ipc import tag, untag

__all__ = ["envelope_batch", "read_envelope"]

_FIELDS = ("keys", "headers", "timestamps", "positions")
_HEADERS_TYPE = pa.map_(pa.large_string(), pa.large_binary())
def _json_column(values: Sequence[Any]) -> pa.Array:
    # Dictionary-encoded: the same object repeated is written once.
    index: Dict[int, int] = {}
    texts: List[str] = []
    codes: List[int] = []
    for value in values:
        code = index.get(id(value))
        if code is None:
            try:
                text = json.dumps(tag(value))
            except (TypeError, ValueError) as exc:
                raise ConversionError(f"envelope value cannot cross the bridge: {exc}") from exc
            code = index[id(value)] = len(texts)
            texts.append(text)
        codes.append(code)
    return pa.DictionaryArray.from_arrays(pa.array(codes, pa.int32()),
                                          pa.array(texts, pa.large_string()))


def _all(values: Sequence[Any], kind: type) -> bool:
    return all(v is None or isinstance(v, kind) for v in values)


def _column(name: str, values: Sequence[Any]) -> pa.Array:
    if name == "timestamps":
        return pa.array(list(values), pa.float64())
    if name == "keys" and _all(values, bytes):
        return pa.array(list(values), pa.large_binary())
    if name == "keys" and _all(values, str):
        return pa.array(list(values), pa.large_string())
    if name == "headers" and all(
            h is None or (isinstance(h, dict) and all(
                isinstance(k, str) and isinstance(v, bytes) for k, v in h.items()))
            for h in values):
        return pa.array([None if h is None else list(h.items()) for h in values],
                        _HEADERS_TYPE)
    return _json_column(values)


def envelope_batch(keys: Optional[Sequence[Any]], headers: Optional[Sequence[Any]],
                   timestamps: Optional[Sequence[float]],
                   positions: Optional[Sequence[Any]]) -> Optional[pa.RecordBatch]:
    """The envelope as one RecordBatch (one column per field present), or None."""
    columns, names = [], []
    for name, values in zip(_FIELDS, (keys, headers, timestamps, positions)):
        if values is not None:
            columns.append(_column(name, values))
            names.append(name)
    if not columns:
        return None
    return pa.RecordBatch.from_arrays(columns, names=names)


def read_envelope(batch: pa.RecordBatch) -> Dict[str, Optional[List[Any]]]:
    """The envelope's fields back as lists (``None`` for a field not sent)."""
    out: Dict[str, Optional[List[Any]]] = {name: None for name in _FIELDS}
    for name in batch.schema.names:
        if name not in out:
            raise ConversionError(f"unknown envelope field {name!r}")
        column = batch.column(name)
        if pa.types.is_dictionary(column.type):
            texts = column.dictionary.to_pylist()
            decoded = [untag(json.loads(t)) for t in texts]
            out[name] = [None if i is None else decoded[i] for i in column.indices.to_pylist()]
        elif pa.types.is_map(column.type):
            out[name] = [None if row is None else dict(row) for row in column.to_pylist()]
        else:
            out[name] = column.to_pylist()
    return out
