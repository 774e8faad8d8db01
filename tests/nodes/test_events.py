"""The ExecutionEvent bus: callbacks and bounded iterators."""
import asyncio

from sabot.nodes import EventBus, EventKind, ExecutionEvent
from tests.helpers import idle


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


async def test_closing_a_subscription_ends_a_blocked_iteration():
    from sabot.nodes import EventBus
    bus = EventBus()
    sub = bus.subscribe()

    async def reader():
        return [e async for e in sub]
    task = asyncio.ensure_future(reader())
    await idle()  # the reader is blocked on the empty subscription
    sub.close()
    try:
        assert await asyncio.wait_for(task, 1) == []
    finally:
        task.cancel()
