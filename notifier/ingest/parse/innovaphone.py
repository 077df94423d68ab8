"""innovaphone HTTP logging and alarm forwarding: form fields → Record.

The devices send `event`, `time`, `date`, `from` and `msg` as a query string (External GET) or as
the same string in a POST body (External POST, Standard), whatever the Content-Type says and
possibly with a leading ``?``. Scripts may send the Events API fields (type, code, severity, host,
serial, source, text, details, active, xsl) the same way. Fields we do not map stay in `extras`.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import replace
from urllib.parse import unquote_to_bytes

from notifier.ingest.parse.alarmxml import AlarmFields, alarm_record, with_alarm
from notifier.ingest.parse.syslog import host_of
from notifier.records import Kind, ParseError, Record, SeverityScheme, frozen_extras

# innovaphone's own fields, mapped onto Record attributes.
_DEVICE_FIELDS = ("event", "time", "date", "from", "msg")
# The Events API fields; the alarm mapping itself lives in alarmxml, shared with syslog XML.
_ALARM_FIELDS = ("type", "severity", "active", "code", "host", "serial", "source", "text")
_ALARM_FIELDS_EXTRA = ("xsl", "details")

# Device times before this mean the clock was not set yet (innovaphone sends time=0 then).
_CLOCK_SET_AFTER = dt.datetime(2000, 1, 1, tzinfo=dt.UTC).timestamp()
_DATE_FORMAT = "%Y%m%d-%H%M%S"


def form_fields(raw: bytes) -> dict[str, str]:
    """`k=v&k=v` (optionally after a ``?``) as a dict; names lower-cased, the first one wins.

    `+` and ``%20`` both decode to a space and runs of spaces are kept: they are meaningful in
    innovaphone log lines. Bytes that are not UTF-8 become U+FFFD (the record keeps `raw`).
    """
    body = raw.lstrip().rstrip(b"\r\n")
    if body.startswith(b"?"):
        body = body[1:]
    fields: dict[str, str] = {}
    for pair in body.split(b"&"):
        name, _, value = pair.partition(b"=")
        key = _unquote(name).strip().lower()
        if key:
            fields.setdefault(key, _unquote(value))
    return fields


def _unquote(value: bytes) -> str:
    return unquote_to_bytes(value.replace(b"+", b" ")).decode("utf-8", "replace")


def read_time(value: str) -> float:
    """Unix seconds from digits (unix seconds) or ``YYYYMMDD-HHMMSS``; ValueError when neither.

    ``YYYYMMDD-HHMMSS`` is read as UTC: the reference does not name its zone (`time`, when set,
    is preferred for that reason).
    """
    text = value.strip()
    try:
        return float(text)
    except ValueError:
        parsed = dt.datetime.strptime(text, _DATE_FORMAT)
    return parsed.replace(tzinfo=dt.UTC).timestamp()


def clock_set(seconds: float) -> float | None:
    """`seconds` when it is a plausible device time; None before 2000 (clock not set) or absurd."""
    if not math.isfinite(seconds) or seconds < _CLOCK_SET_AFTER or seconds > 1e11:
        return None
    return seconds


def device_time(value: str) -> float | None:
    """The device time a `time` / `date` field gives; None when absent, unreadable or not set."""
    try:
        return clock_set(read_time(value))
    except ValueError:
        return None


def parse_form(
    data: bytes | str,
    *,
    received_at: float,
    sender: str,
    receiver: str,
    scheme: SeverityScheme = SeverityScheme.EVENTS_API,
) -> Record:
    """One innovaphone log line, CDR event or alarm sent as form fields; raises only `ParseError`.

    event=syslog → LOG; any other event (gateway CDRs such as ``A:Call``) → EVENT with the event
    as `source`; Events API fields (type / code) or alarm XML in `msg` → ALARM, CLEAR or EVENT.
    An unknown severity there does not lose the alarm: it becomes INDETERMINATE (see alarmxml).
    """
    raw = data.encode("utf-8", "replace") if isinstance(data, str) else bytes(data)
    fields = form_fields(raw)
    event = fields.get("event", "").strip()
    msg = fields.get("msg", "")
    text = fields.get("text", "")
    is_alarm = any(fields.get(name, "").strip() for name in ("type", "code"))
    is_cdr = event.lower() not in ("", "syslog")
    if not (msg.strip() or text.strip() or is_alarm or is_cdr):
        seen = ", ".join(sorted(fields)[:10]) or "none"
        raise ParseError(
            "empty",
            f"nothing to record (fields seen: {seen}): send innovaphone fields event, time, "
            "date, from, msg, or Events API fields type, code, text",
        )

    mapped = set(_DEVICE_FIELDS)
    if is_alarm:
        mapped.update(_ALARM_FIELDS, _ALARM_FIELDS_EXTRA)
    elif text:
        mapped.add("text")
    extras = {k: v for k, v in fields.items() if k not in mapped}
    when = device_time(fields.get("time", ""))
    if when is None:
        when = device_time(fields.get("date", ""))
        if "time" in fields:
            extras["time"] = fields["time"]
    if "date" in fields:
        # Kept even when used: its time zone is not documented.
        extras["date"] = fields["date"]
    if text and msg:
        extras["msg"] = msg

    base = Record(
        # Events API text without a type is a one-shot event.
        kind=Kind.EVENT if is_cdr or text else Kind.LOG,
        received_at=received_at,
        sender=sender,
        receiver=receiver,
        raw=raw,
        text=text or msg,
        device=fields.get("from", "").strip() or host_of(sender),
        source=event if is_cdr else "",
        device_time=when,
        extras=frozen_extras(extras),
    )
    if is_alarm:
        return _as_alarm(base, fields, scheme)
    if text:
        return base
    return _with_alarm_xml(base, scheme)


def _as_alarm(base: Record, fields: dict[str, str], scheme: SeverityScheme) -> Record:
    """The Events API fields sent as a form: the same mapping as alarm XML."""
    alarm = AlarmFields(
        **{name: fields.get(name, "").strip() for name in _ALARM_FIELDS + _ALARM_FIELDS_EXTRA},
    )
    if not alarm.text:
        alarm = replace(alarm, text=base.text)
    return alarm_record(alarm, base, scheme)


def _with_alarm_xml(base: Record, scheme: SeverityScheme) -> Record:
    """`base` as the alarm its `msg` carries as innovaphone alarm XML, if it carries one."""
    if "<" not in base.text:
        return base
    return with_alarm(base, scheme)
