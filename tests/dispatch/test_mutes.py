"""The silences and acks a process's consumers share: reads that overlap never leave old data
in force, and a change made here is read at the next look."""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Iterable

from notifier.dispatch.mutes import Mutes
from notifier.spool.state import Ack, AlarmState, Key, Silence


class SlowStore:
    """A StateStore whose silence reads each wait for the test to let them finish."""

    def __init__(self) -> None:
        self.stored: list[Silence] = []
        self.gates: list[asyncio.Event] = []

    async def silences(self, ended_after: float | None = None) -> list[Silence]:
        seen = list(self.stored)  # what the database had when the read ran
        gate = asyncio.Event()
        self.gates.append(gate)
        await gate.wait()
        return seen

    async def acks(self) -> dict[Key, Ack]:
        return {}

    async def start(self) -> None: ...
    async def close(self) -> None: ...
    async def load_alarms(self, route: str) -> dict[Key, AlarmState]:
        return {}

    async def save_alarms(
        self, route: str, changed: Iterable[AlarmState], forget: Collection[Key] = ()
    ) -> None: ...

    @property
    def unsaved(self) -> int:
        return 0

    async def add_silence(self, silence: Silence) -> None:
        self.stored.append(silence)

    async def expire_silence(self, silence_id: str, at: float) -> bool:
        return False

    async def ack(self, ack: Ack) -> None: ...
    async def forget_acks(self, keys: Collection[Key]) -> None: ...


async def test_a_read_under_way_when_a_silence_is_added_does_not_hide_it() -> None:
    store = SlowStore()
    mutes = Mutes(store, clock=lambda: 1000.0)
    first = asyncio.create_task(mutes.refresh())  # a route worker reads...
    await asyncio.sleep(0)
    silence = Silence("s1", {"devices": ("gw01",)}, 0.0, 5000.0, "update", "alice", 0.0)
    await store.add_silence(silence)  # ...while an operator adds a silence here
    mutes.stale()
    second = asyncio.create_task(mutes.refresh())  # a forward wants the data now
    await asyncio.sleep(0)
    store.gates[0].set()
    await first
    assert mutes.due(), "the read under way began before the change"
    while len(store.gates) < 2:
        await asyncio.sleep(0)
    store.gates[1].set()
    await second
    assert [s.silence.id for s in mutes.silences] == ["s1"]
    assert not mutes.due()
