"""Shared state beside the queues: alarm state per route, silences and acknowledgements.

The `Spool` holds records; this holds what the dispatchers decide with. Everything that several
instances on one database must agree on goes through `StateStore`: the alarm state of each route
(with the Message-ID a clear's mail replies to), the silences operators create and the
acknowledgements they give. SQLite (`data_dir/alarms.sqlite`, one box) and PostgreSQL implement it
side by side; one contract suite (`tests/spool/test_state_contract.py`) runs against both.

The dataclasses are plain data. The decisions over them live in `notifier/dispatch/`
(`alarms.decide`, the silence matching): storage never decides.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from notifier.records import Severity

Key = tuple[str, str, str]  # an alarm: (device, code, source)


@dataclass(frozen=True, slots=True)
class AlarmState:
    """What we know of one alarm on one route. Times are unix seconds."""

    device: str
    code: str
    source: str
    active: bool
    first_set: float  # when it became active (device time when known)
    last_seen: float  # last set or clear received
    count: int  # sets received while active, including the first
    last_notified: float  # when a mail about it last went out
    cleared_at: float | None = None
    severity: Severity | None = None  # the set's, for the clear mail
    message_id: str = ""  # Message-ID of the mail that reported the set: its clear replies to it
    silenced: str = ""  # the silence (id) or maintenance window (name) that muted the set

    @property
    def key(self) -> Key:
        return (self.device, self.code, self.source)


@dataclass(frozen=True, slots=True)
class Silence:
    """An operator's "do not mail this for a while"; `matchers` use the route `match` keys
    (plus `routes` and `min_severity`), each a list of patterns."""

    id: str
    matchers: Mapping[str, tuple[str, ...]]
    starts_at: float
    ends_at: float
    comment: str
    created_by: str
    created_at: float
    expired_at: float | None = None  # expired early by an operator

    def ended(self, now: float) -> bool:
        return now >= self.ends_at or (self.expired_at is not None and now >= self.expired_at)


@dataclass(frozen=True, slots=True)
class Ack:
    """An operator's "I have this one": stops the reminders of an active alarm on every route."""

    key: Key
    by: str
    comment: str
    at: float


class StateStore(Protocol):
    """The shared state; every method may raise `SpoolError` when the storage is unreachable."""

    async def start(self) -> None:
        """Open (and create or migrate the schema)."""

    async def close(self) -> None:
        """Write what is held, then close."""

    async def load_alarms(self, route: str) -> dict[Key, AlarmState]:
        """The alarm states of `route`, as the last save left them."""
        ...

    async def save_alarms(
        self, route: str, changed: Iterable[AlarmState], forget: Collection[Key] = ()
    ) -> None:
        """Write `changed` and delete `forget` for `route` in one transaction. When the disk is
        full the changes are held in memory and written by a later save."""

    @property
    def unsaved(self) -> int:
        """Alarm state changes held in memory because the disk was full."""
        ...

    async def add_silence(self, silence: Silence) -> None:
        """Store a new silence (its `id` is chosen by the caller)."""

    async def silences(self, ended_after: float | None = None) -> list[Silence]:
        """Silences by start time; with `ended_after`, only those that had not ended then."""
        ...

    async def expire_silence(self, silence_id: str, at: float) -> bool:
        """End a silence early; False when there is no such silence or it had already ended."""
        ...

    async def ack(self, ack: Ack) -> None:
        """Store (or replace) the acknowledgement of the alarm `ack.key`."""

    async def acks(self) -> dict[Key, Ack]:
        """Every stored acknowledgement."""
        ...

    async def forget_acks(self, keys: Collection[Key]) -> None:
        """Drop the acknowledgements of `keys` (their alarms cleared)."""


def silence_matchers(raw: Mapping[str, Iterable[str]]) -> dict[str, tuple[str, ...]]:
    """Matchers in their stored form: sorted keys, tuples of patterns, empty lists left out."""
    return {k: tuple(v) for k, v in sorted(raw.items()) if tuple(v)}
