"""Connections to the shared database: one pool per process, errors a person can act on.

The spool opens the pool; the state store (and whatever else a process keeps in the database)
borrows it, so an instance holds a handful of connections, not one set per component.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool
from psycopg_pool.base import AttemptWithBackoff

from notifier.spool.base import SpoolError
from notifier.spool.pg.conninfo import connect_error, describe, scrub


class Unavailable(SpoolError):
    """The database cannot be reached or cannot take writes now; trying later may succeed."""


# psycopg_pool doubles the wait between reconnect attempts without a bound (1, 2, 4 ... s):
# after a 30 s outage its next attempt can come 30 s after the server is back, and every
# sender hears 503 all that while. A few seconds between attempts is cheap for one server.
MAX_RECONNECT_DELAY_S = 2.0


class _CappedBackoff(AttemptWithBackoff):
    def update_delay(self, now: float) -> None:
        super().update_delay(now)
        self.delay = min(self.delay, MAX_RECONNECT_DELAY_S)


class _Pool(AsyncConnectionPool):
    """A pool that retries a lost server every `MAX_RECONNECT_DELAY_S` at most."""

    async def _add_connection(
        self, attempt: AttemptWithBackoff | None, growing: bool = False
    ) -> None:
        if attempt is None:
            attempt = _CappedBackoff(timeout=self.reconnect_timeout)
        await super()._add_connection(attempt, growing)


async def connect(dsn: str, timeout_s: float) -> psycopg.AsyncConnection[Any]:
    """One autocommit connection (for migrating, listening); `SpoolError` when unreachable."""
    try:
        return await psycopg.AsyncConnection.connect(
            dsn, autocommit=True, connect_timeout=max(1, int(timeout_s))
        )
    except psycopg.Error as e:
        raise connect_error(dsn, e) from None


async def open_pool(dsn: str, name: str, size: int, timeout_s: float) -> AsyncConnectionPool:
    """An open pool of autocommit connections; `SpoolError` when the database is unreachable."""
    pool: AsyncConnectionPool = _Pool(
        dsn,
        min_size=1,
        max_size=size,
        kwargs={"autocommit": True},
        # An empty query on each checkout: after a restart or failover of the server, the
        # first put gets a new connection instead of a dead one (and the sender no 503).
        check=AsyncConnectionPool.check_connection,
        open=False,
        name=name,
        timeout=timeout_s,
    )
    try:
        await pool.open(wait=True, timeout=timeout_s)
    except psycopg.Error as e:
        await pool.close()
        raise connect_error(dsn, e) from None
    return pool


@contextlib.asynccontextmanager
async def transaction(
    pool: AsyncConnectionPool, dsn: str, what: str, wait_s: float | None = None
) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """A pooled connection inside a transaction; database trouble becomes `SpoolError`
    (naming host:port/dbname, never the password). `wait_s`: how long to wait for a
    connection (None: the pool's timeout); `Unavailable` after it."""
    try:
        async with pool.connection(timeout=wait_s) as conn, conn.transaction():
            yield conn
    except psycopg.Error as e:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            # A cancelled query can end in a driver error (the rollback after it fails):
            # the caller was cancelled, and must see that, not a storage failure.
            raise asyncio.CancelledError from e
        raise database_error(e, dsn, what) from None


def database_error(e: psycopg.Error, dsn: str, what: str) -> SpoolError:
    """The one line for a failed statement, naming host:port/dbname, never the password."""
    # OperationalError: the connection or the server (down, full, out of connections).
    error = Unavailable if isinstance(e, psycopg.OperationalError) else SpoolError
    return error(
        f"{what} failed on PostgreSQL at {describe(dsn)} "
        f"({scrub(str(e), dsn)}): check the database server"
    )
