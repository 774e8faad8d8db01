"""``InitProducerId`` version 3 for aiokafka (what an upstream patch would add).

aiokafka 0.14 knows ``InitProducerId`` (API key 22) only in version 0. A
broker that accepts it only from version 3 on (tansu, the test broker; the
flexible versions are what current Kafka clients send) refuses a
transactional or idempotent producer before it starts. aiokafka negotiates
the version per request class: a ``Request`` subclass lists its struct
classes, and ``prepare`` picks the highest one the broker's ``ApiVersions``
allows. So the whole fix is one more struct pair and the request class
listing it, used where aiokafka's sender builds the request
(``aiokafka.producer.sender.InitProducerIdRequest``, read by
``InitPIDHandler.create_request`` at call time):

- ``InitProducerIdRequest_v3``: flexible (``RequestHeader_v2``), a compact
  nullable ``transactional_id``, ``transaction_timeout_ms``, ``producer_id``
  and ``producer_epoch`` (``-1``: a new producer, as KIP-360's clients send
  on start) and tagged fields;
- ``InitProducerIdResponse_v3``: ``throttle_time_ms``, ``error_code``,
  ``producer_id``, ``producer_epoch`` and tagged fields (the fields the
  sender reads are the same as in version 0).

A broker that offers only version 0 still gets version 0. :func:`install`
is idempotent and is run by Sabot's exactly-once path before it makes a
transactional producer. Upstream, the two structs would go into
``aiokafka/protocol/transaction.py`` and ``InitProducerIdRequest`` would
list ``InitProducerIdRequest_v0 | InitProducerIdRequest_v3``.
"""
from __future__ import annotations

from typing import TypeAlias

import aiokafka.producer.sender as _sender
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.transaction import InitProducerIdRequest_v0
from aiokafka.protocol.types import CompactString, Int16, Int32, Int64, Schema, TaggedFields

__all__ = ["InitProducerIdRequest_v3", "InitProducerIdResponse_v3", "InitProducerIdRequest",
           "install"]


class InitProducerIdResponse_v3(Response):
    API_KEY = 22
    API_VERSION = 3
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("error_code", Int16),
        ("producer_id", Int64),
        ("producer_epoch", Int16),
        ("tags", TaggedFields),
    )


class InitProducerIdRequest_v3(RequestStruct):
    FLEXIBLE_VERSION = True
    API_KEY = 22
    API_VERSION = 3
    RESPONSE_TYPE = InitProducerIdResponse_v3
    SCHEMA = Schema(
        ("transactional_id", CompactString("utf-8")),
        ("transaction_timeout_ms", Int32),
        ("producer_id", Int64),
        ("producer_epoch", Int16),
        ("tags", TaggedFields),
    )


_Struct: TypeAlias = InitProducerIdRequest_v0 | InitProducerIdRequest_v3


class InitProducerIdRequest(Request[_Struct]):
    """aiokafka's ``InitProducerIdRequest`` that also speaks version 3."""

    API_KEY = 22

    def __init__(self, transactional_id: str | None, transaction_timeout_ms: int) -> None:
        self._transactional_id = transactional_id
        self._transaction_timeout_ms = transaction_timeout_ms

    def build(self, request_struct_class: type[_Struct]) -> _Struct:
        if request_struct_class is InitProducerIdRequest_v3:
            return InitProducerIdRequest_v3(self._transactional_id,
                                            self._transaction_timeout_ms, -1, -1, {})
        return InitProducerIdRequest_v0(self._transactional_id, self._transaction_timeout_ms)


def install() -> None:
    """Make aiokafka's producer send ``InitProducerId`` v3 where the broker allows it."""
    _sender.InitProducerIdRequest = InitProducerIdRequest
