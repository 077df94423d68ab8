"""Raw TCP lines (innovaphone "log server type TCP"): syslog when they start with a PRI."""

from __future__ import annotations

import re

from notifier.ingest.parse.alarmxml import with_alarm
from notifier.ingest.parse.syslog import decode_text, host_of, parse_syslog
from notifier.records import Kind, Record, SeverityScheme, new_record

_PRI_START = re.compile(rb"<\d{1,3}>")


def parse_line(
    data: bytes,
    *,
    received_at: float,
    sender: str,
    receiver: str,
    scheme: SeverityScheme = SeverityScheme.EVENTS_API,
    id: str | None = None,
) -> Record:
    """One line as a Record: `parse_syslog` when it starts with ``<PRI>``, else its plain text.

    Plain lines keep their text whole (runs of spaces are meaningful in innovaphone logs); an
    XML alarm record inside still makes an alarm. Raises only `ParseError`.
    """
    if _PRI_START.match(data):
        return parse_syslog(
            data, received_at=received_at, sender=sender, receiver=receiver, scheme=scheme, id=id
        )
    record = new_record(
        Kind.LOG,
        received_at,
        sender,
        receiver,
        data,
        text=decode_text(data),
        device=host_of(sender),
        id=id,
    )
    return with_alarm(record, scheme)
