"""What `check-config` says about the database: can it be reached, and which schema it has.

The probe only reads (it never creates or migrates), with a short connect timeout, so that
`check-config` in a unit's ExecStartPre answers quickly when the server is down.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import psycopg

from notifier.spool.base import SpoolError
from notifier.spool.pg import schema
from notifier.spool.pg.conninfo import describe
from notifier.spool.pg.pool import connect, database_error

# Seconds: libpq's connect_timeout is whole seconds, and a statement gets the same bound.
PROBE_TIMEOUT_S = 5


@dataclass(frozen=True)
class DatabaseReport:
    """The outcome of a probe; `problem` is '' when `run` could start on this database."""

    where: str  # host:port/dbname, never the password
    version: int | None = None  # None: no schema yet (or not reached)
    problem: str = ""

    def line(self) -> str:
        """The `# database:` line for a reachable database this notifier can use."""
        if self.version is None:
            state = "no schema yet: schema will be created at start"
        else:
            state = f"schema version {self.version}"
            if self.version < schema.LATEST:
                state += ", migrated at start"
        return f"reachable at {self.where}, {state} (this notifier: {schema.LATEST})"


def report(where: str, version: int | None) -> DatabaseReport:
    """The verdict on a reachable database at schema `version`; pure."""
    problem = schema.version_problem(version or 0)
    if problem:
        problem = f"PostgreSQL at {where}: {problem}"
    return DatabaseReport(where, version, problem)


async def probe(dsn: str, timeout_s: float = PROBE_TIMEOUT_S) -> DatabaseReport:
    """Connect to `dsn` and read its schema version; never raises for database trouble."""
    where = describe(dsn)
    try:
        conn = await connect(dsn, timeout_s)
    except SpoolError as e:
        return DatabaseReport(where, problem=str(e))
    try:
        async with asyncio.timeout(timeout_s):
            version = await schema.read_version(conn)
    except TimeoutError:
        return DatabaseReport(
            where, problem=f"PostgreSQL at {where} did not answer within {timeout_s:g} s"
        )
    except psycopg.Error as e:  # e.g. no permission to read schema_version
        return DatabaseReport(where, problem=str(database_error(e, dsn, "reading the schema")))
    finally:
        await conn.close()
    return report(where, version)


def probe_now(dsn: str) -> DatabaseReport:
    """`probe` for the synchronous command line."""
    return asyncio.run(probe(dsn))
