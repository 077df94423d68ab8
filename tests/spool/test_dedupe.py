"""PostgreSQL: identical records put through several instances are stored once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

import pytest

from notifier.metrics import Metrics
from notifier.records import Kind
from notifier.spool import SpoolFull
from notifier.spool.pg import PostgresSpool
from notifier.spool.pg.dedupe import dedupe_key
from tests.spool.helpers import closing_all, rec, texts
from tests.spool.test_postgresql_spool import query

Opener = Callable[..., Any]


@pytest.fixture
async def instance(pg_dsn: str) -> AsyncIterator[Opener]:
    async with closing_all() as start:

        async def _open(name: str, **kw: Any) -> Any:
            kw.setdefault("dedupe_window_s", 60.0)
            return await start(PostgresSpool(pg_dsn, ["mail"], instance=name, **kw))

        yield _open


async def drain(spool: PostgresSpool) -> list[str]:
    got: list[str] = []
    while leases := await spool.lease("mail", 100, 300):
        got += texts(leases)
    return got


async def test_the_same_records_sent_to_two_instances_at_once_are_stored_once(
    instance: Opener, pg_dsn: str
) -> None:
    metrics = Metrics()
    a, b = await instance("a", metrics=metrics), await instance("b", metrics=metrics)
    now = time.time()
    # What a device with both instances as its syslog servers sends: each record twice, with
    # its own id per instance, received a few milliseconds apart.
    sent = [(f"trunk {i} down", now + i / 1000) for i in range(100)]

    async def send(spool: PostgresSpool, skew: float) -> None:
        for text, at in sent:
            await spool.put([rec(text=text, received_at=at + skew)])

    await asyncio.gather(send(a, 0.0), send(b, 0.004))

    assert sorted(await drain(a)) == sorted(text for text, _ in sent)
    assert query(pg_dsn, "SELECT count(*) FROM spool_records") == [(100,)]
    assert metrics.spool_deduplicated.labels("alarm")._value.get() == 100


async def test_records_without_a_device_time_are_identical_only_within_the_window(
    instance: Opener,
) -> None:
    a, b = await instance("a"), await instance("b")
    now = time.time()
    await a.put([rec(text="link down", received_at=now - 120)])
    await b.put([rec(text="link down", received_at=now - 90)])  # 30 s later: the same one
    await b.put([rec(text="link down", received_at=now)])  # 2 min after the first: new

    assert await drain(a) == ["link down", "link down"]


async def test_records_with_a_device_time_are_identical_whenever_they_arrive(
    instance: Opener,
) -> None:
    a, b = await instance("a"), await instance("b")
    now = time.time()
    stamped = now - 600
    await a.put([rec(text="fan failed", device_time=stamped, received_at=now - 300)])
    # b was down; the device replays what it buffered, with the time it stamped.
    await b.put([rec(text="fan failed", device_time=stamped, received_at=now)])
    await b.put([rec(text="fan failed", device_time=stamped + 1, received_at=now)])

    assert len(await drain(a)) == 2


async def test_records_that_differ_in_any_field_that_counts_are_all_stored(
    instance: Opener,
) -> None:
    a = await instance("a")
    now = time.time()
    base = rec(text="x", received_at=now)
    variants = [
        base,
        replace(base, id="2", kind=Kind.CLEAR),
        replace(base, id="3", code="OTHER"),
        replace(base, id="4", source="RELAY"),
        replace(base, id="5", device="gw02"),
        replace(base, id="6", text="y"),
        replace(base, id="7", device_time=now - 5),
    ]
    assert len({dedupe_key(r) for r in variants}) == len(variants)

    await a.put(variants)

    assert len(await drain(a)) == len(variants)


async def test_a_refused_record_does_not_stop_its_copy_from_being_stored(
    instance: Opener,
) -> None:
    a = await instance("a", max_entries=1)
    b = await instance("b")
    await a.put([rec(text="fills the queue")])
    with pytest.raises(SpoolFull):
        await a.put([rec(text="refused on a")])

    await b.put([rec(text="refused on a")])

    assert "refused on a" in [r.text for r in b.history(10)]


async def test_with_the_window_at_zero_nothing_is_deduplicated(instance: Opener) -> None:
    a = await instance("a", dedupe_window_s=0.0)
    await a.put([rec(text="same")])
    await a.put([rec(text="same")])

    assert await drain(a) == ["same", "same"]
