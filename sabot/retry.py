"""RetryPolicy: the one way Sabot tries a failed thing again.

Every retry in the package goes through a policy: reconnecting to a broker,
rewriting a dead letter, replacing a dead worker process and resending its
batch, re-running a failed pipeline node, restarting a crashed agent. A
policy says how often (``max_attempts``, or no limit), for how long
(``deadline``), how patiently (exponential backoff with jitter) and for
which errors: those of the types in ``retry_on`` when it is given (a
refused connection from a client library, a worker process that died), else
those that say so themselves (``exc.retryable``, see ``sabot.exceptions``).
"""
from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Optional, Tuple, TypeVar

__all__ = ["RetryPolicy", "NO_RETRY", "OnRetry"]

T = TypeVar("T")

#: Called before each new attempt: (attempt just failed, its error, delay).
OnRetry = Callable[[int, BaseException, float], Any]


@dataclass(frozen=True)
class RetryPolicy:
    """At most ``max_attempts`` tries within ``deadline`` seconds, with backoff.

    The delay before attempt ``n + 1`` is ``initial_delay * multiplier **
    (n - 1)``, capped at ``max_delay``, then spread by +/- ``jitter`` (a
    fraction) so that workers failing together do not retry together.
    ``max_attempts=None`` tries until the deadline, or for ever without one.
    """

    max_attempts: Optional[int] = 3
    initial_delay: float = 0.05
    multiplier: float = 2.0
    max_delay: float = 5.0
    jitter: float = 0.1
    deadline: Optional[float] = None
    retry_on: Tuple[type, ...] = ()
    #: Errors that never retry, even when they are also of a ``retry_on``
    #: type (redis-py's AuthenticationError is a ConnectionError).
    never_retry: Tuple[type, ...] = ()

    def __post_init__(self) -> None:
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ValueError("RetryPolicy.max_attempts must be at least 1 (or None)")
        if self.deadline is not None and self.deadline < 0:
            raise ValueError("RetryPolicy.deadline must not be negative")

    def is_retryable(self, exc: BaseException) -> bool:
        """True when ``exc`` is worth another attempt.

        With ``retry_on``, exactly the errors of those types are; without,
        those whose ``retryable`` flag says so (``sabot.exceptions``). An
        error of a ``never_retry`` type never is.
        """
        if self.never_retry and isinstance(exc, self.never_retry):
            return False
        if self.retry_on:
            return isinstance(exc, self.retry_on)
        return bool(getattr(exc, "retryable", False))

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (from 1)."""
        exponent = min(attempt - 1, 64)  # a long outage must not overflow the float
        base = min(self.initial_delay * self.multiplier ** exponent, self.max_delay)
        if self.jitter:
            base *= 1 + random.uniform(-self.jitter, self.jitter)
        return max(base, 0.0)

    def should_retry(self, attempt: int, exc: BaseException,
                     elapsed: float = 0.0) -> bool:
        """True when failed attempt ``attempt`` may be followed by another.

        ``elapsed`` is the time since the first attempt began; no attempt
        starts after the deadline.
        """
        if self.max_attempts is not None and attempt >= self.max_attempts:
            return False
        if self.deadline is not None and elapsed >= self.deadline:
            return False
        return self.is_retryable(exc)

    async def call(self, fn: Callable[[], Awaitable[T]], *,
                   on_retry: Optional[OnRetry] = None,
                   give_up: Optional[Callable[[], bool]] = None) -> T:
        """Await ``fn()`` until it succeeds or the policy gives up (re-raises).

        ``give_up()`` is asked after each failure: True stops retrying (a
        service that is stopping) and the last error is raised. The wait
        before an attempt never runs past the deadline.
        """
        attempt = 1
        began = time.monotonic()
        while True:
            try:
                return await fn()
            except Exception as exc:
                elapsed = time.monotonic() - began
                if not self.should_retry(attempt, exc, elapsed) or (
                        give_up is not None and give_up()):
                    raise
                wait = self.delay(attempt)
                if self.deadline is not None:
                    wait = min(wait, max(0.0, self.deadline - elapsed))
                if on_retry is not None:
                    on_retry(attempt, exc, wait)
                await asyncio.sleep(wait)
                attempt += 1


#: A policy that never tries again.
NO_RETRY = RetryPolicy(max_attempts=1)
