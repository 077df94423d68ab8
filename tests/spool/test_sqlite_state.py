"""The SQLite state store beyond the contract: an alarms.sqlite from an older notifier, and the
full disk (state changes held in memory, written when space returns)."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from notifier.records import Severity
from notifier.spool import SpoolError
from notifier.spool.sqlite_state import SqliteStateStore
from notifier.spool.state import AlarmState, Key, Silence
from tests.smallfs import fill, small_filesystem

# The alarms table exactly as notifier created it before severity, Message-ID and silences.
OLD_SCHEMA = """
CREATE TABLE IF NOT EXISTS alarms (
    route TEXT NOT NULL, device TEXT NOT NULL, code TEXT NOT NULL, source TEXT NOT NULL,
    active INTEGER NOT NULL, first_set REAL NOT NULL, last_seen REAL NOT NULL,
    count INTEGER NOT NULL, last_notified REAL NOT NULL, cleared_at REAL,
    PRIMARY KEY (route, device, code, source)
)
"""


@contextlib.asynccontextmanager
async def opened(path: Path) -> AsyncIterator[SqliteStateStore]:
    store = SqliteStateStore(path)
    await store.start()
    try:
        yield store
    finally:
        await store.close()


async def stored(path: Path) -> dict[Key, AlarmState]:
    """What a restarted service loads for route:ops."""
    async with opened(path) as store:
        return await store.load_alarms("route:ops")


def active(code: str) -> AlarmState:
    return AlarmState("gw01", code, "RELAY/RECH", True, 1000.0, 1000.0, 1, 1000.0)


async def test_an_alarms_file_of_the_old_schema_keeps_its_states_and_takes_the_new_fields(
    tmp_path: Path,
) -> None:
    path = tmp_path / "alarms.sqlite"
    with sqlite3.connect(path) as old:
        old.execute(OLD_SCHEMA)
        old.execute(
            "INSERT INTO alarms VALUES (?,?,?,?,?,?,?,?,?,?)",
            ("route:ops", "gw01", "0x1", "RELAY/RECH", 1, 1000.0, 1060.0, 3, 1001.0, None),
        )
    old.close()

    async with opened(path) as store:
        (state,) = (await store.load_alarms("route:ops")).values()
        assert state == AlarmState("gw01", "0x1", "RELAY/RECH", True, 1000.0, 1060.0, 3, 1001.0)
        threaded = AlarmState(
            "gw01", "0x2", "RELAY/RECH", True, 1.0, 1.0, 1, 1.0,
            severity=Severity.CRITICAL, message_id="<a@b>", silenced="s1",
        )  # fmt: skip
        await store.save_alarms("route:ops", [threaded])

    saved = await stored(path)
    assert saved[threaded.key] == threaded and saved[state.key] == state


async def test_alarm_state_saved_on_a_full_disk_is_written_once_space_returns(
    tmp_path: Path,
) -> None:
    with small_filesystem(tmp_path / "fs") as fs:
        async with opened(fs / "alarms.sqlite") as store:
            await store.save_alarms("route:ops", [active("0x00000001")])
            filler = fill(fs)
            changes = [active(f"0x{n:08x}") for n in range(2, 2000)]
            await store.save_alarms(
                "route:ops", changes, forget=[("gw01", "0x00000001", "RELAY/RECH")]
            )
            assert store.unsaved == len(changes) + 1
            filler.unlink()
            await store.save_alarms("route:ops", [])  # what the worker's periodic sweep does
            assert store.unsaved == 0
        saved = await stored(fs / "alarms.sqlite")
    assert sorted(key[1] for key in saved) == sorted(s.code for s in changes)


async def test_a_silence_added_on_a_full_disk_is_refused_with_a_spool_error(
    tmp_path: Path,
) -> None:
    with small_filesystem(tmp_path / "fs") as fs:
        async with opened(fs / "alarms.sqlite") as store:
            fill(fs)
            silence = Silence("s1", {"devices": ("gw01",)}, 0.0, 1.0, "x" * 100_000, "me", 0.0)
            with pytest.raises(SpoolError, match=r"adding a silence failed.*full"):
                await store.add_silence(silence)
