"""`notifier spool migrate --to postgresql`: move a one-box install into the shared database.

Run it with the service stopped, after setting `[spool] backend = "postgresql"` and `dsn`: it
takes the SQLite spool's lock (a running notifier on this data_dir makes it stop with one
line), copies what the files under data_dir hold, and notes in `spool.sqlite3` that it was
moved, so that a second run cannot move (and mail) the same records twice. The files are left
in place otherwise, as a backup.

- Queued records go to each consumer that is still owed them (a route that already mailed a
  record does not mail it again). Their retry count starts anew. Dead letters stay behind: the
  summary says how many (`notifier spool retry --dead` under the SQLite backend first, to move
  them too).
- Alarm states of the configured routes, silences and acknowledgements go through the
  `StateStore` of each backend.
- OAuth2 tokens: moved by the `move_tokens` the caller passes (the spool knows nothing of
  OAuth2), before the spool is marked as moved, so a failure there can be run again.

A run that failed half way can be run again: records are stored once by their id, alarm
states and acknowledgements are replaced, silences already there are skipped.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from notifier.config import Settings
from notifier.spool import admin
from notifier.spool.base import Overflow, SpoolError
from notifier.spool.schema import spool_path
from notifier.spool.sqlite import _lock
from notifier.spool.sqlite_state import SqliteStateStore, state_path
from notifier.spool.state import StateStore

_PUT_CHUNK = 1000


@dataclass
class Moved:
    """What a migration moved, for the summary it prints."""

    records: int = 0
    deliveries: int = 0
    dead_left: int = 0
    alarm_states: int = 0
    silences: int = 0
    acks: int = 0
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        return [
            f"records: {self.records} queued records moved ({self.deliveries} deliveries)",
            f"alarm states: {self.alarm_states}",
            f"silences: {self.silences}",
            f"acknowledgements: {self.acks}",
            *self.notes,
        ]


MoveTokens = Callable[[], Awaitable[str]]  # moves the OAuth2 tokens, says what it moved


def migrate_to_postgresql(settings: Settings, move_tokens: MoveTokens | None = None) -> Moved:
    """Move data_dir's spool and state into the configured database; see the module docstring.

    Raises `SpoolError` with a line a person can act on (wrong backend, notifier still
    running, already moved, database unreachable or full)."""
    if settings.spool.backend != "postgresql":
        raise SpoolError(
            'spool migrate --to postgresql: set [spool] backend = "postgresql" and dsn (or '
            "dsn_file) in the config first; the SQLite files under data_dir are read from "
            "there"
        )
    path = spool_path(settings.data_dir)
    lock = _lock(path) if path.exists() else None
    try:
        return asyncio.run(_migrate(settings, move_tokens))
    finally:
        if lock is not None:
            os.close(lock)


async def _migrate(settings: Settings, move_tokens: MoveTokens | None) -> Moved:
    from notifier.spool.pg import PostgresSpool
    from notifier.spool.pg.state import PostgresStateStore

    moved = Moved()
    dsn = settings.spool.dsn.get_secret_value()
    has_spool = spool_path(settings.data_dir).exists()
    if has_spool:
        queued = admin.queued(settings.data_dir)
        if queued.migrated_at:
            raise SpoolError(
                f"{spool_path(settings.data_dir)} was moved to PostgreSQL already "
                f"({queued.migrated_at} UTC): nothing to do; start notifier"
            )
        moved.dead_left = queued.dead
        for consumers, records in queued.by_consumers.items():
            spool = PostgresSpool(
                dsn,
                consumers,
                max_entries=settings.spool.persistent_queue_entries,
                max_disk_bytes=settings.spool.max_disk_bytes,
                overflow=Overflow.REJECT,
                history_entries=settings.spool.history_entries,
            )
            await spool.start()
            try:
                for i in range(0, len(records), _PUT_CHUNK):
                    await spool.put(records[i : i + _PUT_CHUNK])
            finally:
                await spool.close()
            moved.records += len(records)
            moved.deliveries += len(records) * len(consumers)
    else:
        moved.notes.append(f"no spool at {spool_path(settings.data_dir)}: no records to move")
    source_path = state_path(settings.data_dir)
    if source_path.exists():
        routes = [f"route:{r.name}" for r in settings.effective_routes()]
        source = SqliteStateStore(source_path)
        target = PostgresStateStore(dsn)
        await source.start()
        try:
            await target.start()
            try:
                await _move_state(source, target, routes, moved)
            finally:
                await target.close()
        finally:
            await source.close()
    if moved.dead_left:
        moved.notes.append(
            f"dead letters: {moved.dead_left} deliveries stay in spool.sqlite3 (to move them, "
            'run `notifier spool retry --dead` with backend = "sqlite" and let them be '
            "mailed, or migrate again from a copy)"
        )
    if move_tokens is not None:
        moved.notes.append(await move_tokens())
    if has_spool:
        admin.mark_migrated(settings.data_dir, time.time())
    return moved


async def _move_state(
    source: StateStore, target: StateStore, routes: list[str], moved: Moved
) -> None:
    for route in routes:
        states = await source.load_alarms(route)
        await target.save_alarms(route, states.values())
        if target.unsaved:
            raise SpoolError("the database stopped taking writes while alarm states were moved")
        moved.alarm_states += len(states)
    there = {s.id for s in await target.silences()}
    for silence in await source.silences():
        if silence.id not in there:
            await target.add_silence(silence)
            moved.silences += 1
    for ack in (await source.acks()).values():
        await target.ack(ack)
        moved.acks += 1
