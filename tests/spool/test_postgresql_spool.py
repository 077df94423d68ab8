"""What only the PostgreSQL spool does: several instances on one database, the schema, the
connection. The shared contract is in test_contract.py."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import psycopg
import pytest

from notifier.spool import Lease, SpoolError, SpoolFull
from notifier.spool.pg import PostgresSpool
from notifier.spool.pg.schema import LATEST
from notifier.spool.pg.spool import Wake
from tests.conftest import free_port
from tests.pg import PgServer, start_server, start_server_again, stop_server
from tests.spool.helpers import (
    closing_all,
    nobody_wants_text,
    rec,
    texts,
    wakes_only_for_what_it_is_owed,
)

Opener = Callable[..., Any]


@pytest.fixture
async def instance(pg_dsn: str) -> AsyncIterator[Opener]:
    """Open spools on one database as separate instances ("a", "b", ...); closed at the end."""
    async with closing_all() as start:

        async def _open(name: str, consumers: tuple[str, ...] = ("mail",), **kw: Any) -> Any:
            return await start(PostgresSpool(pg_dsn, list(consumers), instance=name, **kw))

        yield _open


async def consume(spool: PostgresSpool) -> list[Lease]:
    """What a dispatcher does: lease, and when nothing is ready, wait and lease again."""
    while not (leases := await spool.lease("mail", 10, 30)):
        await spool.wait(60, "mail")
    return leases


def query(dsn: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(sql).fetchall()


async def test_two_instances_never_lease_the_same_record_and_together_get_all(
    instance: Opener,
) -> None:
    a, b = await instance("a"), await instance("b")
    records = [rec(text=str(i)) for i in range(300)]
    await a.put(records[:150])
    await b.put(records[150:])

    async def drain(spool: PostgresSpool) -> list[str]:
        got: list[str] = []
        while leases := await spool.lease("mail", 7, 300):
            got += [lease.record.id for lease in leases]
        return got

    got_a, got_b = await asyncio.gather(drain(a), drain(b))

    assert not set(got_a) & set(got_b)
    assert sorted(got_a + got_b) == sorted(r.id for r in records)


async def test_a_put_on_one_instance_wakes_a_consumer_waiting_on_another(
    instance: Opener,
) -> None:
    a, b = await instance("a"), await instance("b")
    assert await b.lease("mail", 10, 30) == []
    waiting = asyncio.create_task(b.wait(60, "mail"))
    await asyncio.sleep(0.1)
    assert not waiting.done()

    await a.put([rec(text="from a")])

    await asyncio.wait_for(waiting, 10)
    assert texts(await b.lease("mail", 10, 30)) == ["from a"]


async def test_records_nobody_wants_wake_no_other_instance(instance: Opener) -> None:
    """History-only records send no NOTIFY: otherwise every put of a log line no route
    takes costs each route on every instance an empty lease."""
    policy = nobody_wants_text("unwanted")
    a, b = await instance("a", overflow=policy), await instance("b", overflow=policy)
    await wakes_only_for_what_it_is_owed(a, b, quiet_s=1.0)


async def test_a_dead_instances_lease_runs_out_and_another_instance_delivers(
    instance: Opener,
) -> None:
    a, b = await instance("a"), await instance("b")
    await a.put([rec(text="leased by a, which dies")])
    assert texts(await a.lease("mail", 10, 1.0)) == ["leased by a, which dies"]
    assert await b.lease("mail", 10, 30) == []  # hidden while a's lease runs

    (again,) = await asyncio.wait_for(consume(b), 10)  # b knows when a's lease ends
    assert (again.record.text, again.attempts) == ("leased by a, which dies", 1)


async def test_an_instance_that_restarts_voids_only_its_own_leases(
    instance: Opener, pg_dsn: str
) -> None:
    a, b = await instance("a"), await instance("b")
    await a.put([rec(text="a's"), rec(text="b's")])
    assert texts(await a.lease("mail", 1, 300)) == ["a's"]
    assert texts(await b.lease("mail", 1, 300)) == ["b's"]
    await a.close()

    restarted = await instance("a")

    assert texts(await restarted.lease("mail", 10, 30)) == ["a's"]
    owners = query(pg_dsn, "SELECT lease_owner FROM spool_deliveries ORDER BY seq")
    assert owners == [("a",), ("b",)]


async def test_limits_count_every_instances_records(instance: Opener) -> None:
    a = await instance("a", max_entries=3)
    b = await instance("b", max_entries=3)
    await a.put([rec(text="1"), rec(text="2")])

    with pytest.raises(SpoolFull, match="persistent_queue_entries"):
        await b.put([rec(text="3"), rec(text="4")])

    await b.put([rec(text="3")])
    assert len(await a.lease("mail", 10, 30)) == 3


async def test_a_nack_on_one_instance_wakes_the_others_when_the_retry_is_due(
    instance: Opener,
) -> None:
    a, b = await instance("a"), await instance("b")
    await a.put([rec(text="retry me")])
    (lease,) = await a.lease("mail", 10, 30)
    consuming = asyncio.create_task(consume(b))  # b sleeps: a's lease runs for 30 s
    await asyncio.sleep(0.2)
    assert not consuming.done()

    await a.nack("mail", [lease.record.id], error="421", retry_in_s=0.3)

    # b's consumer gets it well before a's 30 s lease would have run out.
    assert texts(await asyncio.wait_for(consuming, 10)) == ["retry me"]


async def test_history_shows_the_records_of_every_instance(instance: Opener) -> None:
    a = await instance("a", stats_interval_s=0.1)
    b = await instance("b")
    await b.put([rec(text="via b")])
    await a.put([rec(text="via a")])

    await a.refresh_stats()

    assert [r.text for r in a.history(10)] == ["via a", "via b"]


async def test_two_instances_starting_at_once_migrate_once(pg_dsn: str) -> None:
    spools = [PostgresSpool(pg_dsn, ["mail"], instance=name) for name in "abcd"]
    try:
        await asyncio.gather(*(s.start() for s in spools))
    finally:
        await asyncio.gather(*(s.close() for s in spools))

    versions = query(pg_dsn, "SELECT version FROM schema_version ORDER BY version")
    assert versions == [(v,) for v in range(1, LATEST + 1)]


async def test_a_database_migrated_by_a_newer_notifier_is_refused(pg_dsn: str) -> None:
    spool = PostgresSpool(pg_dsn, ["mail"], instance="a")
    await spool.start()
    await spool.close()
    query(pg_dsn, f"INSERT INTO schema_version (version) VALUES ({LATEST + 1}) RETURNING 1")

    with pytest.raises(SpoolError, match=f"version {LATEST + 1} is newer"):
        await PostgresSpool(pg_dsn, ["mail"], instance="a").start()


async def test_an_unreachable_database_is_one_line_naming_the_address_not_the_password() -> None:
    port = free_port()  # nothing listens here
    spool = PostgresSpool(
        f"postgresql://notifier:hunter2-secret@127.0.0.1:{port}/alarms",
        ["mail"],
        connect_timeout_s=2,
    )

    with pytest.raises(SpoolError) as refused:
        await spool.start()

    message = str(refused.value)
    assert f"127.0.0.1:{port}/alarms" in message
    assert "hunter2" not in message
    assert "\n" not in message


async def test_a_wrong_password_is_refused_without_showing_it(pg_server: PgServer) -> None:
    dsn = pg_server.dsn().replace(pg_server.password, "wrong-and-secret")

    with pytest.raises(SpoolError, match="password authentication failed") as refused:
        await PostgresSpool(dsn, ["mail"], connect_timeout_s=5).start()

    assert "wrong-and-secret" not in str(refused.value)


async def test_consumers_still_wake_after_the_notification_connection_is_cut(
    instance: Opener, pg_dsn: str
) -> None:
    a = await instance("a")
    b = await instance("b", poll_interval_s=0.2)
    assert b.listening
    query(
        pg_dsn,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE query ILIKE 'LISTEN %' AND datname = current_database()",
    )
    assert await b.lease("mail", 10, 30) == []

    waiting = asyncio.create_task(b.wait(60, "mail"))
    await a.put([rec(text="while b reconnects")])
    await asyncio.wait_for(waiting, 10)
    assert texts(await b.lease("mail", 10, 30)) == ["while b reconnects"]

    for _ in range(100):  # and b listens again by itself
        if b.listening:
            break
        await asyncio.sleep(0.1)
    assert b.listening


def test_a_wake_payload_round_trips() -> None:
    for wake in (Wake("abc123", "route:ops two"), Wake("abc123"), Wake("")):
        assert Wake.parse(wake.payload()) == wake


async def test_puts_and_leases_work_at_once_after_the_servers_connections_were_cut(
    instance: Opener, pg_dsn: str
) -> None:
    a = await instance("a")
    await a.put([rec(text="before")])
    await a.lease("mail", 1, 30)  # the pool's connections are open and idle
    # What a database restart or a failover looks like to a connection pool.
    query(
        pg_dsn,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )

    await a.put([rec(text="after")])  # not refused: a broken connection is replaced first

    assert texts(await a.lease("mail", 10, 30)) == ["after"]


async def test_a_put_while_the_server_is_down_is_refused_in_seconds_and_works_once_it_is_back() -> (
    None
):
    """The first put after the server went away finds the pool's connections dead and waits
    for a new one: a few seconds, then "retry later" (the connect timeout, 10 s, is as long
    as many senders wait for an answer). Once the server is back, puts work again."""
    for server in start_server():
        async with closing_all() as start:
            spool = await start(PostgresSpool(server.dsn(), ["mail"], instance="a"))
            await spool.put([rec(text="before")])
            await spool.lease("mail", 1, 30)  # the pool's connections are open and idle
            stop_server(server)
            began = time.monotonic()
            with pytest.raises(SpoolFull, match=r"127\.0\.0\.1"):
                await spool.put([rec(text="during")])
            refused_after = time.monotonic() - began
            start_server_again(server)
            async with asyncio.timeout(30):
                while True:
                    try:
                        await spool.put([rec(text="after")])
                        break
                    except SpoolFull:
                        await asyncio.sleep(0.2)
            assert texts(await spool.lease("mail", 10, 30)) == ["after"]
        assert refused_after < 8.0, f"the put waited {refused_after:.1f} s"
