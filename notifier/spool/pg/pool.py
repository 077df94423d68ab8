"""The connection pool every PostgreSQL user of notifier opens (the spool, the token store)."""

from __future__ import annotations

import psycopg
from psycopg_pool import AsyncConnectionPool


async def open_pool(dsn: str, *, name: str, max_size: int, timeout_s: float) -> AsyncConnectionPool:
    """An open pool of autocommit connections to `dsn`, at least one connected. Raises
    `psycopg.Error` (the pool closed again) when the database cannot be reached within
    `timeout_s`."""
    pool: AsyncConnectionPool = AsyncConnectionPool(
        dsn,
        min_size=1,
        max_size=max_size,
        kwargs={"autocommit": True},
        # An empty query on each checkout: after a restart or failover of the server, the
        # first query gets a new connection instead of a dead one (and a sender no 503).
        check=AsyncConnectionPool.check_connection,
        open=False,
        name=name,
        timeout=timeout_s,
    )
    try:
        await pool.open(wait=True, timeout=timeout_s)
    except psycopg.Error:
        await pool.close()
        raise
    return pool
