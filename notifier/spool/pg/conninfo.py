"""What to call a database in messages, without its password (a DSN is a secret)."""

from __future__ import annotations

import psycopg
from psycopg.conninfo import conninfo_to_dict

from notifier.spool.base import SpoolError


def describe(dsn: str) -> str:
    """`host:port/dbname` of a DSN (libpq URI or key=value), for logs and errors."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "(unparsable dsn)"
    host = str(params.get("host") or params.get("hostaddr") or "localhost")
    if ":" in host and "," not in host:
        host = f"[{host}]"
    return f"{host}:{params.get('port') or 5432}/{params.get('dbname') or params.get('user') or ''}"


def scrub(text: str, dsn: str) -> str:
    """`text` on one line with the DSN and its password replaced, should a driver echo them."""
    try:
        password = str(conninfo_to_dict(dsn).get("password") or "")
    except psycopg.ProgrammingError:
        password = ""
    for secret in (dsn, password):
        if secret:
            text = text.replace(secret, "***")
    return " ".join(text.split())


def connect_error(dsn: str, error: BaseException) -> SpoolError:
    """The one line a user sees when the database cannot be reached."""
    return SpoolError(
        f"cannot connect to PostgreSQL at {describe(dsn)}: {scrub(str(error), dsn)}; "
        "check [spool] dsn and that the server is running and reachable"
    )
