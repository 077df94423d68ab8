"""The durable spool's contract, run against every backend: SQLite and PostgreSQL.

Each test is written once against the `Spool` interface; the `open_spool` fixture opens the
backend under test (a SQLite file in tmp_path, or a fresh database on the throwaway PostgreSQL
server the test run starts). Reopening means a new spool on the same file or database, as a
restarted service would open it.
"""

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
from notifier.spool import Overflow, SpoolFull, SqliteSpool
from notifier.spool.pg import PostgresSpool
from notifier.spool.policy import SpoolPolicy
from tests.spool.helpers import (
    closing_all,
    nobody_wants_text,
    rec,
    texts,
    wakes_only_for_what_it_is_owed,
)

Opener = Callable[..., Any]
BACKENDS = ("sqlite", "postgresql")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def location(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """Where the spool lives: a file path, or the DSN of a fresh database."""
    if backend == "postgresql":
        return str(request.getfixturevalue("pg_dsn"))
    return str(tmp_path / "spool.sqlite3")


def make_spool(backend: str, location: str, consumers: tuple[str, ...], **kw: Any) -> Any:
    if backend == "postgresql":
        kw.setdefault("instance", "test-instance")
        return PostgresSpool(location, list(consumers), **kw)
    return SqliteSpool(location, list(consumers), **kw)


@pytest.fixture
async def open_spool(backend: str, location: str) -> AsyncIterator[Opener]:
    """Open (and at the end close) spools on one store, consumer "mail" by default."""
    async with closing_all() as start:

        async def _open(consumers: tuple[str, ...] = ("mail",), **kw: Any) -> Any:
            return await start(make_spool(backend, location, consumers, **kw))

        yield _open


async def test_leases_come_out_in_arrival_order_with_raw_bytes_intact(open_spool: Opener) -> None:
    spool = await open_spool()
    first, second = rec(text="first"), rec(text="second", details="<x>\u00e9\u0000</x>")
    await spool.put([first, second])

    leases = await spool.lease("mail", 10, 30)

    assert texts(leases) == ["first", "second"]
    assert [lease.record for lease in leases] == [first, second]
    assert leases[0].attempts == 0


async def test_records_nobody_wants_wake_no_consumer(open_spool: Opener) -> None:
    """A consumer waiting for records wakes for what it is owed, not for history-only
    records: otherwise each put of a log line no route takes costs every route an empty
    lease (a commit of its own)."""
    spool = await open_spool(overflow=nobody_wants_text("unwanted"))
    await wakes_only_for_what_it_is_owed(spool, spool, quiet_s=0.5)


async def test_every_consumer_gets_every_record(open_spool: Opener) -> None:
    spool = await open_spool(consumers=("mail", "forward"))
    await spool.put([rec(text="a")])
    await spool.ack("mail", [(await spool.lease("mail", 10, 30))[0].record.id])

    assert texts(await spool.lease("forward", 10, 30)) == ["a"]
    assert await spool.lease("mail", 10, 30) == []


async def test_a_record_no_consumer_wants_is_history_only(open_spool: Opener) -> None:
    """Decided when it is put: no delivery, so no consumer leases and acks it, and it holds no
    queue entry; it is in the history like every record, also after a reopen."""
    policy = nobody_wants_text("unwanted")
    spool = await open_spool(consumers=("mail", "forward"), overflow=policy)
    await spool.put([rec(text="a"), rec(text="unwanted"), rec(text="b")])

    assert texts(await spool.lease("mail", 10, 30)) == ["a", "b"]
    assert texts(await spool.lease("forward", 10, 30)) == ["a", "b"]
    stats = await spool.refresh_stats()
    assert stats.persistent_entries == 2
    assert stats.depth[("mail", "leased")] == 2
    assert [r.text for r in spool.history(10)] == ["b", "unwanted", "a"]
    await spool.close()

    reopened = await open_spool(consumers=("mail", "forward"), overflow=policy)
    assert (await reopened.refresh_stats()).persistent_entries == 2
    assert [r.text for r in reopened.history(10)] == ["b", "unwanted", "a"]


async def test_records_nobody_wants_take_no_queue_entry(open_spool: Opener) -> None:
    """A full queue of owed records still takes any number nobody wants."""
    spool = await open_spool(max_entries=2, overflow=nobody_wants_text("unwanted"))
    await spool.put([rec(text="a"), rec(text="b")])
    await spool.put([rec(text="unwanted") for _ in range(5)])
    with pytest.raises(SpoolFull):
        await spool.put([rec(text="c")])

    assert texts(await spool.lease("mail", 10, 30)) == ["a", "b"]
    assert [r.text for r in spool.history(3)] == ["unwanted"] * 3


async def test_concurrent_puts_share_commits(open_spool: Opener) -> None:
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
    assert (await spool.refresh_stats()).persistent_entries == 1


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
    assert texts(await spool.lease("mail", 10, 1.0)) == ["slow delivery"]
    assert await spool.lease("mail", 10, 1.0) == []

    await asyncio.wait_for(spool.wait(60, "mail"), 10)  # wakes when the lease runs out

    again = await spool.lease("mail", 10, 30)
    assert texts(again) == ["slow delivery"]
    assert again[0].attempts == 1


async def test_extend_keeps_a_leased_record_hidden(open_spool: Opener) -> None:
    spool = await open_spool()
    await spool.put([rec(text="digest")])
    (lease,) = await spool.lease("mail", 10, 0.2)

    await spool.extend("mail", [lease.record.id], 300)
    await asyncio.sleep(0.3)

    assert await spool.lease("mail", 10, 30) == []


async def test_nack_hides_the_record_until_its_retry_time(open_spool: Opener) -> None:
    spool = await open_spool()
    await spool.put([rec(text="smtp down")])
    (lease,) = await spool.lease("mail", 10, 30)

    await spool.nack("mail", [lease.record.id], error="421 try later", retry_in_s=1.0)
    assert await spool.lease("mail", 10, 30) == []
    await asyncio.wait_for(spool.wait(60, "mail"), 10)

    (retried,) = await spool.lease("mail", 10, 30)
    assert retried.attempts == 1
    assert retried.last_error == "421 try later"


async def test_retry_now_makes_waiting_retries_ready_at_once(open_spool: Opener) -> None:
    spool = await open_spool()
    await spool.put([rec(text="a"), rec(text="b")])
    leases = await spool.lease("mail", 10, 30)
    await spool.nack("mail", [le.record.id for le in leases], error="535 auth", retry_in_s=900)
    assert await spool.lease("mail", 10, 30) == []

    assert await spool.retry_now("mail") == 2

    assert texts(await spool.lease("mail", 10, 30)) == ["a", "b"]


async def test_nack_without_retry_dead_letters_the_record(open_spool: Opener) -> None:
    spool = await open_spool()
    await spool.put([rec(text="bad address")])
    (lease,) = await spool.lease("mail", 10, 30)

    await spool.nack("mail", [lease.record.id], error="550 no such user", retry_in_s=None)

    assert await spool.lease("mail", 10, 30) == []
    stats = await spool.refresh_stats()
    assert stats.depth[("mail", "dead")] == 1
    assert stats.persistent_entries == 1  # a dead letter is held until retried or purged


async def test_stats_tell_ready_leased_retry_and_dead_apart(open_spool: Opener) -> None:
    spool = await open_spool()
    await spool.put([rec(text=str(i)) for i in range(4)])
    _, retry, dead = await spool.lease("mail", 3, 300)
    await spool.nack("mail", [retry.record.id], error="421", retry_in_s=300)
    await spool.nack("mail", [dead.record.id], error="550", retry_in_s=None)

    stats = await spool.refresh_stats()

    states = ("ready", "leased", "retry", "dead")
    assert [stats.depth[("mail", s)] for s in states] == [1, 1, 1, 1]
    assert stats.persistent_entries == 4
    assert stats.oldest_ready_age_s["mail"] >= 0


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


async def test_a_refused_put_does_not_fail_the_puts_committed_with_it(open_spool: Opener) -> None:
    spool = await open_spool(max_entries=3)

    outcomes = await asyncio.gather(
        spool.put([rec(text="small")]),
        spool.put([rec(text=f"big {i}") for i in range(5)]),
        spool.put([rec(text="also small")]),
        return_exceptions=True,
    )

    assert [type(o).__name__ for o in outcomes] == ["NoneType", "SpoolFull", "NoneType"]
    assert texts(await spool.lease("mail", 10, 30)) == ["small", "also small"]


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
    assert "log 1" not in [r.text for r in spool.history(10)]


async def test_drop_oldest_drops_an_incoming_log_line_rather_than_a_stored_alarm(
    open_spool: Opener,
) -> None:
    spool = await open_spool(max_entries=1, overflow=Overflow.DROP_OLDEST)
    await spool.put([rec(Kind.ALARM, "alarm")])

    await spool.put([rec(Kind.LOG, "chatter")])

    assert texts(await spool.lease("mail", 10, 30)) == ["alarm"]
    assert spool.stats().dropped == {"queue_full_log": 1}


async def test_drop_oldest_keeps_an_incoming_record_nobody_wants_when_entries_are_full(
    open_spool: Opener,
) -> None:
    """A record no consumer is owed (history only) takes no queue entry: dropping it would
    lose it and make no room, so an entry is made by dropping a held record instead."""
    policy = SpoolPolicy(overflow=Overflow.DROP_OLDEST, wanted=lambda r: r.kind is Kind.ALARM)
    spool = await open_spool(max_entries=2, overflow=policy)
    await spool.put([rec(Kind.ALARM, "alarm 1"), rec(Kind.ALARM, "alarm 2")])

    await spool.put([rec(Kind.LOG, "history only"), rec(Kind.ALARM, "alarm 3")])

    assert texts(await spool.lease("mail", 10, 30)) == ["alarm 2", "alarm 3"]
    assert spool.stats().dropped == {"queue_full_alarm": 1}
    assert "history only" in [r.text for r in spool.history(10)]


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
    from tests.spool.test_contract import make_spool

    configure("warning")  # stdout carries only the ids of returned puts

    async def producer(spool, n):
        while True:
            r = Record(kind=Kind.ALARM, received_at=time.time(), sender="x", receiver="http",
                       raw=b"r", text=f"p{n}")
            await spool.put([r])
            print(r.id, flush=True)

    async def main():
        spool = make_spool(sys.argv[1], sys.argv[2], ("mail",))
        await spool.start()
        await asyncio.gather(*(producer(spool, n) for n in range(20)))

    asyncio.run(main())
    """
)


def test_every_put_that_returned_survives_sigkill(backend: str, location: str) -> None:
    with subprocess.Popen(
        [sys.executable, "-c", _CHILD, backend, location],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=Path(__file__).parent.parent.parent,
    ) as child:
        assert child.stdout is not None
        acked = [child.stdout.readline().strip() for _ in range(300)]
        os.kill(child.pid, signal.SIGKILL)  # mid-put: 20 producers are always in flight
        child.wait()
        acked += [line.strip() for line in child.stdout if line.strip()]
    assert "" not in acked, "the child stopped before it was killed"

    async def survivors() -> set[str]:
        spool = make_spool(backend, location, ("mail",))
        await spool.start()
        try:
            return {lease.record.id for lease in await spool.lease("mail", 100_000, 30)}
        finally:
            await spool.close()

    assert set(acked) <= asyncio.run(survivors())
