"""Faust's agent-RPC wire format, read and written the way Faust does.

A request says where to send the reply and which id pairs the two. Faust
has two forms of it (``faust/agents/agent.py``), and both are understood
here:

* **Envelope** (Faust's default): the value is wrapped in a
  ``ReqRepRequest`` record, ``{"value": ..., "reply_to": ...,
  "correlation_id": ..., "__faust": {"ns": "@ReqRepRequest"}}`` (namespace
  ``faust.agents.models.ModelReqRepRequest`` when the value is a record).
* **Headers** (Faust's ``use_reply_headers=True``): the value travels as it
  is, with the headers ``Faust-Ag-ReplyTo`` and ``Faust-Ag-CorrelationId``.
  Sabot writes this form where a value cannot be wrapped (a channel whose
  values are not JSON: Arrow, raw, msgpack; in-memory channels) and also
  reads its older ``sabot-reply-to``/``sabot-correlation-id`` names.

``unwrap_requests`` turns the envelopes of a fetch into the header form
before the channel decodes it: the inner value is decoded as any value of
the channel (into its ``value_type``; a value that does not fit is a dead
letter), and the agent replies from the headers. An envelope with a missing
or ill-typed ``reply_to``/``correlation_id`` is a dead letter naming the
field, with its bytes kept as they came.

A reply is a ``ReqRepResponse`` record, ``{"key", "value",
"correlation_id"}`` (``response``), sent as JSON to the ``reply_to`` topic;
``read_response`` reads Faust's and Sabot's alike.
"""
from __future__ import annotations

import uuid
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..codecs import JsonCodec, get_codec
from ..exceptions import DecodeError, EncodeError
from ..models.json_layout import dumps
from ..models.namespace import namespace_of, registry

__all__ = ["REPLY_TO", "CORRELATION_ID", "REQUEST_NAMESPACES", "RESPONSE_NAMESPACES",
           "ReplyError", "reply_target", "with_reply_headers", "check_request", "request",
           "response", "read_response", "carries_json", "is_json", "unwrap_requests"]

#: Faust's request headers (``use_reply_headers``): where to reply, and the
#: id that pairs reply and request. Sabot writes these.
REPLY_TO = "Faust-Ag-ReplyTo"
CORRELATION_ID = "Faust-Ag-CorrelationId"
#: Names older Sabot versions wrote; still read.
_OLD_HEADERS = ("sabot-reply-to", "sabot-correlation-id")

#: The namespaces Faust writes into a request and a reply: its plain class's
#: (explicit) and its record-valued subclass's (the default, module.Qualname).
REQUEST_NAMESPACES = ("@ReqRepRequest", "faust.agents.models.ModelReqRepRequest")
RESPONSE_NAMESPACES = ("@ReqRepResponse", "faust.agents.models.ModelReqRepResponse")

#: Longest topic name Kafka allows, and the bound on a correlation id (Faust
#: writes a 36-character uuid).
_MAX_TOPIC = 249
_MAX_CORRELATION_ID = 255
#: In both request namespaces: a fetch without it holds no envelope.
_MARK = b"ReqRepRequest"

_json = get_codec("json")


def _is_record(value: Any) -> bool:
    from ..models.record import Record  # here: records import the codecs
    return isinstance(value, Record)


def _problem(name: str, value: Any, longest: int) -> Optional[str]:
    """Why ``value`` cannot be a request's ``name`` field (None: it can)."""
    if value is None:
        return f"required field {name!r} is missing"
    if not isinstance(value, str):
        return f"field {name!r} must be a string, got {type(value).__name__}"
    if not value:
        return f"field {name!r} is empty"
    if len(value) > longest:
        return f"field {name!r} is longer than {longest} characters"
    if not value.isprintable() or any(c.isspace() for c in value):
        return f"field {name!r} holds whitespace or unprintable characters"
    return None


def _text(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return value
    return value


def reply_target(headers: Any) -> Optional[Tuple[str, str]]:
    """``(reply_to, correlation_id)`` when ``headers`` make a request, else None.

    Faust's header names, or Sabot's older ones. Headers that name a reply
    topic Faust or Kafka could not use make no request (the value is still
    processed; nothing is replied).
    """
    if not headers:
        return None
    get = getattr(headers, "get", None)
    if get is None:  # a list of (name, value) pairs
        headers = dict(headers)
        get = headers.get
    for reply_name, cid_name in ((REPLY_TO, CORRELATION_ID), _OLD_HEADERS):
        reply_to = get(reply_name)
        if reply_to is not None:
            reply_to, cid = _text(reply_to), _text(get(cid_name))
            if (_problem("reply_to", reply_to, _MAX_TOPIC) is None
                    and _problem("correlation_id", cid, _MAX_CORRELATION_ID) is None):
                return reply_to, cid
            return None
    return None


def with_reply_headers(headers: Any, reply_to: str, correlation_id: Optional[str]) -> Dict[str, Any]:
    """``headers`` plus the two that make a request (a new correlation id if none)."""
    merged = dict(headers or {})
    merged[REPLY_TO] = str(reply_to).encode()
    merged[CORRELATION_ID] = (correlation_id or str(uuid.uuid4())).encode()
    return merged


def check_request(reply_to: Any, correlation_id: Any) -> None:
    """Refuse a ``reply_to``/``correlation_id`` that no agent would answer (``ValueError``)."""
    for name, value, longest in (("reply_to", reply_to, _MAX_TOPIC),
                                 ("correlation_id", correlation_id, _MAX_CORRELATION_ID)):
        problem = _problem(name, value, longest)
        if problem is not None:
            raise ValueError(f"request {problem}")


def request(value: Any, reply_to: str, correlation_id: str) -> Dict[str, Any]:
    """A request envelope as Faust's ``ReqRepRequest`` writes it."""
    ns = REQUEST_NAMESPACES[1] if _is_record(value) else REQUEST_NAMESPACES[0]
    return {"value": value, "reply_to": reply_to, "correlation_id": correlation_id,
            "__faust": {"ns": ns}}


def response(key: Any, value: Any, correlation_id: str) -> Dict[str, Any]:
    """A reply as Faust's ``ReqRepResponse`` writes it (a record value in its JSON form)."""
    if isinstance(key, (bytes, bytearray, memoryview)):
        key = bytes(key).decode("utf-8", "replace")
    ns = RESPONSE_NAMESPACES[1] if _is_record(value) else RESPONSE_NAMESPACES[0]
    if hasattr(value, "to_representation"):
        value = value.to_representation()
    return {"key": key, "value": value, "correlation_id": correlation_id, "__faust": {"ns": ns}}


def read_response(data: Any) -> Optional[Tuple[str, Any]]:
    """``(correlation_id, value)`` of a reply (Faust's or Sabot's), else None.

    As Faust's reply consumer (``maybe_model``): a value naming the
    namespace of a Record class of this process is built into it; any other
    stays as it came. A value that names a class and does not fit it raises
    ``ValueError`` (with the correlation id), so the asker learns why.
    """
    if not isinstance(data, dict) or not isinstance(data.get("correlation_id"), str):
        return None
    cid, value = data["correlation_id"], data.get("value")
    ns = namespace_of(value)
    model = registry.get(ns) if isinstance(ns, str) else None
    if model is not None:
        try:
            value = model.from_data(value)
        except Exception as exc:  # noqa: BLE001 - whatever it was, the reply does not fit
            raise ReplyError(cid, f"the reply names {ns!r} and does not fit it: "
                                  f"{type(exc).__name__}: {exc}") from exc
    return cid, value


class ReplyError(ValueError):
    """A reply that cannot be handed to its ``ask``: ``correlation_id`` names which."""

    def __init__(self, correlation_id: str, reason: str) -> None:
        super().__init__(reason)
        self.correlation_id = correlation_id


def is_json(codec: Any) -> bool:
    """True for the JSON codec, plain or typed (``value_type=``): Faust's default."""
    return isinstance(codec, JsonCodec) or isinstance(getattr(codec, "inner", None), JsonCodec)


def carries_json(channel: Any) -> bool:
    """True when ``channel`` writes its values to a broker as JSON, with no schema.

    There a request is sent as Faust's envelope; anywhere else (in memory,
    Arrow, raw, msgpack, a schema-checked channel) in Faust's headers.
    """
    codec = getattr(channel, "codec", None)
    return codec is not None and getattr(channel, "schema", None) is None and is_json(codec)


def _unwrap(data: Any) -> Tuple[Any, str, str]:
    """``(value, reply_to, correlation_id)`` of an envelope; ``ValueError`` names the fault."""
    for name, longest in (("reply_to", _MAX_TOPIC), ("correlation_id", _MAX_CORRELATION_ID)):
        problem = _problem(name, data.get(name), longest)
        if problem is not None:
            raise ValueError(problem)
    if "value" not in data:
        raise ValueError("required field 'value' is missing")
    return data["value"], data["reply_to"], data["correlation_id"]


def unwrap_requests(payloads: Sequence[Any], headers: Optional[Sequence[Any]]
                    ) -> Optional[Tuple[List[Any], List[Any], List[Tuple[int, DecodeError]]]]:
    """Faust's request envelopes of a fetch turned into the header form.

    ``None`` when the fetch holds no envelope (one search over its bytes).
    Otherwise ``(payloads, headers, failures)``: each envelope's payload is
    its inner value as JSON and its headers name the reply; each envelope
    that is not a valid request is a failure (``DecodeError`` naming the
    field) with its payload unchanged.
    """
    try:
        joined = b"".join(payloads)  # one search of the whole fetch: ~3% of decoding it
    except TypeError:  # a tombstone (None) in the fetch
        joined = b"".join(filter(None, payloads))
    if _MARK not in joined:
        return None
    new_payloads = list(payloads)
    new_headers = list(headers) if headers is not None else [None] * len(payloads)
    failures: List[Tuple[int, DecodeError]] = []
    for i, payload in enumerate(payloads):
        if not payload or _MARK not in bytes(payload):
            continue
        try:
            data = _json.decode(payload)
        except DecodeError:
            continue  # not JSON: the channel's decoding says so
        if namespace_of(data) not in REQUEST_NAMESPACES:
            continue
        try:
            value, reply_to, cid = _unwrap(data)
            inner = dumps(value)
        except (ValueError, EncodeError) as exc:
            failures.append((i, DecodeError(f"Faust ReqRepRequest: {exc}", codec="json",
                                            payload=bytes(payload))))
            continue
        new_payloads[i] = inner
        new_headers[i] = with_reply_headers(new_headers[i], reply_to, cid)
    return new_payloads, new_headers, failures
