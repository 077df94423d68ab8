"""Alarm state changes held in memory while the storage cannot take them.

Sending a mail needs no storage, so dispatch goes on when the disk under data_dir is full (or,
on PostgreSQL, while the database is unreachable): the changes a save could not write are kept
here, newest per alarm, and written by a later save. The state in the route workers' memory is
what decides meanwhile. A crash loses only these changes: after the restart the clears of
those alarms may mail as `clear_unknown`, and no record is lost.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Collection, Iterable, Mapping

from notifier.log import RateLimiter, get_logger
from notifier.spool.state import AlarmState, Key, Row, alarm_row

log = get_logger("notifier.dispatch")

# (route, key) -> the row to write, or None: delete it
Unsaved = dict[tuple[str, Key], Row | None]


class HeldAlarms(abc.ABC):
    """`save_alarms` and `unsaved` of a `StateStore`, over a backend's `_write_alarms`."""

    # For the log lines: where the state lives, and what a person does when it cannot be written.
    where = ""
    hold_hint = ""

    def __init__(self) -> None:
        self._unsaved: Unsaved = {}
        self._write_lock = asyncio.Lock()
        self._hold_log = RateLimiter(burst=1, period_s=60.0)

    @abc.abstractmethod
    async def _write_alarms(self, unsaved: Mapping[tuple[str, Key], Row | None]) -> None:
        """Write (or delete) these rows in one transaction."""

    @abc.abstractmethod
    def _holdable(self, error: BaseException) -> str:
        """Why `error` means "keep the changes and write them later" (storage full or
        unreachable); "" when it is another failure, to be raised."""

    @property
    def unsaved(self) -> int:
        """Alarm state changes held in memory because the storage could not take them."""
        return len(self._unsaved)

    async def save_alarms(
        self, route: str, changed: Iterable[AlarmState], forget: Collection[Key] = ()
    ) -> None:
        """Write `changed` and delete the states of `forget`, in one transaction.

        When the storage is full or unreachable the changes are held and written by a later
        save (call it with nothing to save now and then, as the route workers do); other
        storage errors raise `SpoolError`.
        """
        for s in changed:
            self._unsaved[(route, s.key)] = alarm_row(route, s)
        for key in forget:
            self._unsaved[(route, key)] = None
        if not self._unsaved:
            return
        async with self._write_lock:
            writing = dict(self._unsaved)
            try:
                await self._write_alarms(writing)
            except Exception as e:
                why = self._holdable(e)
                if not why:
                    raise
                allowed, suppressed = self._hold_log.allow("held")
                if allowed:
                    log.warning(
                        f"{why}: alarm state held in memory, written when it can be",
                        where=self.where,
                        held=len(self._unsaved),
                        suppressed=suppressed,
                        hint=self.hold_hint,
                    )
                return
        for k, row in writing.items():
            if self._unsaved.get(k) is row:  # not changed again while it was written
                del self._unsaved[k]

    async def _write_held(self) -> None:
        """At close: a last try to write what is held, and say loudly what is lost."""
        if self._unsaved:
            await self.save_alarms("", ())
        if self._unsaved:
            log.error(
                "alarm state not written: the storage still cannot take it",
                where=self.where,
                lost=len(self._unsaved),
                hint="after the restart, clears of these alarms may mail as clear_unknown",
            )
