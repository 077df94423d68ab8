"""The durable spool through its public API, on a real SQLite file."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from notifier.metrics import Metrics
from notifier.records import Kind
from notifier.spool import Overflow, SpoolError, SpoolFull, SqliteSpool
from tests.spool.helpers import rec, texts

Opener = Callable[..., Any]


@pytest.fixture
async def open_spool(tmp_path: Path) -> AsyncIterator[Opener]:
    """Open (and at the end close) SqliteSpools on one file, consumer "mail" by default."""
    opened: list[SqliteSpool] = []

    async def _open(consumers: tuple[str, ...] = ("mail",), **kw: Any) -> SqliteSpool:
        spool = SqliteSpool(tmp_path / "spool.sqlite3", list(consumers), **kw)
        await spool.start()
        opened.append(spool)
        return spool

    yield _open
    for spool in opened:
        await spool.close()


async def test_leases_come_out_in_arrival_order_with_raw_bytes_intact(open_spool: Opener) -> None:
    spool = await open_spool()
    first, second = rec(text="first"), rec(text="second")
    await spool.put([first, second])

    leases = await spool.lease("mail", 10, 30)

    assert texts(leases) == ["first", "second"]
    assert leases[0].record == first
    assert leases[0].attempts == 0


async def test_every_consumer_gets_every_record(open_spool: Opener) -> None:
    spool = await open_spool(consumers=("mail", "forward"))
    await spool.put([rec(text="a")])
    await spool.ack("mail", [(await spool.lease("mail", 10, 30))[0].record.id])

    assert texts(await spool.lease("forward", 10, 30)) == ["a"]
    assert await spool.lease("mail", 10, 30) == []


async def test_concurrent_puts_share_fsynced_commits(open_spool: Opener) -> None:
    metrics = Metrics()
    spool = await open_spool(metrics=metrics)

    await asyncio.gather(*(spool.put([rec(text=str(i))]) for i in range(200)))

    stats = spool.stats()
    assert stats.records_committed == 200
    assert stats.fsyncs < 200
    assert metrics.spool_fsyncs._value.get() == stats.fsyncs
    assert len(await spool.lease("mail", 500, 30)) == 200


async def test_a_record_put_twice_is_held_once(open_spool: Opener) -> None:
    spool = await open_spool()
    record = rec(text="retried after a crash")
    await spool.put([record, record])
    await spool.put([record])

    assert texts(await spool.lease("mail", 10, 30)) == ["retried after a crash"]


async def test_restart_queues_every_unacked_record_again_at_once(open_spool: Opener) -> None:
    spool = await open_spool()
    await spool.put([rec(text="acked"), rec(text="leased"), rec(text="waiting")])
    acked, _leased = await spool.lease("mail", 2, 300)
    await spool.ack("mail", [acked.record.id])
    await spool.close()

    reopened = await open_spool()

    # The lease of the dead process is void: no need to wait out its 300 s.
    leases = await reopened.lease("mail", 10, 30)
    assert texts(leases) == ["leased", "waiting"]
    assert leases[0].attempts == 1


async def test_an_acked_record_is_never_delivered_again_after_reopen(open_spool: Opener) -> None:
    spool = await open_spool(history_entries=10)
    await spool.put([rec(text="sent")])
    await spool.ack("mail", [r.record.id for r in await spool.lease("mail", 10, 30)])
    await spool.close()

    reopened = await open_spool(history_entries=10)

    assert await reopened.lease("mail", 10, 30) == []
    assert [r.text for r in reopened.history(10)] == ["sent"]


async def test_an_expired_lease_makes_the_record_ready_again(open_spool: Opener) -> None:
    spool = await open_spool()
    await spool.put([rec(text="slow delivery")])
    assert texts(await spool.lease("mail", 10, 0.05)) == ["slow delivery"]
    assert await spool.lease("mail", 10, 0.05) == []

    await asyncio.wait_for(spool.wait(60, "mail"), 10)  # wakes when the lease runs out

    again = await spool.lease("mail", 10, 30)
    assert texts(again) == ["slow delivery"]
    assert again[0].attempts == 1


async def test_extend_keeps_a_leased_record_hidden(open_spool: Opener) -> None:
    spool = await open_spool()
    await spool.put([rec(text="digest")])
    (lease,) = await spool.lease("mail", 10, 0.05)

    await spool.extend("mail", [lease.record.id], 300)
    await asyncio.sleep(0.1)

    assert await spool.lease("mail", 10, 30) == []


async def test_nack_hides_the_record_until_its_retry_time(open_spool: Opener) -> None:
    spool = await open_spool()
    await spool.put([rec(text="smtp down")])
    (lease,) = await spool.lease("mail", 10, 30)

    await spool.nack("mail", [lease.record.id], error="421 try later", retry_in_s=0.1)
    assert await spool.lease("mail", 10, 30) == []
    await asyncio.wait_for(spool.wait(60, "mail"), 10)

    (retried,) = await spool.lease("mail", 10, 30)
    assert retried.attempts == 1
    assert retried.last_error == "421 try later"


async def test_nack_without_retry_dead_letters_the_record(open_spool: Opener) -> None:
    spool = await open_spool()
    await spool.put([rec(text="bad address")])
    (lease,) = await spool.lease("mail", 10, 30)

    await spool.nack("mail", [lease.record.id], error="550 no such user", retry_in_s=None)

    assert await spool.lease("mail", 10, 30) == []
    stats = await spool.refresh_stats()
    assert stats.depth[("mail", "dead")] == 1
    assert stats.persistent_entries == 1  # a dead letter is held until retried or purged


async def test_history_keeps_the_newest_records_across_reopen(open_spool: Opener) -> None:
    spool = await open_spool(history_entries=3)
    await spool.put([rec(text=str(i)) for i in range(5)])
    await spool.ack("mail", [r.record.id for r in await spool.lease("mail", 10, 30)])
    await spool.close()

    reopened = await open_spool(history_entries=3)

    assert [r.text for r in reopened.history(10)] == ["4", "3", "2"]
    assert [r.text for r in reopened.history(2)] == ["4", "3"]
    assert (await reopened.refresh_stats()).persistent_entries == 0


async def test_reject_refuses_the_whole_batch_when_full(open_spool: Opener) -> None:
    spool = await open_spool(max_entries=3)
    await spool.put([rec(text="1"), rec(text="2")])

    with pytest.raises(SpoolFull, match="persistent_queue_entries") as refused:
        await spool.put([rec(text="3"), rec(text="4")])

    assert refused.value.retry_after_s > 0
    assert texts(await spool.lease("mail", 10, 30)) == ["1", "2"]
    assert spool.stats().rejected == 2


async def test_drop_oldest_drops_log_lines_before_events_before_alarms(
    open_spool: Opener,
) -> None:
    metrics = Metrics()
    spool = await open_spool(max_entries=4, overflow=Overflow.DROP_OLDEST, metrics=metrics)
    await spool.put(
        [
            rec(Kind.ALARM, "old alarm"),
            rec(Kind.LOG, "log 1"),
            rec(Kind.EVENT, "event"),
            rec(Kind.LOG, "log 2"),
        ]
    )

    with capture_logs() as logs:
        await spool.put([rec(Kind.ALARM, "new alarm 1"), rec(Kind.ALARM, "new alarm 2")])
        await spool.put([rec(Kind.ALARM, "new alarm 3")])

    assert texts(await spool.lease("mail", 10, 30)) == [
        "old alarm",
        "new alarm 1",
        "new alarm 2",
        "new alarm 3",
    ]
    assert spool.stats().dropped == {"queue_full_log": 2, "queue_full_event": 1}
    assert metrics.spool_dropped.labels(reason="queue_full_log")._value.get() == 2
    assert any(e["event"] == "spool dropped records" for e in logs)
    notice = spool.take_drop_notice("mail")
    assert notice is not None and notice.counts == {Kind.LOG: 2, Kind.EVENT: 1}
    assert spool.take_drop_notice("mail") is None


async def test_drop_oldest_drops_an_incoming_log_line_rather_than_a_stored_alarm(
    open_spool: Opener,
) -> None:
    spool = await open_spool(max_entries=1, overflow=Overflow.DROP_OLDEST)
    await spool.put([rec(Kind.ALARM, "alarm")])

    await spool.put([rec(Kind.LOG, "chatter")])

    assert texts(await spool.lease("mail", 10, 30)) == ["alarm"]
    assert spool.stats().dropped == {"queue_full_log": 1}


async def test_disk_limit_rejects_and_drop_oldest_makes_room(open_spool: Opener) -> None:
    big = "x" * 4000
    spool = await open_spool(max_disk_bytes=40_000)
    await spool.put([rec(Kind.EVENT, big) for _ in range(3)])
    with pytest.raises(SpoolFull, match="disk limit"):
        await spool.put([rec(Kind.ALARM, big) for _ in range(3)])
    await spool.close()

    dropping = await open_spool(max_disk_bytes=40_000, overflow=Overflow.DROP_OLDEST)
    await dropping.put([rec(Kind.ALARM, big) for _ in range(3)])

    kinds = [lease.record.kind for lease in await dropping.lease("mail", 10, 30)]
    assert kinds.count(Kind.ALARM) == 3
    assert dropping.stats().dropped.get("disk_full_event", 0) >= 1


async def test_wait_wakes_a_consumer_when_a_record_is_put(open_spool: Opener) -> None:
    spool = await open_spool()
    assert await spool.lease("mail", 10, 30) == []
    waiting = asyncio.create_task(spool.wait(60, "mail"))
    await asyncio.sleep(0)

    await spool.put([rec(text="wake up")])

    await asyncio.wait_for(waiting, 10)
    assert texts(await spool.lease("mail", 10, 30)) == ["wake up"]


async def test_a_second_service_on_the_same_spool_is_refused(open_spool: Opener) -> None:
    spool = await open_spool()

    with pytest.raises(SpoolError, match="another notifier process"):
        await SqliteSpool(spool.path, ["mail"]).start()


async def test_put_after_close_is_refused_for_a_retry(open_spool: Opener) -> None:
    spool = await open_spool()
    await spool.close()

    with pytest.raises(SpoolFull, match="closed"):
        await spool.put([rec()])


async def test_leasing_for_an_unknown_consumer_names_the_known_ones(open_spool: Opener) -> None:
    spool = await open_spool()

    with pytest.raises(ValueError, match="'mail'"):
        await spool.lease("mial", 1, 30)


_CHILD = textwrap.dedent(
    """
    import asyncio, sys, time
    from notifier.records import Kind, Record
    from notifier.log import configure
    from notifier.spool import SqliteSpool

    configure("warning")  # stdout carries only the ids of returned puts

    async def producer(spool, n):
        while True:
            r = Record(kind=Kind.ALARM, received_at=time.time(), sender="x", receiver="http",
                       raw=b"r", text=f"p{n}")
            await spool.put([r])
            print(r.id, flush=True)

    async def main():
        spool = SqliteSpool(sys.argv[1], ["mail"])
        await spool.start()
        await asyncio.gather(*(producer(spool, n) for n in range(20)))

    asyncio.run(main())
    """
)


def test_every_put_that_returned_survives_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "spool.sqlite3"
    with subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ) as child:
        assert child.stdout is not None
        acked = [child.stdout.readline().strip() for _ in range(300)]
        os.kill(child.pid, signal.SIGKILL)  # mid-put: 20 producers are always in flight
        child.wait()
        acked += [line.strip() for line in child.stdout if line.strip()]

    async def survivors() -> set[str]:
        spool = SqliteSpool(path, ["mail"])
        await spool.start()
        try:
            return {lease.record.id for lease in await spool.lease("mail", 100_000, 30)}
        finally:
            await spool.close()

    assert set(acked) <= asyncio.run(survivors())


async def test_the_wal_is_checkpointed_and_stays_small(open_spool: Opener) -> None:
    spool = await open_spool()
    page = "x" * 4000

    for _ in range(30):  # about 12 MB of records, well past one checkpoint's worth of WAL
        await spool.put([rec(text=page) for _ in range(100)])

    wal = Path(f"{spool.path}-wal").stat().st_size
    assert wal < 8 << 20
    assert Path(spool.path).stat().st_size > 8 << 20  # the records reached the database file
