"""The silences, maintenance windows and acknowledgements in force, as one consumer sees them.

The decisions are pure (`notifier/dispatch/control.py`); this holds their inputs: the compiled
`[[maintenance]]` windows, and the silences and acknowledgements read from the shared
`StateStore` every `REFRESH_S`, so a silence added on any instance takes effect everywhere.
Route workers and forwards (with `respect_silences`) each keep one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

from notifier.dispatch.control import (
    ActiveSilence,
    ControlError,
    Mute,
    Window,
    compile_silence,
    is_muted,
)
from notifier.log import RateLimiter, get_logger
from notifier.records import Record
from notifier.spool.state import Ack, Key, StateStore

log = get_logger("notifier.dispatch")

# How often the silences and acknowledgements are read again (seconds): a new silence or
# acknowledgement takes effect, and an alarm whose silence ended is mailed, within this.
REFRESH_S = 5.0


class Mutes:
    """What mutes records now. One per process, shared by its route workers and forwards: each
    calls `refresh()` when `due()`; `stale()` after a local change makes it due at once."""

    def __init__(
        self,
        store: StateStore,
        windows: Sequence[Window] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self.windows = list(windows)
        self.silences: list[ActiveSilence] = []
        self.acks: dict[Key, Ack] = {}
        self._clock = clock
        self._read_at = -1e18  # when the data shown was read (when that read began)
        self._changes = 0  # local changes so far
        self._seen = 0  # local changes the data shown includes
        self._reading = asyncio.Lock()  # one read at a time; the others wait and use it
        self._bad = RateLimiter(burst=1, period_s=300.0)

    @property
    def read_at(self) -> float:
        """When the silences and acknowledgements shown were read (unix seconds)."""
        return self._read_at

    def due(self) -> bool:
        return self._seen != self._changes or self._clock() - self._read_at >= REFRESH_S

    def stale(self) -> None:
        """A silence or acknowledgement changed here: read them again at the next look,
        rather than up to `REFRESH_S` later."""
        self._changes += 1

    async def refresh(self) -> None:
        """Read the silences not ended yet and the acknowledgements again, unless a read that
        another consumer finished meanwhile made that needless. A stored silence that does not
        compile (written by another version, or by hand) is logged and skipped."""
        async with self._reading:
            if not self.due():
                return
            now, changes = self._clock(), self._changes
            silences = []
            for silence in await self._store.silences(ended_after=now):
                try:
                    silences.append(compile_silence(silence))
                except ControlError as e:
                    if self._bad.allow(silence.id)[0]:
                        log.error("silence ignored", error=str(e))
            self.silences, self.acks = silences, await self._store.acks()
            self._read_at, self._seen = now, changes

    def of(self, record: Record, consumer: str, now: float) -> Mute | None:
        """The silence or window that mutes `record` for `consumer` (a route's name) now."""
        return is_muted(record, consumer, self.silences, self.windows, now)

    def on(self, now: float) -> set[str]:
        """The silence ids and window names in force now."""
        names = {s.silence.id for s in self.silences if s.end(now) is not None}
        return names | {w.name for w in self.windows if w.end(now) is not None}
