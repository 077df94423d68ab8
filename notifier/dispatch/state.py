"""Alarm state, persisted: which alarms are active per route, survives restarts.

The whole table is small (one row per distinct alarm) and kept in memory; changes are written
through in one transaction after the mail that reports them has been accepted.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path

from notifier.dispatch.alarms import AlarmState

Key = tuple[str, str, str]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS alarms (
    route TEXT NOT NULL, device TEXT NOT NULL, code TEXT NOT NULL, source TEXT NOT NULL,
    active INTEGER NOT NULL, first_set REAL NOT NULL, last_seen REAL NOT NULL,
    count INTEGER NOT NULL, last_notified REAL NOT NULL, cleared_at REAL,
    PRIMARY KEY (route, device, code, source)
)
"""


class AlarmStore:
    """Alarm states of every route in `data_dir/alarms.sqlite`."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(_SCHEMA)
        self._lock = asyncio.Lock()

    def load(self, route: str) -> dict[Key, AlarmState]:
        rows = self._db.execute(
            "SELECT device, code, source, active, first_set, last_seen, count, last_notified,"
            " cleared_at FROM alarms WHERE route = ?",
            (route,),
        ).fetchall()
        states = {}
        for row in rows:
            state = AlarmState(row[0], row[1], row[2], bool(row[3]), *row[4:])
            states[state.key] = state
        return states

    async def save(self, route: str, changed: Iterable[AlarmState], forget_before: float) -> None:
        """Write `changed` and forget cleared alarms last seen before `forget_before`."""
        rows = [
            (
                route,
                s.device,
                s.code,
                s.source,
                int(s.active),
                s.first_set,
                s.last_seen,
                s.count,
                s.last_notified,
                s.cleared_at,
            )
            for s in changed
        ]
        async with self._lock:
            await asyncio.to_thread(self._write, route, rows, forget_before)

    def _write(self, route: str, rows: Sequence[Sequence[object]], forget_before: float) -> None:
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR REPLACE INTO alarms VALUES (?,?,?,?,?,?,?,?,?,?)", rows)
            self._db.execute(
                "DELETE FROM alarms WHERE route = ? AND active = 0 AND last_seen < ?",
                (route, forget_before),
            )

    async def close(self) -> None:
        """Close after any write in flight (a worker cancelled at shutdown may have left one)."""
        async with self._lock:
            await asyncio.to_thread(self._db.close)
