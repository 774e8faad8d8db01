"""Dead letters: where a failed value goes, and when its source may be acknowledged.

A value fails when its bytes do not decode (a transport's fetch) or when an
agent with ``on_error="dead_letter"`` raises on it. It is written to the
source channel's dead-letter channel, ``<name><dead_letter_suffix>``, with
headers that say why (``sabot-error``), from where (``sabot-source``, and the
transport's position: ``sabot-topic``/``-partition``/``-offset`` for Kafka,
``sabot-source-id`` for Redis) and by whom (``sabot-agent``).

The rule, the same for every transport:

* The source value is acknowledged only once its dead letter is written.
  ``DeadLetterWriter.write`` returns a future that says so; the caller keeps
  the source batch held until it is done.
* A write that fails for a passing reason (the broker is away, the stream has
  the wrong type for a moment) is retried with backoff (``RETRY_POLICY``) for
  as long as the worker runs. At a stop the retries are cancelled and the
  future fails: the source stays unacknowledged and is delivered again.
* A dead letter that cannot be written whole (bigger than the dead-letter
  channel takes: Kafka's ``producer_max_request_size``, or a broker's own
  limit) is written as a truncated copy: the first bytes of the value, with
  ``sabot-truncated`` giving the original size in bytes, the reason and the
  position. That is counted (``truncated``), and then the source is
  acknowledged: a poison message never stops a partition.

Counters count what was written: ``written`` when a dead letter is stored,
never when it is merely attempted.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable, Dict, List, Mapping, Optional, Set, Tuple

import pyarrow as pa

from ..codecs import get_codec
from ..retry import RetryPolicy
from ..types import ChannelT, CodecT

__all__ = ["DeadLetterWriter", "RETRY_POLICY", "fit_message", "when_stored", "TRUNCATED_HEADER"]

logger = logging.getLogger("sabot.channels")

#: How a failed dead-letter write is retried: until it succeeds or the worker stops.
RETRY_POLICY = RetryPolicy(max_attempts=None, initial_delay=0.5, multiplier=2.0,
                           max_delay=30.0, jitter=0.2, retry_on=(Exception,))

#: Header of a dead letter that had to be cut: the original size in bytes.
TRUNCATED_HEADER = "sabot-truncated"
#: Header naming how many of the original message's headers were left out.
HEADERS_DROPPED_HEADER = "sabot-headers-dropped"

#: Room kept in a message for the record's own framing (Kafka: batch and
#: record headers, varints); what is left goes to the headers and the value.
_FRAMING = 512
#: Smaller sizes tried when a broker refuses a dead letter as too large even
#: though it fit the client's limit (the broker's limit can be lower).
_FALLBACK_LIMITS = (64 * 1024, 1024, 0)

# Headers Sabot itself sets: kept when a dead letter has to drop headers.
_OWN_PREFIX = "sabot-"


def _as_bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode("utf-8", "backslashreplace")


def fit_message(payload: bytes, headers: Dict[str, bytes],
                limit: Optional[int]) -> Tuple[bytes, Dict[str, bytes], bool]:
    """``(payload, headers, truncated)`` cut down to fit ``limit`` bytes in all.

    Sabot's own headers (reason, source, position) are always kept; the
    original message's headers are dropped (and counted in a header) when
    they alone would take more than half the room; the payload is cut to
    what is left, and ``sabot-truncated`` records its original size.
    """
    if limit is None:
        return payload, headers, False

    def size(hdrs: Mapping[str, bytes]) -> int:
        return sum(len(k.encode()) + len(v) + 8 for k, v in hdrs.items())

    if len(payload) + size(headers) + _FRAMING <= limit:
        return payload, headers, False
    hdrs = dict(headers)
    hdrs[TRUNCATED_HEADER] = str(len(payload)).encode()
    if size(hdrs) + _FRAMING > limit // 2:
        foreign = [k for k in hdrs if not k.startswith(_OWN_PREFIX)]
        for name in foreign:
            del hdrs[name]
        if foreign:
            hdrs[HEADERS_DROPPED_HEADER] = str(len(foreign)).encode()
    if size(hdrs) + _FRAMING > limit:
        # Even Sabot's own headers do not fit: keep the reason, cut short.
        hdrs = {k: v[:max(0, limit // 8)] for k, v in hdrs.items()}
    room = max(0, limit - size(hdrs) - _FRAMING)
    return payload[:room], hdrs, True


class DeadLetterWriter:
    """Writes the dead letters of one source channel; see the module docstring.

    Of ``source`` it reads ``name``, ``codec`` (or none), ``position_headers``
    and ``dead_letter_channel()``; of the dead-letter channel ``send`` and,
    when it carries bytes, ``send_encoded``, ``max_message_bytes``,
    ``is_too_large(exc)`` and ``stopping``.
    """

    def __init__(self, source: ChannelT) -> None:
        self.source = source
        #: Dead letters stored.
        self.written = 0
        #: Dead letters stored as a truncated copy (the original did not fit).
        self.truncated = 0
        #: Failed attempts that were tried again.
        self.retried = 0
        self._retries: Set["asyncio.Future[Any]"] = set()

    @property
    def retrying(self) -> int:
        """Dead letters whose write failed and is being tried again."""
        return len(self._retries)

    def headers_for(self, reason: str, headers: Optional[Mapping[str, Any]] = None,
                    position: Any = None) -> Dict[str, bytes]:
        """The dead letter's headers: reason, source, position, then ``headers``."""
        out = {"sabot-error": _as_bytes(reason), "sabot-source": _as_bytes(self.source.name)}
        if position is not None:
            out.update(self.source.position_headers(position))
        for name, value in (headers or {}).items():
            out.setdefault(name, _as_bytes(value))
        return out

    async def write(self, value: Any, reason: str,
                    headers: Optional[Mapping[str, Any]] = None,
                    position: Any = None) -> "asyncio.Future[None]":
        """Start writing a dead letter; the future is done once it is stored.

        The first attempt happens now (so dead letters keep their order);
        if it fails, the write goes on in the background under
        ``RETRY_POLICY``. The future fails only when the worker stops first.
        """
        target = self.source.dead_letter_channel()
        hdrs = self.headers_for(reason, headers, position)
        logger.warning("dead letter from %s: %s", self.source.name, reason)
        done: "asyncio.Future[None]" = asyncio.get_running_loop().create_future()
        if not target.carries_bytes:
            # In memory: the value itself, no size limit, nothing to retry.
            await target.send(value=value, headers=hdrs)
            self._stored(done, False)
            return done
        payload = self.encode(value)
        try:
            await target.maybe_declare()
            fitted, fitted_headers, cut = fit_message(payload, hdrs, target.max_message_bytes)
            result = await target.send_encoded(None, fitted, fitted_headers)
        except Exception as exc:
            self._retry(target, payload, hdrs, done, exc)
            return done
        if isinstance(result, asyncio.Future):
            result.add_done_callback(
                lambda f: self._first_written(f, target, payload, hdrs, done, cut))
        else:
            self._stored(done, cut)
        return done

    def encode(self, value: Any) -> bytes:
        """The dead letter's bytes: bytes as they came, else the source's codec,
        else JSON, else the value's ``repr`` (a dead letter is never refused)."""
        if isinstance(value, (bytes, bytearray, memoryview)):
            return bytes(value)
        codec = self.source.codec
        candidates: List[CodecT] = [c for c in (codec, get_codec("json")) if c is not None]
        for candidate in candidates:
            try:
                if isinstance(value, pa.RecordBatch) and not candidate.yields_batches:
                    return candidate.encode(value.to_pylist())
                return candidate.encode(value)
            except Exception:  # try the next way of writing it down
                continue
        return repr(value).encode("utf-8", "backslashreplace")

    # -- completion and retries ------------------------------------------------
    def _stored(self, done: "asyncio.Future[None]", truncated: bool) -> None:
        self.written += 1
        if truncated:
            self.truncated += 1
            logger.error("dead letter from %s was too large and was written truncated "
                         "(header %s has the original size)", self.source.name,
                         TRUNCATED_HEADER)
        if not done.done():
            done.set_result(None)

    def _first_written(self, result: "asyncio.Future[Any]", target: ChannelT, payload: bytes,
                       headers: Dict[str, bytes], done: "asyncio.Future[None]",
                       truncated: bool) -> None:
        error = asyncio.CancelledError() if result.cancelled() else result.exception()
        if error is not None:
            self._retry(target, payload, headers, done, error)
        else:
            self._stored(done, truncated)

    def _retry(self, target: ChannelT, payload: bytes, headers: Dict[str, bytes],
               done: "asyncio.Future[None]", error: BaseException) -> None:
        if target.stopping:
            self._give_up(done, error)
            return
        logger.error("dead-letter write from %s failed (%s); retrying", self.source.name,
                     _describe(error))
        task = asyncio.ensure_future(self._write_until_stored(target, payload, headers, done))
        self._retries.add(task)
        task.add_done_callback(self._retries.discard)

    async def _write_until_stored(self, target: ChannelT, payload: bytes,
                                  headers: Dict[str, bytes],
                                  done: "asyncio.Future[None]") -> None:
        def on_retry(attempt: int, exc: BaseException, delay: float) -> None:
            self.retried += 1
            if attempt in (1, 2) or attempt % 10 == 0:
                logger.error("dead-letter write from %s failed again (%s, attempt %d); "
                             "the value stays unacknowledged, next try in %.1fs",
                             self.source.name, _describe(exc), attempt, delay)

        async def attempt() -> bool:
            return await self._send_fitting(target, payload, headers)

        try:
            await asyncio.sleep(RETRY_POLICY.delay(1))
            truncated = await RETRY_POLICY.call(attempt, on_retry=on_retry,
                                                give_up=lambda: target.stopping)
        except asyncio.CancelledError:
            self._give_up(done, asyncio.CancelledError())
            raise
        except Exception as exc:
            self._give_up(done, exc)
        else:
            self._stored(done, truncated)

    async def _send_fitting(self, target: ChannelT, payload: bytes,
                            headers: Dict[str, bytes]) -> bool:
        """Write and wait for delivery, cutting the message down while the
        broker refuses it as too large; True when it had to be cut."""
        await target.maybe_declare()
        limits: List[Optional[int]] = [target.max_message_bytes]
        limits += [n for n in _FALLBACK_LIMITS if limits[0] is None or n < limits[0]]
        for i, limit in enumerate(limits):
            fitted, fitted_headers, cut = fit_message(payload, headers, limit)
            try:
                result = await target.send_encoded(None, fitted, fitted_headers)
                if isinstance(result, asyncio.Future):
                    await result
                return cut
            except Exception as exc:
                if i + 1 < len(limits) and target.is_too_large(exc):
                    continue
                raise
        raise AssertionError("unreachable: the last limit either succeeds or raises")

    def _give_up(self, done: "asyncio.Future[None]", error: BaseException) -> None:
        logger.error("dead-letter write from %s abandoned at stop (%s); the value stays "
                     "unacknowledged and will be delivered again", self.source.name,
                     _describe(error))
        if not done.done():
            done.set_exception(error if isinstance(error, Exception)
                               else RuntimeError("dead-letter write cancelled"))
            done.exception()  # retrieved: a stop is not an unhandled error

    def cancel(self) -> int:
        """Cancel the writes being retried (at a stop); returns how many.

        Their sources stay unacknowledged, so they are delivered again later
        (by this worker after a restart, or by another).
        """
        tasks = list(self._retries)
        for task in tasks:
            task.cancel()
        self._retries.clear()
        return len(tasks)


def when_stored(written: "asyncio.Future[None]", callback: Callable[[], Any]) -> None:
    """Call ``callback()`` once the dead letter ``written`` is stored (not if it never is)."""
    def check(future: "asyncio.Future[None]") -> None:
        if not future.cancelled() and future.exception() is None:
            callback()
    written.add_done_callback(check)


def _describe(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__
