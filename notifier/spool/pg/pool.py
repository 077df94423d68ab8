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

from notifier.spool.base import SpoolError
from notifier.spool.pg.conninfo import connect_error, describe, scrub


class Unavailable(SpoolError):
    """The database cannot be reached or cannot take writes now; trying later may succeed."""


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
    pool: AsyncConnectionPool = AsyncConnectionPool(
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
