"""Typed keys and values: ``key_type=``/``value_type=`` over a channel's codec.

``TypedCodec(codec, typ)`` decodes with ``codec`` (JSON by default for a
record) and turns the result into ``typ`` as Faust's serializer registry does
(``Registry._prepare_payload``): a ``Record`` class builds a record (its
``__faust`` namespace read as Faust reads it), ``int``, ``float``,
``Decimal``, ``str`` and ``bytes`` convert. Anything that does not fit
(a missing field, a failed validation, an unknown namespace, text that is no
number) raises ``DecodeError`` naming the type, the field and the reason, so
the transport sends exactly that message to the dead-letter channel and the
agent never sees it. Encoding writes a record in Faust's JSON layout.

Which codec a typed channel uses follows Faust: the one given
(``value_serializer=``, ``key_serializer=``), else the record class's
``serializer`` option, else ``json`` for values and records, ``raw`` for
plain keys.
"""
from __future__ import annotations

import decimal
import warnings
from typing import Any, List, Optional, Sequence, Tuple, Union

from ..codecs import Failures, JsonCodec, RawCodec, decode_many, get_codec
from ..exceptions import (ConfigurationError, DecodeError, EncodeError,
                          SabotCompatibilityWarning, ValidationError)
from ..types import CodecT
from .conversion import is_record_type
from .fast_json import FetchDecoder
from .fields import DECIMAL_MAXLEN
from .json_layout import dumps, to_plain
from .namespace import BLESSED_KEY, UnknownNamespace, model_named_by, registry
from .record import MissingField

__all__ = ["TypedCodec", "typed_codec", "decode_fetch", "reconstruct", "serializer_for", "check_type", "check_types",
           "describe_error", "warn_if_types_differ"]

_SCALARS = (int, float, decimal.Decimal, str, bytes)


def check_type(typ: Any, what: str) -> None:
    """Refuse a ``key_type``/``value_type`` that cannot be decoded into."""
    if is_record_type(typ) and typ._pending_finalizers:
        raise ConfigurationError(f"{what}: {typ.__name__} was defined with lazy_creation=True; "
                                 f"call {typ.__name__}.make_final() before using it")
    if typ is None or typ in _SCALARS or is_record_type(typ):
        return
    raise ConfigurationError(
        f"{what} must be a sabot.Record class, int, float, Decimal, str or bytes, got {typ!r}")


def check_types(channel: str, schema: Any, key_type: Any, value_type: Any) -> None:
    """Refuse a channel's ``key_type``/``value_type`` that cannot be decoded into,
    and a ``value_type`` beside a ``schema`` (a record class has its own)."""
    check_type(key_type, f"channel {channel!r}: key_type")
    check_type(value_type, f"channel {channel!r}: value_type")
    if value_type is not None and schema is not None:
        raise ConfigurationError(
            f"channel {channel!r}: give schema= or value_type=, not both (a Record's Arrow "
            f"schema is {getattr(value_type, '__name__', value_type)}.arrow_schema())")


def warn_if_types_differ(agent: str, channel: Any, key_type: Any, value_type: Any) -> None:
    """Warn when an agent asks for types its (existing) channel does not have.

    As in Faust, an agent's ``key_type``/``value_type`` shape the channel it
    creates; a channel that exists keeps its own, and that is said, never
    silently ignored.
    """
    for option, wanted, have in (("key_type", key_type, channel.key_type),
                                 ("value_type", value_type, channel.value_type)):
        if wanted is not None and wanted is not have:
            warnings.warn(
                f"agent {agent!r}: {option}={getattr(wanted, '__name__', wanted)} is ignored: "
                f"its channel {channel.name!r} exists with {option}="
                f"{getattr(have, '__name__', have)} (set it where the channel is made)",
                SabotCompatibilityWarning, stacklevel=3)


def serializer_for(typ: Any, given: Union[None, str, CodecT], *, key: bool) -> Union[str, CodecT]:
    """The codec a typed key or value uses (see the module docstring)."""
    if given is not None:
        return given
    if is_record_type(typ):
        return typ._options.serializer or "json"
    return "raw" if key else "json"


def describe_error(typ: Any, exc: BaseException) -> str:
    """Why a value does not fit ``typ``, naming the field where there is one."""
    name = getattr(typ, "__name__", str(typ))
    if isinstance(exc, MissingField):
        return f"{exc.model}: required field {exc.field!r} is missing"
    if isinstance(exc, ValidationError):
        model = exc.model or name
        return f"{model}: field {exc.field!r} is not valid: {exc.reason}"
    if isinstance(exc, UnknownNamespace):
        return f"{name}: {exc}"
    return f"{name}: {type(exc).__name__}: {exc}"


class TypedCodec:
    """A codec that decodes into ``typ`` and encodes records in Faust's layout."""

    yields_batches = False

    def __init__(self, inner: Union[str, CodecT], typ: Any) -> None:
        self.inner: CodecT = get_codec(inner)
        if self.inner.yields_batches:
            raise ConfigurationError(
                f"the {self.inner.name} codec carries RecordBatches, not one "
                f"{getattr(typ, '__name__', typ)} per message")
        check_type(typ, "type")
        self.type = typ
        self.name = self.inner.name
        self._record = is_record_type(typ)
        self._json = isinstance(self.inner, JsonCodec)
        self._raw = isinstance(self.inner, RawCodec)
        self._fetch_decoder = (FetchDecoder(typ)
                               if self._record and self._json else None)

    def __repr__(self) -> str:
        return f"<TypedCodec {self.name!r} -> {getattr(self.type, '__name__', self.type)}>"

    def encode(self, value: Any) -> bytes:
        if self._json:
            return dumps(value)
        if self._raw and not isinstance(value, (bytes, bytearray, memoryview, str)):
            if isinstance(value, (int, float, decimal.Decimal)) and not isinstance(value, bool):
                return str(value).encode("utf-8")
            raise EncodeError(f"raw codec takes bytes or str, got {type(value).__name__}")
        return self.inner.encode(to_plain(value) if not self._raw else value)

    def decode(self, data: bytes) -> Any:
        payload = self.inner.decode(data)  # DecodeError passes through
        try:
            return self.prepare(payload)
        except RecursionError as exc:
            raise DecodeError(f"{getattr(self.type, '__name__', self.type)}: nested too deep",
                              codec=self.name, payload=_as_bytes(data)) from exc
        except Exception as exc:  # noqa: BLE001 - whatever it was, the value does not fit
            raise DecodeError(describe_error(self.type, exc), codec=self.name,
                              payload=_as_bytes(data)) from exc

    def decode_many(self, payloads: Sequence[Any]) -> Tuple[List[Any], Failures]:
        """Decode a fetch: ``(values, [(index, DecodeError)])`` as ``codecs.decode_many``.

        A record class's JSON is parsed for the whole fetch at once where
        that gives exactly what the per-message path gives
        (``sabot.models.fast_json``); otherwise, and for the rows whose
        record did not build, message by message.
        """
        fast = self._fetch_decoder.decode(payloads) if self._fetch_decoder is not None else None
        if fast is None:
            return decode_many(self, payloads)
        values, failed = fast
        if not failed:
            return values, []
        failures: Failures = []
        for i in failed:
            try:  # again alone: the same error, with its reason
                values[i] = self.decode(payloads[i])
            except DecodeError as exc:
                failures.append((i, exc))
        bad = {i for i, _ in failures}
        return [v for i, v in enumerate(values) if i not in bad], failures

    def prepare(self, payload: Any) -> Any:
        """Decoded data turned into the type (Faust's ``_prepare_payload``)."""
        typ = self.type
        if self._record:
            return typ.from_data(payload, preferred_type=typ)
        if typ is str:
            return _text(payload)
        if typ is bytes:
            return payload.encode("utf-8") if isinstance(payload, str) else bytes(payload)
        if isinstance(payload, (bytes, bytearray, memoryview)):
            payload = _text(payload)
        if isinstance(payload, bool) or not isinstance(payload, (str, int, float,
                                                                  decimal.Decimal)):
            raise TypeError(f"expected a number, got {type(payload).__name__}")
        if isinstance(payload, str) and len(payload) > DECIMAL_MAXLEN:
            raise ValueError(f"a number of {len(payload)} characters is too long")
        if typ is decimal.Decimal:
            try:
                return decimal.Decimal(payload)
            except decimal.InvalidOperation:
                raise ValueError(f"{payload!r} is not a number") from None
        return typ(payload)


def _text(payload: Any) -> str:
    if isinstance(payload, str):
        return payload
    if isinstance(payload, (bytes, bytearray, memoryview)):
        return bytes(payload).decode("utf-8")
    raise TypeError(f"expected text, got {type(payload).__name__}")


def _as_bytes(data: Any) -> Optional[bytes]:
    try:
        return bytes(data)
    except TypeError:
        return None


def typed_codec(typ: Any, given: Union[None, str, CodecT], *,
                key: bool) -> Optional[Union[CodecT, TypedCodec]]:
    """The codec of a channel's keys or values: typed when ``typ`` is set.

    ``None`` for keys with neither a type nor a serializer (they stay bytes).
    """
    if typ is None:
        if given is None:
            return None if key else get_codec("json")
        return get_codec(given)
    return TypedCodec(serializer_for(typ, given, key=key), typ)


def decode_fetch(codec: Any, payloads: Sequence[Any],
                 schema: Any = None) -> Tuple[Any, Failures]:
    """``codecs.decode_many``, with a typed codec's whole-fetch decoding.

    Values of a JSON channel with no ``value_type`` that name a record
    class in ``__faust`` are built into it (``reconstruct``).
    """
    if isinstance(codec, TypedCodec):
        return codec.decode_many(payloads)
    values, failures = decode_many(codec, payloads, schema)
    if schema is None and type(codec) is JsonCodec and registry:
        values, failures = reconstruct(values, failures, payloads)
    return values, failures


def reconstruct(values: List[Any], failures: Failures,
                payloads: Sequence[Any]) -> Tuple[List[Any], Failures]:
    """Faust's ``Model._maybe_reconstruct`` over the values of an untyped channel.

    A value naming a known record class in ``__faust`` becomes that record,
    as Faust builds it for a topic with no ``value_type`` (a Faust app
    sending records to an agent that declares no type). A value that names
    a known class and does not fit it is a failure naming the field, as in
    Faust; a namespace no class has leaves the value a dict (Faust refuses
    it: here it may be another app's record, an RPC reply, ...).
    ``values`` holds the good values of ``payloads`` in order, the indices
    in ``failures`` left out (``codecs.decode_many``).
    """
    named = [j for j, value in enumerate(values)
             if type(value) is dict and BLESSED_KEY in value]
    if not named:
        return values, failures
    failed_at = {i for i, _ in failures}
    index = [i for i in range(len(payloads)) if i not in failed_at]  # value j is payloads[index[j]]
    dropped = set()
    for j in named:
        data = values[j]
        try:
            model = model_named_by(data, None)
        except UnknownNamespace:
            continue
        if model is None:
            continue
        try:
            values[j] = model.from_data(data, preferred_type=model)
        except RecursionError:
            failures.append((index[j], DecodeError(f"{model.__name__}: nested too deep",
                                                   codec="json", payload=_as_bytes(payloads[index[j]]))))
            dropped.add(j)
        except Exception as exc:  # noqa: BLE001 - the value does not fit the class it names
            failures.append((index[j], DecodeError(describe_error(model, exc), codec="json",
                                                   payload=_as_bytes(payloads[index[j]]))))
            dropped.add(j)
    if dropped:
        values = [v for j, v in enumerate(values) if j not in dropped]
        failures.sort(key=lambda f: f[0])
    return values, failures
