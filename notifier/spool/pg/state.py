"""The shared state on PostgreSQL: every instance on the database sees the same alarm states,
silences and acknowledgements.

The tables come from the spool's migrations (`schema.py`, version 2). In the service the store
borrows the spool's connection pool (one pool per process); alone (tests, the CLI) it opens
its own. While the database is unreachable, alarm state changes are held in memory and written
when it is back (`HeldAlarms`), as on a full disk in SQLite: mail goes on meanwhile.
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Mapping
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from notifier.spool.base import SpoolError
from notifier.spool.held_alarms import HeldAlarms
from notifier.spool.pg import schema
from notifier.spool.pg.conninfo import describe
from notifier.spool.pg.pool import Unavailable, connect, open_pool, transaction
from notifier.spool.schema import SchemaError
from notifier.spool.state import (
    ACK_COLUMNS,
    ALARM_COLUMNS,
    SILENCE_COLUMNS,
    Ack,
    AlarmState,
    Key,
    Row,
    Silence,
    ack_of_row,
    ack_row,
    alarm_of_row,
    silence_of_row,
    silence_row,
)

_ALARMS = ", ".join(ALARM_COLUMNS)
_SILENCES = ", ".join(SILENCE_COLUMNS)
_ACKS = ", ".join(ACK_COLUMNS)
_KEY = "device = %s AND code = %s AND source = %s"
_NOT_ENDED = "ends_at > %(t)s AND (expired_at IS NULL OR expired_at > %(t)s)"


def _placeholders(n: int) -> str:
    return ", ".join(["%s"] * n)


class PostgresStateStore(HeldAlarms):
    """`StateStore` in a PostgreSQL database; see the module docstring.

    `dsn` is a secret: errors name host:port/dbname only. `pool`: the spool's open pool, to
    share (this store never closes it); without it, `start` opens a pool of its own.
    """

    hold_hint = "check the database server; mails go on meanwhile"

    def __init__(
        self,
        dsn: str,
        *,
        pool: AsyncConnectionPool | None = None,
        connect_timeout_s: float = 10.0,
    ) -> None:
        super().__init__()
        self._dsn = dsn
        self.where = describe(dsn)
        self._shared = pool
        self._own: AsyncConnectionPool | None = None
        self._timeout = connect_timeout_s
        self._open = False

    async def start(self) -> None:
        """Create or migrate the tables (under the migration lock), then use the pool.

        Raises `SpoolError` naming host:port/dbname when the database cannot be reached or
        holds a schema newer than this code."""
        if self._open:
            return
        conn = await connect(self._dsn, self._timeout)
        try:
            await schema.migrate(conn)
        except SchemaError as e:
            raise SpoolError(f"PostgreSQL at {self.where}: {e}") from None
        finally:
            await conn.close()
        if self._shared is None:
            self._own = await open_pool(self._dsn, "notifier-state", 2, self._timeout)
        self._open = True

    async def close(self) -> None:
        """Write what is held, then let go of the pool (closing it only if it is our own)."""
        if not self._open:
            return
        await self._write_held()
        self._open = False
        if self._own is not None:
            await self._own.close()
            self._own = None

    def _transaction(
        self, what: str
    ) -> contextlib.AbstractAsyncContextManager[psycopg.AsyncConnection[Any]]:
        pool = self._shared or self._own
        if not self._open or pool is None:
            raise SpoolError(f"alarm state on {self.where} is not open")
        return transaction(pool, self._dsn, what)

    async def _write_alarms(self, unsaved: Mapping[tuple[str, Key], Row | None]) -> None:
        rows = [row for row in unsaved.values() if row is not None]
        gone = [(route, *key) for (route, key), row in unsaved.items() if row is None]
        updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in ALARM_COLUMNS[3:])
        async with self._transaction("saving alarm states") as conn, conn.cursor() as cur:
            if rows:
                await cur.executemany(
                    f"INSERT INTO state_alarms (route, {_ALARMS})"
                    f" VALUES ({_placeholders(len(ALARM_COLUMNS) + 1)})"
                    f" ON CONFLICT (route, device, code, source) DO UPDATE SET {updates}",
                    rows,
                )
            if gone:
                await cur.executemany(f"DELETE FROM state_alarms WHERE route = %s AND {_KEY}", gone)

    def _holdable(self, error: BaseException) -> str:
        return "PostgreSQL unreachable or full" if isinstance(error, Unavailable) else ""

    async def load_alarms(self, route: str) -> dict[Key, AlarmState]:
        async with self._transaction("reading alarm states") as conn:
            cur = await conn.execute(
                f"SELECT {_ALARMS} FROM state_alarms WHERE route = %s", (route,)
            )
            rows = await cur.fetchall()
        states = (alarm_of_row(row) for row in rows)
        return {s.key: s for s in states}

    async def add_silence(self, silence: Silence) -> None:
        async with self._transaction("adding a silence") as conn:
            await conn.execute(
                f"INSERT INTO state_silences ({_SILENCES})"
                f" VALUES ({_placeholders(len(SILENCE_COLUMNS))})",
                silence_row(silence),
            )

    async def silences(self, ended_after: float | None = None) -> list[Silence]:
        where = "" if ended_after is None else f" WHERE {_NOT_ENDED}"
        async with self._transaction("reading silences") as conn:
            cur = await conn.execute(
                f"SELECT {_SILENCES} FROM state_silences{where} ORDER BY starts_at, id",
                {"t": ended_after},
            )
            rows = await cur.fetchall()
        return [silence_of_row(row) for row in rows]

    async def expire_silence(self, silence_id: str, at: float) -> bool:
        async with self._transaction("expiring a silence") as conn:
            cur = await conn.execute(
                f"UPDATE state_silences SET expired_at = %(t)s WHERE id = %(id)s AND {_NOT_ENDED}",
                {"t": at, "id": silence_id},
            )
            return bool(cur.rowcount > 0)

    async def ack(self, ack: Ack) -> None:
        updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in ACK_COLUMNS[3:])
        async with self._transaction("storing an acknowledgement") as conn:
            await conn.execute(
                f"INSERT INTO state_acks ({_ACKS}) VALUES ({_placeholders(len(ACK_COLUMNS))})"
                f" ON CONFLICT (device, code, source) DO UPDATE SET {updates}",
                ack_row(ack),
            )

    async def acks(self) -> dict[Key, Ack]:
        async with self._transaction("reading acknowledgements") as conn:
            cur = await conn.execute(f"SELECT {_ACKS} FROM state_acks")
            rows = await cur.fetchall()
        found = (ack_of_row(row) for row in rows)
        return {a.key: a for a in found}

    async def forget_acks(self, keys: Collection[Key]) -> None:
        if not keys:
            return
        async with self._transaction("forgetting acknowledgements") as conn, conn.cursor() as cur:
            await cur.executemany(f"DELETE FROM state_acks WHERE {_KEY}", list(keys))
