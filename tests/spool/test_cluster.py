"""Several instances on one PostgreSQL database: who dispatches each consumer, the takeover
when the owner dies, and what an owner does when it cannot renew."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import psycopg
import pytest
from structlog.testing import capture_logs

from notifier.config import Settings
from notifier.metrics import Metrics
from notifier.records import Kind
from notifier.spool.cluster import Member, while_owned
from notifier.spool.factory import open_cluster, open_spool
from notifier.spool.pg import PostgresSpool
from notifier.spool.pg.cluster import PgCluster, give_up_at
from notifier.spool.wake import Waker
from tests.pg import PgServer
from tests.spool.helpers import closing_all, rec, texts

TTL, INTERVAL = 2.0, 0.5

Opener = Callable[..., Any]


@pytest.fixture
async def node(pg_dsn: str) -> AsyncIterator[Opener]:
    """`await node(name)`: an instance's spool and cluster member on one database, both
    closed at the end (the member without handing over: as if it stopped)."""
    members: list[PgCluster] = []
    async with closing_all() as start:

        async def _open(name: str, **kw: Any) -> tuple[PostgresSpool, PgCluster]:
            spool = await start(PostgresSpool(pg_dsn, ["mail"], instance=name))
            member = PgCluster(pg_dsn, name, ["mail"], spool, ttl_s=TTL, interval_s=INTERVAL, **kw)
            await member.start()
            members.append(member)
            return spool, member

        yield _open
        for member in members:
            await member.close(release=False)


async def test_a_new_owner_releases_at_once_the_records_another_instance_had_leased(
    pg_dsn: str,
) -> None:
    async with closing_all() as start:
        a = await start(PostgresSpool(pg_dsn, ["mail"], instance="a"))
        b = await start(PostgresSpool(pg_dsn, ["mail"], instance="b"))
        await a.put([rec(text="one"), rec(text="two")])
        assert len(await a.lease("mail", 10, 600)) == 2  # a holds them for ten minutes
        assert await b.lease("mail", 10, 600) == []

        released = await b.release_leases("mail")

        assert released == 2
        assert sorted(texts(await b.lease("mail", 10, 600))) == ["one", "two"]


async def test_one_instance_owns_a_consumer_and_another_takes_it_over_when_it_dies(
    node: Opener,
) -> None:
    spool_a, a = await node("a")
    await asyncio.wait_for(a.acquired("mail"), 10)
    spool_b, b = await node("b")
    await spool_a.put([rec(text="leased by a when it died")])
    assert texts(await spool_a.lease("mail", 10, 600)) == ["leased by a when it died"]
    await asyncio.sleep(TTL)  # b heartbeats meanwhile: a is alive, so b may not take over
    assert not b.owns("mail")

    await a.close(release=False)  # a crash: no hand-over, the row just stops being renewed

    await asyncio.wait_for(b.acquired("mail"), TTL + 3 * INTERVAL + 5)
    assert texts(await spool_b.lease("mail", 10, 600)) == ["leased by a when it died"]
    assert b.view().owners == {"mail": "b"}


async def test_a_graceful_stop_hands_the_consumer_over_without_waiting_for_the_lease(
    node: Opener,
) -> None:
    _, a = await node("a")
    await asyncio.wait_for(a.acquired("mail"), 10)
    _, b = await node(
        "b",
    )
    await a.close()  # release=True: the row is deleted

    await asyncio.wait_for(b.acquired("mail"), 3 * INTERVAL + 5)


async def test_an_owner_whose_consumer_was_taken_from_it_stops_at_its_next_heartbeat(
    node: Opener, pg_dsn: str
) -> None:
    _, a = await node("a")
    await asyncio.wait_for(a.acquired("mail"), 10)

    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(
            "UPDATE cluster_owners SET instance = 'elsewhere',"
            " expires_at = extract(epoch FROM now()) + 3600"
        )

    await asyncio.wait_for(a.lost("mail"), 5 * INTERVAL + 5)


async def test_an_owner_cut_off_from_the_database_stops_dispatching_and_resumes_after(
    node: Opener, pg_dsn: str, pg_server: PgServer
) -> None:
    _, a = await node("a")
    await asyncio.wait_for(a.acquired("mail"), 10)
    dbname = pg_dsn.rsplit("/", 1)[1]
    with psycopg.connect(pg_server.dsn(), autocommit=True) as admin:
        # A partition as the instance sees it: its connections die and new ones are refused.
        admin.execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS false')
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
            (dbname,),
        )
        try:
            await asyncio.wait_for(a.lost("mail"), TTL + 5)
        finally:
            admin.execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS true')

    await asyncio.wait_for(a.acquired("mail"), TTL + 3 * INTERVAL + 10)


def test_an_owner_gives_up_an_interval_before_its_row_can_expire() -> None:
    assert give_up_at(sent_at=100.0, ttl_s=10.0, interval_s=2.0) == 108.0


class _Switch(Member):
    """Ownership switched by hand."""

    def __init__(self) -> None:
        super().__init__("me", ["mail"])

    def set(self, owned: bool) -> None:
        (self._ownership.gain if owned else self._ownership.lose)("mail")


async def test_a_worker_runs_only_while_owned_and_starts_afresh_on_each_gain() -> None:
    switch = _Switch()
    starts: list[int] = []
    running = asyncio.Event()

    async def run() -> None:
        starts.append(len(starts) + 1)  # the start path: where a worker loads its state
        running.set()
        await asyncio.Event().wait()  # dispatches until cancelled

    stopping = asyncio.Event()
    task = asyncio.create_task(while_owned(switch, "mail", run, stopping))
    await asyncio.sleep(0.05)
    assert starts == []  # not owned: not started

    switch.set(True)
    await asyncio.wait_for(running.wait(), 5)
    running.clear()
    switch.set(False)
    await asyncio.sleep(0.05)
    assert not running.is_set()
    switch.set(True)
    await asyncio.wait_for(running.wait(), 5)

    assert starts == [1, 2]
    switch.set(False)
    stopping.set()
    await asyncio.wait_for(task, 5)


@pytest.mark.parametrize("turns", range(5))
async def test_a_worker_woken_as_it_loses_its_consumer_does_nothing_once_cancelled(
    turns: int,
) -> None:
    # The order of a CI failure: the ownership is lost and the worker's wait is woken (a put,
    # or its 1 s timeout) before the runner's cancellation reaches it. Once cancelled, the
    # worker must not go on: it would dispatch what another instance owns now. `turns`: how
    # far the loss got before the put.
    switch = _Switch()
    waker = Waker()
    waiting = asyncio.Event()
    acted_after_cancel: list[int] = []

    async def run() -> None:
        while True:
            waker.idle("mail", None)
            waiting.set()
            await waker.wait(60.0, "mail")
            # A worker leases and mails here; a cancellation asked for must have stopped it.
            task = asyncio.current_task()
            assert task is not None
            acted_after_cancel.append(task.cancelling())

    switch.set(True)
    stopping = asyncio.Event()
    task = asyncio.create_task(while_owned(switch, "mail", run, stopping))
    await asyncio.wait_for(waiting.wait(), 5)

    switch.set(False)
    for _ in range(turns):
        await asyncio.sleep(0)
    waker.notify()
    await asyncio.sleep(0.1)

    assert [c for c in acted_after_cancel if c] == []
    stopping.set()
    await asyncio.wait_for(task, 5)


async def test_a_worker_that_runs_on_after_it_was_cancelled_is_cancelled_again() -> None:
    switch = _Switch()
    ended = asyncio.Event()

    async def run() -> None:
        try:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                await asyncio.sleep(1.5)  # a bug: the worker swallows its first cancellation
            await asyncio.Event().wait()
        finally:
            ended.set()

    switch.set(True)
    stopping = asyncio.Event()
    task = asyncio.create_task(while_owned(switch, "mail", run, stopping))
    await asyncio.sleep(0.05)
    with capture_logs() as logs:
        switch.set(False)
        await asyncio.wait_for(ended.wait(), 10)

    assert [e["event"] for e in logs if e["log_level"] == "error"] == [
        "consumer's worker runs on after it was cancelled; cancelling it again"
    ]
    stopping.set()
    await asyncio.wait_for(task, 5)


async def test_on_postgresql_what_a_route_consumes_is_stored_there_whatever_its_kind(
    pg_dsn: str, tmp_path: Any
) -> None:
    settings = Settings(
        data_dir=str(tmp_path),
        spool={"backend": "postgresql", "dsn": pg_dsn},  # type: ignore[arg-type]
    )
    spool = open_spool(settings, ["route:logs"], Metrics(), {"route:logs": [Kind.LOG, Kind.ALARM]})
    await spool.start()
    try:
        await spool.put([rec(Kind.LOG, text="a log line the route mails")])
        cluster = open_cluster(settings, spool, ["route:logs"], Metrics(), "test")
        assert isinstance(cluster, PgCluster)
    finally:
        await spool.close()

    with psycopg.connect(pg_dsn) as conn:
        rows = conn.execute("SELECT data FROM spool_records").fetchall()
    assert any("a log line the route mails" in data for (data,) in rows)


async def test_on_postgresql_a_log_line_no_consumer_takes_stays_in_the_local_memory_tier(
    pg_dsn: str, tmp_path: Any
) -> None:
    settings = Settings(
        data_dir=str(tmp_path),
        spool={"backend": "postgresql", "dsn": pg_dsn},  # type: ignore[arg-type]
    )
    spool = open_spool(settings, ["route:alarms"], Metrics(), {"route:alarms": [Kind.ALARM]})
    await spool.start()
    try:
        await spool.put([rec(Kind.LOG, text="history only")])
        assert [r.text for r in spool.history(10)] == ["history only"]
    finally:
        await spool.close()

    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM spool_records").fetchone() == (0,)


async def test_a_worker_whose_start_fails_is_started_again_while_owned() -> None:
    switch = _Switch()
    switch.set(True)
    starts: list[int] = []

    async def run() -> None:
        starts.append(1)
        if len(starts) == 1:
            raise RuntimeError("the state store is not there yet")

    await asyncio.wait_for(while_owned(switch, "mail", run, asyncio.Event()), 10)

    assert len(starts) == 2  # failed once, then ran (and returned: it was stopped)


async def test_two_running_instances_with_one_name_are_told_apart_and_logged(
    node: Opener,
) -> None:
    with capture_logs() as logs:
        await node("same")
        await node("same")
        await asyncio.sleep(4 * INTERVAL)

    errors = [e for e in logs if e["log_level"] == "error"]
    assert errors and "same instance_name" in errors[0]["event"]
    assert "give each instance its own instance_name" in errors[0]["hint"]
