"""Consumers sleep until there is work: no hot loop, no missed wake-up."""

from __future__ import annotations

import asyncio

import pytest

from notifier.records import Kind
from notifier.spool import MemorySpool
from notifier.spool.wake import Waker
from tests.spool.helpers import rec


async def test_a_busy_consumer_does_not_keep_an_idle_one_spinning() -> None:
    spool = MemorySpool(consumers=["busy", "idle"])
    await spool.put([rec(Kind.ALARM)])
    assert await spool.lease("idle", 10, 30)  # the idle one has delivered its record
    await spool.lease("busy", 10, 0.01)  # the busy one is slow: its lease soon expires
    await asyncio.sleep(0.05)
    assert await spool.lease("idle", 10, 30) == []

    wakes = 0
    for _ in range(5):  # anonymous waits, as a consumer that does not name itself
        waiter = asyncio.create_task(spool.wait(0.2))
        done, _ = await asyncio.wait({waiter}, timeout=0.05)
        wakes += len(done)
        waiter.cancel()

    assert wakes <= 1  # woken once for the expired lease, then asleep


async def test_a_put_during_a_lease_that_finds_nothing_is_not_slept_through() -> None:
    waker = Waker()
    seen = waker.generation  # a lease starts
    waker.notify()  # a put commits while the lease runs
    waker.idle("mail", None, seen)  # the lease found nothing: it ran before the put
    # Awake: the wait returns at once instead of sleeping its 60 s on a ready record.
    await asyncio.wait_for(waker.wait(60.0, "mail"), timeout=10)


@pytest.mark.parametrize("turns", range(5))
async def test_a_wait_cancelled_before_it_returned_raises_the_cancellation(turns: int) -> None:
    # A route worker is cancelled when its instance loses the route. A wait woken at that
    # moment that returned instead (asyncio.wait_for on Python 3.11 can) would let the worker
    # go on dispatching. `turns`: how far the wake-up got when the cancellation came.
    waker = Waker()
    waker.idle("mail", None)
    waiting = asyncio.create_task(waker.wait(60.0, "mail"))
    await asyncio.sleep(0)  # asleep
    waker.notify()
    for _ in range(turns):
        await asyncio.sleep(0)
    if waiting.done():
        return  # it returned before the cancellation came: nothing to see at this offset
    waiting.cancel()

    with pytest.raises(asyncio.CancelledError):
        await waiting
