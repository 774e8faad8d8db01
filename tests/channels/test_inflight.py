"""The in-flight tracker Kafka and Redis share: finished, abandoned, waited for."""
import asyncio

from sabot._fastpath import Batch
from sabot.channels.inflight import InFlight
from tests.helpers import idle


async def test_wait_returns_when_every_delivery_is_finished():
    inflight = InFlight()
    a, b = inflight.open("p0"), inflight.open("p1")
    assert inflight.count() == 2 and inflight.count({"p0"}) == 1
    waiter = asyncio.ensure_future(inflight.wait(5))
    inflight.finish(a)
    await idle()  # the waiter has looked, and waits for the other one
    assert not waiter.done()
    inflight.finish(b)
    assert await asyncio.wait_for(waiter, 1) is True
    assert not inflight.finish(b)  # once only


async def test_an_abandoned_batch_tells_its_delivery_at_once():
    inflight = InFlight()
    delivery = inflight.open("p0")
    batch = Batch([1, 2])
    batch.acquire()
    inflight.watch(delivery, [batch])
    waiter = asyncio.ensure_future(inflight.wait(30))
    await idle()  # the waiter has looked, and waits
    assert not waiter.done() and delivery.in_flight
    batch.abandon()  # an agent stopped with it in hand: no polling needed
    assert await asyncio.wait_for(waiter, 1) is True
    assert delivery.abandoned and inflight.count() == 0


async def test_a_batch_abandoned_before_it_is_watched_counts_too():
    inflight = InFlight()
    delivery = inflight.open()
    batch = Batch([1])
    batch.acquire()
    batch.abandon()
    inflight.watch(delivery, [batch])
    assert delivery.abandoned


async def test_wait_per_tag_and_timeout():
    inflight = InFlight()
    inflight.open("revoked")
    kept = inflight.open("kept")
    assert await inflight.wait(0.05, {"revoked"}) is False
    inflight.forget({"revoked"})
    assert await inflight.wait(1, {"revoked"}) is True
    assert inflight.count() == 1 and kept.in_flight
