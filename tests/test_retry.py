"""RetryPolicy: backoff, which errors retry, deadline, giving up."""
import asyncio
import time

import pytest

from sabot.exceptions import NodeExecutionError, TransportError, WorkerProcessDied
from sabot.retry import RetryPolicy


def test_backoff_is_exponential_capped_and_jittered():
    policy = RetryPolicy(max_attempts=5, initial_delay=0.1, multiplier=2, max_delay=0.5,
                         jitter=0)
    assert [policy.delay(n) for n in (1, 2, 3, 4)] == [0.1, 0.2, 0.4, 0.5]
    jittery = RetryPolicy(initial_delay=1.0, jitter=0.1)
    delays = {jittery.delay(1) for _ in range(50)}
    assert len(delays) > 1 and all(0.9 <= d <= 1.1 for d in delays)


def test_is_retryable_reads_the_error_flag():
    assert RetryPolicy().is_retryable(TransportError("down"))
    assert not RetryPolicy().is_retryable(ValueError("bad"))
    assert RetryPolicy().is_retryable(NodeExecutionError("x", retryable=True))
    policy = RetryPolicy(max_attempts=2)
    assert policy.should_retry(1, TransportError("down"))
    assert not policy.should_retry(2, TransportError("down"))
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)


async def test_call_retries_until_success_or_gives_up():
    policy = RetryPolicy(max_attempts=3, initial_delay=0.001)
    calls, retries = [], []

    async def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise TransportError("again")
        return "ok"
    assert await policy.call(flaky, on_retry=lambda a, e, d: retries.append(a)) == "ok"
    assert retries == [1, 2]

    async def bad():
        raise ValueError("never retried")
    with pytest.raises(ValueError):
        await policy.call(bad)


async def test_retry_on_names_errors_without_a_flag():
    policy = RetryPolicy(max_attempts=None, initial_delay=0.001, retry_on=(ConnectionRefusedError,))
    assert policy.is_retryable(ConnectionRefusedError())
    assert not policy.is_retryable(ValueError())
    # With retry_on given, exactly those types retry, whatever a flag says.
    assert not policy.is_retryable(TransportError("down"))
    calls = []

    async def refused():
        calls.append(1)
        if len(calls) < 5:
            raise ConnectionRefusedError("no")
        return len(calls)
    assert await policy.call(refused) == 5


async def test_deadline_bounds_the_retrying():
    policy = RetryPolicy(max_attempts=None, initial_delay=0.02, max_delay=0.02, jitter=0,
                         deadline=0.1)
    calls = []

    async def down():
        calls.append(time.monotonic())
        raise TransportError("down")
    began = time.monotonic()
    with pytest.raises(TransportError):
        await policy.call(down)
    assert 0.1 <= time.monotonic() - began < 0.5
    assert 3 <= len(calls) <= 8


async def test_give_up_stops_retrying_with_the_last_error():
    policy = RetryPolicy(max_attempts=None, initial_delay=0.001)
    calls = []

    async def down():
        calls.append(1)
        raise TransportError(f"down {len(calls)}")
    with pytest.raises(TransportError, match="down 3"):
        await policy.call(down, give_up=lambda: len(calls) >= 3)


def test_delay_of_a_long_outage_stays_capped():
    policy = RetryPolicy(max_attempts=None, initial_delay=0.05, max_delay=2.0, jitter=0)
    assert policy.delay(10_000) == 2.0
    with pytest.raises(ValueError):
        RetryPolicy(deadline=-1)


def test_backoff_bounds_for_every_attempt():
    policy = RetryPolicy(max_attempts=10, initial_delay=0.01, multiplier=3.0,
                         max_delay=0.5, jitter=0.2)
    for attempt in range(1, 10):
        base = min(0.01 * 3.0 ** (attempt - 1), 0.5)
        for _ in range(200):
            d = policy.delay(attempt)
            assert base * 0.8 - 1e-12 <= d <= base * 1.2 + 1e-12
    flat = RetryPolicy(initial_delay=0.0, jitter=0.5)
    assert flat.delay(1) == 0.0
    assert RetryPolicy(initial_delay=1, multiplier=10, max_delay=2, jitter=0).delay(50) == 2


async def test_retry_call_attempts_delays_and_classification():
    from sabot.exceptions import TransportError
    policy = RetryPolicy(max_attempts=4, initial_delay=0.02, multiplier=2, jitter=0)
    calls, retries = [], []

    async def always_transient():
        calls.append(time.monotonic())
        raise TransportError(f"down {len(calls)}")
    started = time.monotonic()
    with pytest.raises(TransportError, match="down 4"):  # the last error
        await policy.call(always_transient, on_retry=lambda a, e, d: retries.append((a, d)))
    assert len(calls) == 4
    assert retries == [(1, 0.02), (2, 0.04), (3, 0.08)]
    assert time.monotonic() - started >= 0.14 - 0.01  # it really waited
    for (a, d), t0, t1 in zip(retries, calls, calls[1:]):
        assert t1 - t0 >= d - 0.005

    calls.clear()

    async def permanent():
        calls.append(1)
        raise NodeExecutionError("nope", node_id="n", retryable=False)
    with pytest.raises(NodeExecutionError):
        await policy.call(permanent)
    assert calls == [1]

    async def cancelled():
        calls.append(1)
        raise asyncio.CancelledError()
    calls.clear()
    with pytest.raises(asyncio.CancelledError):
        await policy.call(cancelled)
    assert calls == [1]
    assert RetryPolicy().is_retryable(WorkerProcessDied("x", node_id="n", exitcode=-9))
    assert not RetryPolicy().is_retryable(ValueError("x"))


def test_never_retry_wins_over_retry_on():
    class Refused(ConnectionError):
        pass
    policy = RetryPolicy(retry_on=(ConnectionError,), never_retry=(Refused,))
    assert policy.is_retryable(ConnectionError()) and not policy.is_retryable(Refused())
