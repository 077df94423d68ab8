"""The silences, maintenance windows and acknowledgements in force, as one consumer sees them.

The decisions are pure (`notifier/dispatch/control.py`); this holds their inputs: the compiled
`[[maintenance]]` windows, and the silences and acknowledgements read from the shared
`StateStore` every `REFRESH_S`, so a silence added on any instance takes effect everywhere.
Route workers and forwards (with `respect_silences`) each keep one.
"""

from __future__ import annotations

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
    """What mutes records now; `refresh()` when `due()`."""

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
        self._read_at = -1e18
        self._bad = RateLimiter(burst=1, period_s=300.0)

    def due(self) -> bool:
        return self._clock() - self._read_at >= REFRESH_S

    async def refresh(self) -> None:
        """Read the silences not ended yet and the acknowledgements again. A stored silence
        that does not compile (written by another version, or by hand) is logged and skipped."""
        now = self._clock()
        self._read_at = now
        silences = []
        for silence in await self._store.silences(ended_after=now):
            try:
                silences.append(compile_silence(silence))
            except ControlError as e:
                if self._bad.allow(silence.id)[0]:
                    log.error("silence ignored", error=str(e))
        self.silences = silences
        self.acks = await self._store.acks()

    def of(self, record: Record, consumer: str, now: float) -> Mute | None:
        """The silence or window that mutes `record` for `consumer` (a route's name) now."""
        return is_muted(record, consumer, self.silences, self.windows, now)

    def on(self, now: float) -> set[str]:
        """The silence ids and window names in force now."""
        names = {s.silence.id for s in self.silences if s.end(now) is not None}
        return names | {w.name for w in self.windows if w.end(now) is not None}
