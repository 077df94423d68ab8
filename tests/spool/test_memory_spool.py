"""The memory spool: the same contract without durability (log lines by default)."""

from __future__ import annotations

import asyncio

import pytest

from notifier.records import Kind
from notifier.spool import MemorySpool, Overflow, SpoolFull
from notifier.spool.policy import SpoolPolicy
from tests.spool.helpers import rec, texts


async def test_reject_raises_spool_full_and_holds_nothing_of_the_batch() -> None:
    spool = MemorySpool(consumers=["test"], max_entries=2, overflow=Overflow.REJECT)
    await spool.put([rec(text="1")])

    with pytest.raises(SpoolFull, match="memory_queue_entries"):
        await spool.put([rec(text="2"), rec(text="3")])

    assert texts(await spool.lease("test", 10, 30)) == ["1"]
    assert spool.stats().rejected == 2


async def test_drop_oldest_drops_log_lines_before_alarms_and_says_so() -> None:
    spool = MemorySpool(consumers=["test"], max_entries=3, overflow=Overflow.DROP_OLDEST)
    await spool.put([rec(Kind.ALARM, "alarm"), rec(Kind.LOG, "log"), rec(Kind.EVENT, "event")])

    await spool.put(
        [rec(Kind.ALARM, "alarm 2"), rec(Kind.LOG, "log 2"), rec(Kind.ALARM, "alarm 3")]
    )

    assert texts(await spool.lease("test", 10, 30)) == ["alarm", "alarm 2", "alarm 3"]
    assert spool.stats().dropped == {"queue_full_log": 2, "queue_full_event": 1}
    notice = spool.take_drop_notice("test")
    assert notice is not None and notice.counts == {Kind.LOG: 2, Kind.EVENT: 1}


async def test_nack_retry_wakes_the_waiting_consumer_when_due() -> None:
    spool = MemorySpool(consumers=["test"])
    await spool.put([rec(text="retry me")])
    (lease,) = await spool.lease("test", 10, 30)
    await spool.nack("test", [lease.record.id], error="421", retry_in_s=0.05)
    assert await spool.lease("test", 10, 30) == []

    await asyncio.wait_for(spool.wait(60, "test"), 10)

    (again,) = await spool.lease("test", 10, 30)
    assert (again.attempts, again.last_error) == (1, "421")


async def test_stats_tell_ready_leased_and_retry_apart() -> None:
    spool = MemorySpool(consumers=["test"])
    await spool.put([rec(text=str(i)) for i in range(3)])
    _, b = await spool.lease("test", 2, 30)
    await spool.nack("test", [b.record.id], error="421", retry_in_s=300)

    depth = spool.stats().depth

    assert depth == {("test", "leased"): 1, ("test", "retry"): 1, ("test", "ready"): 1}


async def test_a_dead_letter_in_memory_frees_its_slot_and_is_counted() -> None:
    # `notifier spool retry` cannot reach the memory tier: a dead letter kept there would only
    # hold a queue slot until the next restart.
    spool = MemorySpool(consumers=["test"], max_entries=2, overflow=Overflow.REJECT)
    await spool.put([rec(Kind.LOG, "a"), rec(Kind.LOG, "b")])
    leases = await spool.lease("test", 2, 30)
    await spool.nack("test", [le.record.id for le in leases], error="550", retry_in_s=None)

    await spool.put([rec(Kind.LOG, "c")])  # room again

    assert spool.stats().dropped == {"dead_letter_log": 2}
    assert texts(await spool.lease("test", 10, 30)) == ["c"]


async def test_history_is_newest_first_and_bounded() -> None:
    spool = MemorySpool(consumers=["test"], history_entries=2)
    await spool.put([rec(text=str(i)) for i in range(3)])

    assert [r.text for r in spool.history(10)] == ["2", "1"]


async def test_a_record_no_consumer_wants_is_history_only_and_takes_no_entry() -> None:
    policy = SpoolPolicy(overflow=Overflow.REJECT, wanted=lambda r: r.text != "unwanted")
    spool = MemorySpool(consumers=["mail", "forward"], max_entries=2, overflow=policy)
    await spool.put([rec(text="a"), rec(text="unwanted"), rec(text="b")])
    await spool.put([rec(text="unwanted") for _ in range(3)])  # the queue is full: still taken
    with pytest.raises(SpoolFull):
        await spool.put([rec(text="c")])

    assert texts(await spool.lease("mail", 10, 30)) == ["a", "b"]
    assert texts(await spool.lease("forward", 10, 30)) == ["a", "b"]
    assert spool.entries == 2
    assert [r.text for r in spool.history(10)] == ["unwanted"] * 3 + ["b", "unwanted", "a"]
