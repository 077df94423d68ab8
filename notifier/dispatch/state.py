"""Alarm state, persisted: which alarms are active per route, survives restarts.

The table is bounded per route (`max_alarm_states`) and kept in memory by the route workers;
changes are written through in one transaction after the mail that reports them has been
accepted. When the disk is full they are held here and written with the next save that finds
room: the state in memory is what decides meanwhile.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path

from notifier.log import RateLimiter, get_logger
from notifier.spool.diskspace import is_disk_full
from notifier.spool.state import AlarmState, Key

log = get_logger("notifier.dispatch")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS alarms (
    route TEXT NOT NULL, device TEXT NOT NULL, code TEXT NOT NULL, source TEXT NOT NULL,
    active INTEGER NOT NULL, first_set REAL NOT NULL, last_seen REAL NOT NULL,
    count INTEGER NOT NULL, last_notified REAL NOT NULL, cleared_at REAL,
    PRIMARY KEY (route, device, code, source)
)
"""

Row = tuple[object, ...]
_Unsaved = dict[tuple[str, Key], Row | None]  # (route, key) -> row to write, None: delete


class AlarmStore:
    """Alarm states of every route in `data_dir/alarms.sqlite`."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(_SCHEMA)
        self._lock = asyncio.Lock()
        self._unsaved: _Unsaved = {}
        self._log_limit = RateLimiter(burst=1, period_s=60.0)

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

    @property
    def unsaved(self) -> int:
        """Changes held in memory because the disk was full."""
        return len(self._unsaved)

    async def save(
        self, route: str, changed: Iterable[AlarmState], forget: Collection[Key] = ()
    ) -> None:
        """Write `changed` and delete the states of `forget`, in one transaction.

        When the disk is full the changes are held and written by a later save (call it with
        nothing to save now and then, see `RouteWorker`); other storage errors raise.
        """
        for s in changed:
            self._unsaved[(route, s.key)] = _row(route, s)
        for key in forget:
            self._unsaved[(route, key)] = None
        if not self._unsaved:
            return
        async with self._lock:
            writing = dict(self._unsaved)
            try:
                await asyncio.to_thread(self._write, writing)
            except sqlite3.Error as e:
                if not is_disk_full(e):
                    raise
                allowed, suppressed = self._log_limit.allow("full")
                if allowed:
                    log.warning(
                        "disk full under data_dir: alarm state held in memory, "
                        "written when space returns",
                        path=str(self._path),
                        held=len(self._unsaved),
                        suppressed=suppressed,
                        hint="free space under data_dir; mails go on meanwhile",
                    )
                return
        for k, row in writing.items():
            if self._unsaved.get(k) is row:  # not changed again while it was written
                del self._unsaved[k]

    def _write(self, unsaved: Mapping[tuple[str, Key], Row | None]) -> None:
        rows = [row for row in unsaved.values() if row is not None]
        gone = [(route, *key) for (route, key), row in unsaved.items() if row is None]
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR REPLACE INTO alarms VALUES (?,?,?,?,?,?,?,?,?,?)", rows)
            self._db.executemany(
                "DELETE FROM alarms WHERE route = ? AND device = ? AND code = ? AND source = ?",
                gone,
            )

    async def close(self) -> None:
        """Close after any write in flight (a worker cancelled at shutdown may have left one)."""
        if self._unsaved:
            await self.save("", ())
        if self._unsaved:
            log.error(
                "alarm state not written: the disk under data_dir is still full",
                path=str(self._path),
                lost=len(self._unsaved),
                hint="after the restart, clears of these alarms may mail as clear_unknown",
            )
        async with self._lock:
            await asyncio.to_thread(self._db.close)


def _row(route: str, s: AlarmState) -> Row:
    return (
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
