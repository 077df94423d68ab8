"""The alarm store on a full disk: state changes are held in memory, written when space returns."""

from __future__ import annotations

from pathlib import Path

from notifier.dispatch.state import AlarmStore
from notifier.spool.state import AlarmState
from tests.smallfs import fill, small_filesystem


def active(code: str) -> AlarmState:
    return AlarmState("gw01", code, "RELAY/RECH", True, 1000.0, 1000.0, 1, 1000.0)


async def test_alarm_state_saved_on_a_full_disk_is_written_once_space_returns(
    tmp_path: Path,
) -> None:
    with small_filesystem(tmp_path / "fs") as fs:
        store = AlarmStore(fs / "alarms.sqlite")
        try:
            await store.save("route:ops", [active("0x00000001")])
            filler = fill(fs)
            changes = [active(f"0x{n:08x}") for n in range(2, 2000)]
            await store.save("route:ops", changes, forget=[("gw01", "0x00000001", "RELAY/RECH")])
            assert store.unsaved == len(changes) + 1
            filler.unlink()
            await store.save("route:ops", [])  # what the worker's periodic sweep does
            assert store.unsaved == 0
        finally:
            await store.close()
        reopened = AlarmStore(fs / "alarms.sqlite")
        saved = reopened.load("route:ops")
        await reopened.close()
    assert sorted(key[1] for key in saved) == sorted(s.code for s in changes)
