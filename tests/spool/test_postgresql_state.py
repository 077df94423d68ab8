"""The PostgreSQL state store beyond the contract: one pool per process, the tables from the
spool's migrations, and alarm state held while the database cannot be reached."""

from __future__ import annotations

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from notifier.spool import SpoolError
from notifier.spool.pg import PostgresSpool
from notifier.spool.pg.state import PostgresStateStore
from notifier.spool.state import AlarmState
from tests.conftest import free_port
from tests.pg import PgServer
from tests.spool.helpers import rec


def active(code: str) -> AlarmState:
    return AlarmState("gw01", code, "RELAY/RECH", True, 1000.0, 1000.0, 1, 1000.0)


async def test_the_state_store_shares_the_spools_pool_and_leaves_it_open(pg_dsn: str) -> None:
    spool = PostgresSpool(pg_dsn, ["mail"], instance="a")
    await spool.start()
    try:
        store = PostgresStateStore(pg_dsn, pool=spool.pool)
        await store.start()
        await store.save_alarms("route:ops", [active("0x1")])
        assert list(await store.load_alarms("route:ops")) == [active("0x1").key]
        await store.close()

        await spool.put([rec(text="still open")])  # the spool's pool outlived the store
        assert [lease.record.text for lease in await spool.lease("mail", 10, 30)] == ["still open"]
    finally:
        await spool.close()


async def test_alarm_state_is_held_while_the_database_refuses_connections_then_written(
    pg_server: PgServer, pg_dsn: str
) -> None:
    dbname = str(conninfo_to_dict(pg_dsn)["dbname"])
    store = PostgresStateStore(pg_dsn, connect_timeout_s=2)
    await store.start()
    try:
        with psycopg.connect(pg_server.dsn(), autocommit=True) as admin:
            admin.execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS false')
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (dbname,),
            )
            await store.save_alarms("route:ops", [active("0x1"), active("0x2")])
            assert store.unsaved == 2
            admin.execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS true')
        await store.save_alarms("route:ops", [])  # the worker's periodic sweep
        assert store.unsaved == 0
    finally:
        await store.close()

    reopened = PostgresStateStore(pg_dsn)
    await reopened.start()
    saved = await reopened.load_alarms("route:ops")
    await reopened.close()
    assert sorted(key[1] for key in saved) == ["0x1", "0x2"]


async def test_an_unreachable_database_is_one_line_naming_the_address_not_the_password() -> None:
    port = free_port()  # nothing listens here
    store = PostgresStateStore(
        f"postgresql://notifier:hunter2-secret@127.0.0.1:{port}/alarms", connect_timeout_s=2
    )

    with pytest.raises(SpoolError) as refused:
        await store.start()

    message = str(refused.value)
    assert f"127.0.0.1:{port}/alarms" in message
    assert "hunter2" not in message and "\n" not in message
