"""RetryPolicy and the ExecutionEvent bus."""
import asyncio

import pytest

from sabot.exceptions import NodeExecutionError, TransportError
from sabot.nodes import EventBus, EventKind, ExecutionEvent, RetryPolicy


def test_backoff_is_exponential_capped_and_jittered():
    policy = RetryPolicy(max_attempts=5, initial_delay=0.1, multiplier=2, max_delay=0.5,
                         jitter=0)
    assert [policy.delay(n) for n in (1, 2, 3, 4)] == [0.1, 0.2, 0.4, 0.5]
    jittery = RetryPolicy(initial_delay=1.0, jitter=0.1)
    delays = {jittery.delay(1) for _ in range(50)}
    assert len(delays) > 1 and all(0.9 <= d <= 1.1 for d in delays)


def test_is_retryable_reads_the_error_flag():
    assert RetryPolicy.is_retryable(TransportError("down"))
    assert not RetryPolicy.is_retryable(ValueError("bad"))
    assert RetryPolicy.is_retryable(NodeExecutionError("x", retryable=True))
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


async def test_bus_delivers_to_callbacks_and_iterators_in_order():
    bus = EventBus()
    seen = []
    bus.subscribe(seen.append)
    bus.subscribe(lambda e: 1 / 0)  # a broken listener is logged, not fatal
    sub = bus.subscribe(maxsize=2)
    events = [ExecutionEvent(EventKind.NODE_STARTED, "p", 1, node_id=str(i)) for i in range(3)]
    for event in events:
        bus.publish(event)
    assert seen == events
    # The bounded subscription kept the newest two and counted the drop.
    assert [await asyncio.wait_for(sub.__anext__(), 1) for _ in range(2)] == events[1:]
    assert sub.dropped == 1
    sub.close()
    bus.publish(events[0])
    assert sub.pending() == []
