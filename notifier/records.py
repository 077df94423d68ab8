"""The one value that flows through the pipeline: a Record.

Every stage takes and gives Records; nothing downstream re-parses bytes. A Record is immutable
and carries the raw bytes it came from, so nothing the sender said is ever lost by parsing.
"""

from __future__ import annotations

import enum
import itertools
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields, replace
from types import MappingProxyType
from typing import Any

from notifier.speedups import native


class Kind(enum.StrEnum):
    """What a record means to the people reading the mails, lowest priority first."""

    LOG = "log"
    EVENT = "event"
    CLEAR = "clear"
    ALARM = "alarm"

    @property
    def rank(self) -> int:
        """Drop order under overflow: log lines go first, alarms last."""
        return _KIND_RANK[self]


_KIND_RANK = {Kind.LOG: 0, Kind.EVENT: 1, Kind.CLEAR: 2, Kind.ALARM: 3}


class Severity(enum.StrEnum):
    """Normalised severity. The sender's own value is kept in `Record.severity_raw`."""

    CRITICAL = "critical"
    MAJOR = "major"
    MINOR = "minor"
    WARNING = "warning"
    INDETERMINATE = "indeterminate"
    INFO = "info"

    @property
    def rank(self) -> int:
        return _SEVERITY_RANK[self]


_SEVERITY_RANK = {
    Severity.INFO: 0,
    Severity.INDETERMINATE: 1,
    Severity.WARNING: 2,
    Severity.MINOR: 3,
    Severity.MAJOR: 4,
    Severity.CRITICAL: 5,
}

# Names people and devices use for the same levels (syslog keywords included).
_SEVERITY_NAMES: dict[str, Severity] = {
    "critical": Severity.CRITICAL,
    "crit": Severity.CRITICAL,
    "emerg": Severity.CRITICAL,
    "emergency": Severity.CRITICAL,
    "alert": Severity.CRITICAL,
    "fatal": Severity.CRITICAL,
    "major": Severity.MAJOR,
    "error": Severity.MAJOR,
    "err": Severity.MAJOR,
    "high": Severity.MAJOR,
    "minor": Severity.MINOR,
    "medium": Severity.MINOR,
    "warning": Severity.WARNING,
    "warn": Severity.WARNING,
    "low": Severity.WARNING,
    "indeterminate": Severity.INDETERMINATE,
    "unknown": Severity.INDETERMINATE,
    "info": Severity.INFO,
    "informational": Severity.INFO,
    "notice": Severity.INFO,
    "debug": Severity.INFO,
    "cleared": Severity.INFO,
    "clear": Severity.INFO,
}


class SeverityScheme(enum.StrEnum):
    """How a numeric severity from a device is read (the two innovaphone numberings)."""

    # Public Events API: Minor 0 / Indeterminate 1 / Major 2.
    EVENTS_API = "events_api"
    # SDK alarm client: Indeterminate 0 / Major 1 / Critical 2.
    SDK = "sdk"


_NUMERIC_SEVERITY = {
    SeverityScheme.EVENTS_API: {0: Severity.MINOR, 1: Severity.INDETERMINATE, 2: Severity.MAJOR},
    SeverityScheme.SDK: {0: Severity.INDETERMINATE, 1: Severity.MAJOR, 2: Severity.CRITICAL},
}

# RFC 5424 severity numbers 0..7.
SYSLOG_SEVERITY = (
    Severity.CRITICAL,  # 0 emerg
    Severity.CRITICAL,  # 1 alert
    Severity.CRITICAL,  # 2 crit
    Severity.MAJOR,  # 3 err
    Severity.WARNING,  # 4 warning
    Severity.INFO,  # 5 notice
    Severity.INFO,  # 6 info
    Severity.INFO,  # 7 debug
)


class UnknownSeverity(ValueError):
    """A severity value that is neither a known name nor a number of the chosen scheme."""


def parse_severity(
    value: str | int, scheme: SeverityScheme = SeverityScheme.EVENTS_API
) -> Severity:
    """Map a device's severity (a name such as ``Major`` or a number) to a `Severity`.

    Raises `UnknownSeverity` naming the value when it cannot be mapped.
    """
    text = str(value).strip()
    by_name = _SEVERITY_NAMES.get(text.lower())
    if by_name is not None:
        return by_name
    try:
        number = int(text, 0)
    except ValueError:
        raise UnknownSeverity(
            f"unknown severity {text[:40]!r}: use a name "
            "(critical, major, minor, warning, indeterminate, info) or a number 0..2"
        ) from None
    mapped = _NUMERIC_SEVERITY[scheme].get(number)
    if mapped is None:
        raise UnknownSeverity(
            f"unknown severity {number}: the {scheme.value} scheme knows 0, 1 and 2"
        )
    return mapped


_id_counter = itertools.count()
_id_node = os.getpid() & 0xFFFF


def new_record_id(
    now: float | None = None,
    *,
    _clock: Callable[[], float] = time.time,
    _next: Callable[[], int] = _id_counter.__next__,
    _node: int = _id_node << 32,
) -> str:
    """A time-ordered, process-unique id: sorts by creation time, 26 hex digits.

    14 digits of microseconds, 4 of the process id, 8 of a counter.
    """
    # Bound once (the keyword defaults) and formatted as one number: this runs for every
    # record ingested.
    micros = int((_clock() if now is None else now) * 1_000_000)
    if micros < 0:  # before 1970: what the digit-by-part format gave
        return f"{micros:014x}{_node >> 32:04x}{_next() & 0xFFFFFFFF:08x}"
    return f"{micros << 48 | _node | _next() & 0xFFFFFFFF:026x}"


def new_record_ids(
    count: int,
    now: float | None = None,
    *,
    _clock: Callable[[], float] = time.time,
    _counter: Iterator[int] = _id_counter,
    _node: int = _id_node << 32,
) -> list[str]:
    """`count` ids as `new_record_id` makes them, for one batch of records received together:
    one timestamp and `count` values of the same counter, so they sort in batch order.

    A receiver takes one read's worth at once: the clock and the per-call work are paid per
    batch, not per line (the per-line id was 10-16 % of ingest time).
    """
    micros = int((_clock() if now is None else now) * 1_000_000)
    # The digits `new_record_id` gives, with the time and node formatted once: formatting the
    # 104-bit number per id costs more than the rest of it.
    prefix = f"{micros:014x}{_node >> 32:04x}"
    # islice takes the values from the shared counter: ids stay unique across batches and the
    # single ids made meanwhile (another thread's too: each value is taken once).
    values = itertools.islice(_counter, count)
    if native is not None:  # the same strings, formatted in C (notifier/_speedups.c)
        return native.ids(prefix, list(values))  # type: ignore[no-any-return]
    return [f"{prefix}{c & 0xFFFFFFFF:08x}" for c in values]


_EMPTY: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Record:
    """One log line, event or alarm as it arrived.

    Times are unix seconds (float). `device_time` is what the device said, or None when it did
    not say or its clock was not set (innovaphone sends ``time=0`` then).
    """

    kind: Kind
    received_at: float
    sender: str  # the peer address, "ip:port" or "ip"
    receiver: str  # which listener took it: http, json, syslog-udp, syslog-tcp, syslog-tls, tcp
    raw: bytes
    text: str = ""
    device: str = ""  # host name the device gave, else the sender's address
    serial: str = ""
    code: str = ""
    severity: Severity = Severity.INFO
    severity_raw: str = ""
    source: str = ""  # software module (RELAY/RECH) or syslog tag/app-name
    details: str = ""
    facility: int | None = None
    device_time: float | None = None
    extras: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    id: str = field(default_factory=new_record_id)
    # Alert labels (Alertmanager, Grafana); routes match them. Empty for other senders.
    labels: Mapping[str, str] = field(default_factory=lambda: _EMPTY)

    @property
    def alarm_key(self) -> tuple[str, str, str]:
        """What identifies one alarm across set, re-send and clear."""
        return (self.device, self.code, self.source)

    @property
    def time(self) -> float:
        """The best known time of the event: the device's when set, else when received."""
        return self.device_time if self.device_time is not None else self.received_at

    def evolve(self, **changes: Any) -> Record:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe form; `raw` is decoded as UTF-8 with replacement (lossless in the spool)."""
        return {
            "id": self.id,
            "kind": self.kind.value,
            "received_at": self.received_at,
            "device_time": self.device_time,
            "sender": self.sender,
            "receiver": self.receiver,
            "device": self.device,
            "serial": self.serial,
            "code": self.code,
            "severity": self.severity.value,
            "severity_raw": self.severity_raw,
            "source": self.source,
            "text": self.text,
            "details": self.details,
            "facility": self.facility,
            "extras": dict(self.extras),
            "labels": dict(self.labels),
            "raw": self.raw.decode("utf-8", "replace"),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], raw: bytes | None = None) -> Record:
        """Inverse of `to_dict`; `raw` overrides the (possibly lossy) text form."""
        return cls(
            id=str(data["id"]),
            kind=Kind(data["kind"]),
            received_at=float(data["received_at"]),
            device_time=None if data.get("device_time") is None else float(data["device_time"]),
            sender=str(data.get("sender", "")),
            receiver=str(data.get("receiver", "")),
            device=str(data.get("device", "")),
            serial=str(data.get("serial", "")),
            code=str(data.get("code", "")),
            severity=Severity(data.get("severity", Severity.INFO.value)),
            severity_raw=str(data.get("severity_raw", "")),
            source=str(data.get("source", "")),
            text=str(data.get("text", "")),
            details=str(data.get("details", "")),
            facility=None if data.get("facility") is None else int(data["facility"]),
            extras=MappingProxyType(
                {str(k): str(v) for k, v in dict(data.get("extras") or {}).items()}
            ),
            raw=raw if raw is not None else str(data.get("raw", "")).encode("utf-8"),
            labels=frozen_extras(
                {str(k): str(v) for k, v in dict(data.get("labels") or {}).items()}
            ),
        )


class _Unfrozen:
    """Record's slot layout without its frozen `__setattr__`: see `new_record`."""

    __slots__ = tuple(f.name for f in fields(Record))


def new_record(
    kind: Kind,
    received_at: float,
    sender: str,
    receiver: str,
    raw: bytes,
    *,
    text: str = "",
    device: str = "",
    serial: str = "",
    code: str = "",
    severity: Severity = Severity.INFO,
    severity_raw: str = "",
    source: str = "",
    details: str = "",
    facility: int | None = None,
    device_time: float | None = None,
    extras: Mapping[str, str] = _EMPTY,
    id: str | None = None,
    labels: Mapping[str, str] = _EMPTY,
) -> Record:
    """`Record(...)` for the ingest hot paths: the same immutable Record, built ~5x faster.

    A frozen dataclass sets each of its 18 fields through `object.__setattr__`, which is most
    of the cost of parsing a syslog line. Here the fields are stored on an object of the same
    slot layout that is not frozen, and only then does it become a Record (`__class__`
    assignment between identical slot layouts). Nothing else ever holds the unfrozen object.
    """
    r: Any = object.__new__(_Unfrozen)
    r.kind = kind
    r.received_at = received_at
    r.sender = sender
    r.receiver = receiver
    r.raw = raw
    r.text = text
    r.device = device
    r.serial = serial
    r.code = code
    r.severity = severity
    r.severity_raw = severity_raw
    r.source = source
    r.details = details
    r.facility = facility
    r.device_time = device_time
    r.extras = extras
    r.id = new_record_id() if id is None else id
    r.labels = labels
    r.__class__ = Record
    record: Record = r  # not typing.cast: a function call, and this runs for every line
    return record


def frozen_extras(pairs: Mapping[str, str]) -> Mapping[str, str]:
    """An immutable copy of extra fields, for building Records."""
    return MappingProxyType(dict(pairs)) if pairs else _EMPTY


class ParseError(ValueError):
    """Input that cannot become a Record. `reason` is a short counter label, `str()` the detail."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


# The SMTP relay's receiver name. Its Records carry the mail as received in `raw` and the SMTP
# envelope in `extras` (see `MailEnvelope`); routes never take them, the relay consumer sends them.
SMTP_RELAY = "smtp-relay"


@dataclass(frozen=True, slots=True)
class MailEnvelope:
    """The SMTP envelope of a relayed mail: MAIL FROM and the RCPT TO addresses, in order."""

    mail_from: str
    rcpt_to: tuple[str, ...]

    def to_extras(self) -> dict[str, str]:
        # Extras hold strings: the recipients as a JSON list, so no address can split it wrongly.
        return {"mail_from": self.mail_from, "rcpt_to": json.dumps(list(self.rcpt_to))}

    @classmethod
    def of(cls, record: Record) -> MailEnvelope:
        """The envelope stored with a relayed mail; raises ValueError when it is not there."""
        try:
            recipients = json.loads(record.extras["rcpt_to"])
            mail_from = record.extras["mail_from"]
        except (KeyError, ValueError):
            raise ValueError(f"record {record.id} holds no SMTP envelope") from None
        if not isinstance(recipients, list) or not recipients:
            raise ValueError(f"record {record.id} holds no SMTP recipients")
        return cls(mail_from, tuple(str(r) for r in recipients))
