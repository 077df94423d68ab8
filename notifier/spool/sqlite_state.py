"""The shared state on one box: `data_dir/alarms.sqlite` (WAL, 0600 like everything there).

Alarm states per route, silences and acknowledgements, behind `StateStore`. A file written by
an older notifier (alarms without severity, Message-ID, silence) gains the new columns at open,
by ALTER TABLE: its alarm states are kept. One connection, used from a worker thread, one
statement at a time.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import TypeVar

from notifier.spool.base import SpoolError
from notifier.spool.diskspace import is_disk_full
from notifier.spool.held_alarms import HeldAlarms
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

STATE_FILE = "alarms.sqlite"

# The alarms table as the first notifier that kept alarm state created it...
_BASE_SCHEMA = """
CREATE TABLE IF NOT EXISTS alarms (
    route TEXT NOT NULL, device TEXT NOT NULL, code TEXT NOT NULL, source TEXT NOT NULL,
    active INTEGER NOT NULL, first_set REAL NOT NULL, last_seen REAL NOT NULL,
    count INTEGER NOT NULL, last_notified REAL NOT NULL, cleared_at REAL,
    PRIMARY KEY (route, device, code, source)
);
CREATE TABLE IF NOT EXISTS silences (
    id TEXT PRIMARY KEY, matchers TEXT NOT NULL, starts_at REAL NOT NULL, ends_at REAL NOT NULL,
    comment TEXT NOT NULL, created_by TEXT NOT NULL, created_at REAL NOT NULL, expired_at REAL
);
CREATE TABLE IF NOT EXISTS acks (
    device TEXT NOT NULL, code TEXT NOT NULL, source TEXT NOT NULL,
    by TEXT NOT NULL, comment TEXT NOT NULL, at REAL NOT NULL,
    PRIMARY KEY (device, code, source)
);
"""
# ...and the columns added since, in order: a new file and an old one end up the same.
_ADDED_ALARM_COLUMNS = (
    ("severity", "TEXT"),  # Severity value; NULL: not known (states saved before it was kept)
    ("message_id", "TEXT NOT NULL DEFAULT ''"),
    ("silenced", "TEXT NOT NULL DEFAULT ''"),
)

_ALARMS = ", ".join(ALARM_COLUMNS)
_SILENCES = ", ".join(SILENCE_COLUMNS)
_NOT_ENDED = "ends_at > ? AND (expired_at IS NULL OR expired_at > ?)"

T = TypeVar("T")


def state_path(data_dir: str | Path) -> Path:
    return Path(data_dir) / STATE_FILE


def migrate(db: sqlite3.Connection) -> list[str]:
    """Create the tables, or add the columns an older file lacks; returns the columns added."""
    db.executescript(_BASE_SCHEMA)
    have = {str(row[1]) for row in db.execute("PRAGMA table_info(alarms)")}
    added = []
    for name, decl in _ADDED_ALARM_COLUMNS:
        if name not in have:
            db.execute(f"ALTER TABLE alarms ADD COLUMN {name} {decl}")
            added.append(name)
    return added


class SqliteStateStore(HeldAlarms):
    """`StateStore` in one SQLite file; see the module docstring."""

    hold_hint = "free space under data_dir; mails go on meanwhile"

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self.path = Path(path)
        self.where = str(self.path)
        self._db: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()  # one statement at a time on the one connection

    async def start(self) -> None:
        """Open the file (created 0600 under the service's umask), in WAL mode, migrated.

        Raises `SpoolError` naming the file when it cannot be opened or is not an alarm store."""
        if self._db is not None:
            return
        try:
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        except sqlite3.Error as e:
            raise SpoolError(f"cannot open the alarm state {self.path}: {e}") from None
        try:
            db.execute("PRAGMA busy_timeout = 10000")
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            migrate(db)
        except sqlite3.Error as e:
            db.close()
            raise SpoolError(
                f"cannot open the alarm state {self.path}: {e}; move the file aside to start "
                "without the remembered alarms"
            ) from None
        self._db = db

    async def close(self) -> None:
        """Write what is held (a worker cancelled at shutdown may have left some), then close."""
        if self._db is None:
            return
        await self._write_held()
        async with self._lock:
            db, self._db = self._db, None
            await asyncio.to_thread(db.close)

    async def _run(
        self, what: str, work: Callable[[sqlite3.Connection], T], *, holdable: bool = False
    ) -> T:
        """`work` on the connection in a worker thread; SQLite errors become `SpoolError`.
        `holdable`: a full disk raises the `sqlite3.Error` itself, for `save_alarms` to hold."""
        async with self._lock:
            db = self._db
            if db is None:
                raise SpoolError(f"alarm state {self.path} is not open")
            try:
                return await asyncio.to_thread(work, db)
            except sqlite3.Error as e:
                if holdable and is_disk_full(e):
                    raise
                raise SpoolError(f"alarm state {self.path}: {what} failed: {e}") from None

    async def _write_alarms(self, unsaved: Mapping[tuple[str, Key], Row | None]) -> None:
        rows = [row for row in unsaved.values() if row is not None]
        gone = [(route, *key) for (route, key), row in unsaved.items() if row is None]

        def write(db: sqlite3.Connection) -> None:
            with db:
                db.execute("BEGIN")
                db.executemany(
                    f"INSERT OR REPLACE INTO alarms (route, {_ALARMS})"
                    f" VALUES ({', '.join('?' * (len(ALARM_COLUMNS) + 1))})",
                    rows,
                )
                db.executemany(
                    "DELETE FROM alarms WHERE route = ? AND device = ? AND code = ? AND source = ?",
                    gone,
                )

        await self._run("saving alarm states", write, holdable=True)

    def _holdable(self, error: BaseException) -> str:
        return "disk full under data_dir" if is_disk_full(error) else ""

    async def load_alarms(self, route: str) -> dict[Key, AlarmState]:
        rows = await self._run(
            "reading alarm states",
            lambda db: db.execute(
                f"SELECT {_ALARMS} FROM alarms WHERE route = ?", (route,)
            ).fetchall(),
        )
        states = (alarm_of_row(row) for row in rows)
        return {s.key: s for s in states}

    async def add_silence(self, silence: Silence) -> None:
        row = silence_row(silence)
        await self._run(
            "adding a silence",
            lambda db: db.execute(
                f"INSERT INTO silences ({_SILENCES}) VALUES (?,?,?,?,?,?,?,?)", row
            ),
        )

    async def silences(self, ended_after: float | None = None) -> list[Silence]:
        where, args = (
            ("", ()) if ended_after is None else (f" WHERE {_NOT_ENDED}", (ended_after,) * 2)
        )
        rows = await self._run(
            "reading silences",
            lambda db: db.execute(
                f"SELECT {_SILENCES} FROM silences{where} ORDER BY starts_at, id", args
            ).fetchall(),
        )
        return [silence_of_row(row) for row in rows]

    async def expire_silence(self, silence_id: str, at: float) -> bool:
        cur = await self._run(
            "expiring a silence",
            lambda db: db.execute(
                f"UPDATE silences SET expired_at = ? WHERE id = ? AND {_NOT_ENDED}",
                (at, silence_id, at, at),
            ),
        )
        return cur.rowcount > 0

    async def ack(self, ack: Ack) -> None:
        row = ack_row(ack)
        await self._run(
            "storing an acknowledgement",
            lambda db: db.execute(
                f"INSERT OR REPLACE INTO acks ({', '.join(ACK_COLUMNS)}) VALUES (?,?,?,?,?,?)", row
            ),
        )

    async def acks(self) -> dict[Key, Ack]:
        rows = await self._run(
            "reading acknowledgements",
            lambda db: db.execute(f"SELECT {', '.join(ACK_COLUMNS)} FROM acks").fetchall(),
        )
        found = (ack_of_row(row) for row in rows)
        return {a.key: a for a in found}

    async def forget_acks(self, keys: Collection[Key]) -> None:
        gone = list(keys)
        await self._run(
            "forgetting acknowledgements",
            lambda db: db.executemany(
                "DELETE FROM acks WHERE device = ? AND code = ? AND source = ?", gone
            ),
        )
