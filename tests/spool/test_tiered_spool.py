"""The spool the service runs: durable kinds on disk, log lines in memory."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from notifier.metrics import Metrics
from notifier.records import Kind
from notifier.spool import (
    MemorySpool,
    Overflow,
    ReceiverPolicy,
    SpoolFull,
    SpoolPolicy,
    SqliteSpool,
    TieredSpool,
)
from notifier.spool.factory import receiver_policies
from notifier.spool.tiered import publish_gauges
from tests.spool.helpers import rec, texts

Opener = Callable[..., Any]


@pytest.fixture
async def open_tiered(tmp_path: Path) -> AsyncIterator[Opener]:
    opened: list[TieredSpool] = []

    async def _open(
        policy: SpoolPolicy | None = None, memory_entries: int = 100, **kw: Any
    ) -> TieredSpool:
        policy = policy or SpoolPolicy()
        spool = TieredSpool(
            SqliteSpool(tmp_path / "spool.sqlite3", ["mail"], overflow=policy, **kw),
            MemorySpool(["mail"], max_entries=memory_entries, overflow=policy),
            policy,
        )
        await spool.start()
        opened.append(spool)
        return spool

    yield _open
    for spool in opened:
        await spool.close()


async def test_alarms_survive_a_restart_and_log_lines_do_not(open_tiered: Opener) -> None:
    spool = await open_tiered()
    await spool.put([rec(Kind.ALARM, "alarm"), rec(Kind.LOG, "log line")])
    await spool.close()

    reopened = await open_tiered()

    assert texts(await reopened.lease("mail", 10, 30)) == ["alarm"]


async def test_a_receiver_can_keep_even_its_alarms_in_memory(open_tiered: Opener) -> None:
    policy = SpoolPolicy(receivers={"syslog-udp": ReceiverPolicy(durable_kinds=frozenset())})
    spool = await open_tiered(policy)
    await spool.put([rec(Kind.ALARM, "udp alarm", receiver="syslog-udp")])
    await spool.close()

    reopened = await open_tiered(policy)

    assert await reopened.lease("mail", 10, 30) == []


async def test_lease_serves_durable_records_first_then_memory(open_tiered: Opener) -> None:
    spool = await open_tiered()
    await spool.put(
        [rec(Kind.LOG, "log", received_at=1.0), rec(Kind.ALARM, "alarm", received_at=2.0)]
    )

    assert texts(await spool.lease("mail", 1, 30)) == ["alarm"]
    assert texts(await spool.lease("mail", 1, 30)) == ["log"]


async def test_acks_reach_the_tier_that_holds_the_record(open_tiered: Opener) -> None:
    spool = await open_tiered()
    await spool.put(
        [rec(Kind.LOG, "log", received_at=1.0), rec(Kind.EVENT, "event", received_at=2.0)]
    )
    leases = await spool.lease("mail", 10, 30)
    assert texts(leases) == ["log", "event"]  # one batch, in time order

    await spool.ack("mail", [lease.record.id for lease in leases])
    await spool.close()

    reopened = await open_tiered()
    assert await reopened.lease("mail", 10, 30) == []
    assert reopened.stats().persistent_entries == 0


async def test_a_refusal_on_disk_leaves_nothing_in_memory(open_tiered: Opener) -> None:
    spool = await open_tiered(max_entries=1)
    await spool.put([rec(Kind.ALARM, "first")])

    with pytest.raises(SpoolFull):
        await spool.put([rec(Kind.LOG, "log"), rec(Kind.ALARM, "second")])

    assert texts(await spool.lease("mail", 10, 30)) == ["first"]


async def test_history_merges_both_tiers_newest_first(open_tiered: Opener) -> None:
    spool = await open_tiered()
    await spool.put([rec(Kind.ALARM, "a", received_at=1.0), rec(Kind.LOG, "b", received_at=2.0)])
    await spool.put([rec(Kind.EVENT, "c", received_at=3.0)])

    assert [r.text for r in spool.history(10)] == ["c", "b", "a"]
    assert [r.text for r in spool.history(2)] == ["c", "b"]


async def test_wait_wakes_for_a_log_line_put_in_memory(open_tiered: Opener) -> None:
    spool = await open_tiered()
    assert await spool.lease("mail", 10, 30) == []
    waiting = asyncio.create_task(spool.wait(60, "mail"))
    await asyncio.sleep(0.01)

    await spool.put([rec(Kind.LOG, "log")])

    await asyncio.wait_for(waiting, 10)


async def test_drop_notice_sums_both_tiers(open_tiered: Opener) -> None:
    policy = SpoolPolicy(overflow=Overflow.DROP_OLDEST)
    spool = await open_tiered(policy, memory_entries=1, max_entries=1)
    await spool.put([rec(Kind.EVENT, "e1"), rec(Kind.LOG, "l1")])
    await spool.put([rec(Kind.ALARM, "a1"), rec(Kind.LOG, "l2")])

    notice = spool.take_drop_notice("mail")

    assert notice is not None and notice.counts == {Kind.EVENT: 1, Kind.LOG: 1}


async def test_gauges_show_depth_per_consumer_and_state(open_tiered: Opener) -> None:
    metrics = Metrics()
    spool = await open_tiered()
    await spool.put([rec(Kind.ALARM), rec(Kind.LOG)])
    await spool.durable.refresh_stats()

    publish_gauges(metrics, spool.stats())

    assert metrics.spool_depth.labels(consumer="mail", state="ready")._value.get() == 2
    assert metrics.spool_depth.labels(consumer="mail", state="dead")._value.get() == 0


def test_receiver_policies_read_config_values() -> None:
    from notifier.config import ReceiverSpoolSettings

    settings = ReceiverSpoolSettings(overflow="drop_oldest", durable_kinds=[])
    policies = receiver_policies({"syslog-udp": settings})

    assert policies["syslog-udp"] == ReceiverPolicy(frozenset(), Overflow.DROP_OLDEST)


async def test_log_lines_no_route_takes_are_kept_as_history_without_deliveries(
    tmp_path: Path,
) -> None:
    from notifier.config import load_settings
    from notifier.spool.factory import open_spool

    settings = load_settings(environ={"NOTIFIER_DATA_DIR": str(tmp_path)})
    spool = open_spool(
        settings,
        ["route:alarms", "route:logs"],
        Metrics(),
        interest={"route:alarms": [Kind.ALARM, Kind.CLEAR], "route:logs": list(Kind)},
    )
    await spool.start()
    try:
        await spool.put([rec(Kind.LOG, f"line {i}") for i in range(5)] + [rec(Kind.ALARM, "a")])
        # The alarm route has nothing in the memory tier: only its alarm comes back.
        assert texts(await spool.lease("route:alarms", 100, 30)) == ["a"]
        assert len(await spool.lease("route:logs", 100, 30)) == 6
        assert len(spool.history(100)) == 6
        await spool.ack("route:alarms", [r.id for r in spool.history(100)][-1:])
        await spool.wait(0.01, "route:alarms")
    finally:
        await spool.close()


async def test_retry_now_makes_records_waiting_for_a_retry_ready_at_once(
    open_tiered: Opener,
) -> None:
    spool = await open_tiered()
    await spool.put([rec(Kind.ALARM, "alarm"), rec(Kind.LOG, "log line")])
    leases = await spool.lease("mail", 10, 30)
    await spool.nack("mail", [le.record.id for le in leases], error="535", retry_in_s=3600)
    assert await spool.lease("mail", 10, 30) == []

    assert await spool.retry_now("mail") == 2

    assert sorted(texts(await spool.lease("mail", 10, 30))) == ["alarm", "log line"]
