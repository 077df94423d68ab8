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

import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

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


# -- the row form, shared by the backends ---------------------------------------------------

# The alarm columns after `route`, in `alarm_row` order; both backends name them so.
ALARM_COLUMNS = (
    "device",
    "code",
    "source",
    "active",
    "first_set",
    "last_seen",
    "count",
    "last_notified",
    "cleared_at",
    "severity",
    "message_id",
    "silenced",
)
SILENCE_COLUMNS = (
    "id",
    "matchers",
    "starts_at",
    "ends_at",
    "comment",
    "created_by",
    "created_at",
    "expired_at",
)
ACK_COLUMNS = ("device", "code", "source", "by", "comment", "at")

Row = tuple[object, ...]


def alarm_row(route: str, s: AlarmState) -> Row:
    """`(route, *ALARM_COLUMNS)` of `s`; the severity as its name, None when unknown."""
    severity = None if s.severity is None else s.severity.value
    return (
        route,
        s.device,
        s.code,
        s.source,
        bool(s.active),
        s.first_set,
        s.last_seen,
        s.count,
        s.last_notified,
        s.cleared_at,
        severity,
        s.message_id,
        s.silenced,
    )


def alarm_of_row(row: Sequence[Any]) -> AlarmState:
    """The state stored as `ALARM_COLUMNS`; a severity this version does not know reads as
    unknown (the clear mail then shows the clear's own)."""
    severity = row[9]
    return AlarmState(
        str(row[0]),
        str(row[1]),
        str(row[2]),
        bool(row[3]),
        float(row[4]),
        float(row[5]),
        int(row[6]),
        float(row[7]),
        None if row[8] is None else float(row[8]),
        Severity(severity) if severity in _SEVERITIES else None,
        str(row[10] or ""),
        str(row[11] or ""),
    )


_SEVERITIES = frozenset(s.value for s in Severity)


def silence_row(s: Silence) -> Row:
    """`SILENCE_COLUMNS` of `s`, its matchers as JSON text."""
    matchers = json.dumps({k: list(v) for k, v in s.matchers.items()}, sort_keys=True)
    return (
        s.id,
        matchers,
        s.starts_at,
        s.ends_at,
        s.comment,
        s.created_by,
        s.created_at,
        s.expired_at,
    )


def silence_of_row(row: Sequence[Any]) -> Silence:
    return Silence(
        str(row[0]),
        silence_matchers(json.loads(row[1])),
        float(row[2]),
        float(row[3]),
        str(row[4]),
        str(row[5]),
        float(row[6]),
        None if row[7] is None else float(row[7]),
    )


def ack_row(a: Ack) -> Row:
    return (*a.key, a.by, a.comment, a.at)


def ack_of_row(row: Sequence[Any]) -> Ack:
    return Ack((str(row[0]), str(row[1]), str(row[2])), str(row[3]), str(row[4]), float(row[5]))
