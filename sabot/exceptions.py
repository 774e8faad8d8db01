"""Every error Sabot raises, in one pure-Python module.

Both the Cython fast paths and their pure-Python twins import from here, so an
error is the same class whichever implementation is active. Each error also
inherits from the matching builtin (``SchemaError`` is a ``TypeError``), and
carries a ``retryable`` flag that retry code reads instead of keeping lists of
classes.
"""
from __future__ import annotations

from typing import Any, Optional

__all__ = [
    "SabotCompatibilityWarning",
    "SabotError",
    "ConfigurationError",
    "SchemaError",
    "ChannelClosed",
    "CodecError",
    "DecodeError",
    "EncodeError",
    "ValidationError",
    "AgentError",
    "TransportError",
    "BrokerUnavailable",
    "AuthenticationError",
    "TailUnsupported",
    "BridgeError",
    "ConversionError",
    "NodeExecutionError",
    "WorkerProcessDied",
    "PipelineError",
    "RegistryError",
    "StoreError",
    "StoreUntrusted",
    "StoreCorrupt",
    "StoreVersionMismatch",
    "StoreFull",
    "StoreKeyRejected",
]


class SabotError(Exception):
    """Root of every Sabot error.

    ``retryable`` tells retry policies whether doing the same thing again may
    succeed (a lost connection) or never will (a value that does not decode).
    """

    retryable: bool = False


class ConfigurationError(SabotError, ValueError):
    """A setting, argument or URL is wrong; the message names it."""


class SchemaError(SabotError, TypeError):
    """A value or batch does not fit a channel's Arrow schema.

    ``field`` is the offending field's name (``None`` when the whole schema
    differs), ``expected`` the Arrow type or schema wanted, ``got`` what came.
    """

    def __init__(self, message: str, *, field: Optional[str] = None,
                 expected: Any = None, got: Any = None) -> None:
        super().__init__(message)
        self.field = field
        self.expected = expected
        self.got = got


class ChannelClosed(SabotError, RuntimeError):
    """The channel (or bridge queue) was closed while an operation waited."""


class CodecError(SabotError, ValueError):
    """Root of encode and decode failures."""


class DecodeError(CodecError):
    """Bytes that the codec cannot turn into a value.

    ``codec`` names the codec; ``payload`` holds the raw bytes so that the
    dead-letter channel can keep them.
    """

    def __init__(self, message: str, *, codec: str = "",
                 payload: Optional[bytes] = None) -> None:
        super().__init__(message)
        self.codec = codec
        self.payload = payload


class EncodeError(CodecError):
    """A value that the codec cannot serialize."""


class ValidationError(SabotError, ValueError):
    """A value that does not fit a ``Record`` field (as Faust's ``ValidationError``).

    ``field`` is the field's name and ``reason`` says what is wrong with it.
    """

    def __init__(self, reason: str, *, field: Optional[str] = None, model: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field
        self.model = model


class AgentError(SabotError, RuntimeError):
    """An agent raised; ``agent`` is its name and ``value`` the failing value."""

    def __init__(self, message: str, *, agent: str = "", value: Any = None,
                 position: Any = None) -> None:
        super().__init__(message)
        self.agent = agent
        self.value = value
        self.position = position


class TransportError(SabotError, ConnectionError):
    """A broker or server failed; usually worth retrying."""

    retryable = True


class BrokerUnavailable(TransportError):
    """The broker could not be reached within the connect timeout."""


class TailUnsupported(TransportError):
    """The channel cannot be read from outside its process (memory channels)."""

    retryable = False


class AuthenticationError(TransportError):
    """The server refused the credentials (never retried, never logged)."""

    retryable = False


class BridgeError(SabotError, RuntimeError):
    """The executor bridge failed to move data or to reach a worker."""


class ConversionError(BridgeError, ValueError):
    """Data could not be converted to or from Arrow IPC at the bridge."""


class NodeExecutionError(BridgeError):
    """A node raised; carries its id and the remote traceback text."""

    def __init__(self, message: str, *, node_id: str = "",
                 remote_traceback: str = "", retryable: bool = False) -> None:
        super().__init__(message)
        self.node_id = node_id
        self.remote_traceback = remote_traceback
        self.retryable = retryable

    def __str__(self) -> str:
        base = super().__str__()
        if self.remote_traceback:
            return f"{base}\n--- remote traceback ---\n{self.remote_traceback}"
        return base


class WorkerProcessDied(BridgeError):
    """A worker process exited while it held a batch; the batch is retried."""

    retryable = True

    def __init__(self, message: str, *, node_id: str = "",
                 exitcode: Optional[int] = None) -> None:
        super().__init__(message)
        self.node_id = node_id
        self.exitcode = exitcode


class PipelineError(SabotError, ValueError):
    """A pipeline is malformed (cycle, missing input, unknown node type)."""


class RegistryError(SabotError, LookupError):
    """A node type is registered twice, or is not registered at all."""


class SabotCompatibilityWarning(UserWarning):
    """A Faust setting or option that Sabot accepts but does not have (named in the message)."""


class StoreError(SabotError, RuntimeError):
    """A table's local store failed; ``table`` and ``partition`` say whose.

    The message names the table, the partition and, for a store on disk, its
    path. ``sabot.tables.stores`` raises it and its subclasses.
    """

    def __init__(self, message: str, *, table: str = "", partition: int = -1,
                 path: Optional[str] = None) -> None:
        super().__init__(message)
        self.table = table
        self.partition = partition
        self.path = path


class StoreUntrusted(StoreError):
    """The store cannot be trusted: wipe it and restore it from the changelog.

    Raised when a store is opened (or read) and found corrupt, or written by
    another format version; never for a transient failure such as a full disk.
    """


class StoreCorrupt(StoreUntrusted):
    """The store's files or its metadata are damaged (or belong to another table)."""


class StoreVersionMismatch(StoreUntrusted):
    """The store was written by another format version of Sabot's stores.

    ``found`` is the version recorded in the store, ``expected`` this Sabot's.
    """

    def __init__(self, message: str, *, table: str = "", partition: int = -1,
                 path: Optional[str] = None, found: Any = None,
                 expected: Any = None) -> None:
        super().__init__(message, table=table, partition=partition, path=path)
        self.found = found
        self.expected = expected


class StoreFull(StoreError, OSError):
    """The store cannot grow: the disk is full or its size limit is reached.

    The write that raised it was not applied (all or nothing); what was
    committed before is intact. Free space (or raise the limit) and reopen.
    """


class StoreKeyRejected(StoreError, ValueError):
    """A key the store cannot hold (LMDB: empty, or longer than ``max_key_size``).

    The whole ``apply`` that carried it was refused; nothing of it was written.
    """
