"""RetryPolicy: how often and how patiently a failed node is tried again.

Whether an error is worth another attempt is the error's own business: the
policy reads ``exc.retryable`` (see ``sabot.exceptions``) instead of keeping
lists of exception classes.
"""
from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Optional, TypeVar

__all__ = ["RetryPolicy", "NO_RETRY"]

T = TypeVar("T")

#: Called before each new attempt: (attempt just failed, its error, delay).
OnRetry = Callable[[int, BaseException, float], Any]


@dataclass(frozen=True)
class RetryPolicy:
    """At most ``max_attempts`` tries, exponential backoff with jitter.

    The delay before attempt ``n + 1`` is ``initial_delay * multiplier **
    (n - 1)``, capped at ``max_delay``, then spread by +/- ``jitter`` (a
    fraction) so that workers failing together do not retry together.
    """

    max_attempts: int = 3
    initial_delay: float = 0.05
    multiplier: float = 2.0
    max_delay: float = 5.0
    jitter: float = 0.1

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("RetryPolicy.max_attempts must be at least 1")

    @staticmethod
    def is_retryable(exc: BaseException) -> bool:
        """True when ``exc`` says that trying again may succeed."""
        return bool(getattr(exc, "retryable", False))

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (from 1)."""
        base = min(self.initial_delay * self.multiplier ** (attempt - 1), self.max_delay)
        if self.jitter:
            base *= 1 + random.uniform(-self.jitter, self.jitter)
        return max(base, 0.0)

    def should_retry(self, attempt: int, exc: BaseException) -> bool:
        """True when failed attempt ``attempt`` may be followed by another."""
        return attempt < self.max_attempts and self.is_retryable(exc)

    async def call(self, fn: Callable[[], Awaitable[T]],
                   on_retry: Optional[OnRetry] = None) -> T:
        """Await ``fn()`` until it succeeds or the policy gives up (re-raises)."""
        attempt = 1
        while True:
            try:
                return await fn()
            except Exception as exc:
                if not self.should_retry(attempt, exc):
                    raise
                wait = self.delay(attempt)
                if on_retry is not None:
                    on_retry(attempt, exc, wait)
                await asyncio.sleep(wait)
                attempt += 1


#: A policy that never tries again.
NO_RETRY = RetryPolicy(max_attempts=1)
