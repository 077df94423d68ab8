"""The syslog parser as it was before the fast path (commit 0949966), kept as a test oracle.

`tests/parse/test_syslog_fast.py` checks that the optimised `parse_syslog` gives the same Record
(every field but the id) as this straightforward version for generated input. Do not optimise
this file: its value is that it is the slow, obviously-written original.
"""

from __future__ import annotations

import calendar
import datetime as dt
import re

from notifier.ingest.parse.alarmxml import with_alarm
from notifier.records import (
    SYSLOG_SEVERITY,
    Kind,
    ParseError,
    Record,
    Severity,
    SeverityScheme,
    frozen_extras,
)

_PRI = re.compile(r"<(\d{1,3})>")
_NOT_TEXT = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffd]")
_MONTHS = {m.lower(): i for i, m in enumerate(calendar.month_abbr) if m}

# RFC 3164 as devices send it: a space after the PRI (HP ProCurve), Cisco sequence number and
# "*" (clock not set), optional year before or after the time, fractional seconds, a trailing
# ":" after the time (Cisco).
_HEADER_3164 = re.compile(
    r" ?(?:(?P<seq>\d{1,10}):\s+)?(?P<mark>[*.])?"
    r"(?:"
    r"(?P<mon>[A-Za-z]{3})\s+(?P<day>\d{1,2})(?:\s+(?P<year1>\d{4}))?"
    r"\s+(?P<hh>\d{1,2}):(?P<mm>\d{2}):(?P<ss>\d{2})(?P<frac>\.\d{1,9})?"
    r"(?:\s+(?P<year2>\d{4})(?=[\s:]|$))?(?:\s+(?:UTC|GMT)(?=[\s:]|$))?"
    r"|"
    r"(?P<iso>\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:[Zz]|[+-]\d{2}:?\d{2})?)"
    r")"
    r":?(?:\s+|$)"
)
_HOST = re.compile(r"([\w.%:-]+)(?:\s+|$)")  # a line may end with the host
_TAG = re.compile(r"([^\s\[\]:]{1,64})(?:\[([^\]\s]{0,32})\])?:(?:\s|$)")
_ISO = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:?\d{2})?$"
)
_HEADER_5424 = re.compile(r"1 (\S+) (\S+) (\S+) (\S+) (\S+) ")
_SD_NAME = re.compile(r'[^\s=\]"]{1,32}')
_SD_VALUE = re.compile(r'((?:[^"\\]|\\.)*)"', re.S)
_SD_UNESCAPE = re.compile(r'\\(["\\\]])')

_NIL = "-"


def decode_text(data: bytes) -> str:
    """`data` as text without its line trailer; raises ParseError when it is empty or binary."""
    text = data.decode("utf-8", "replace").rstrip("\r\n\x00")
    if not text.strip():
        raise ParseError("empty", "empty message")
    bad = len(_NOT_TEXT.findall(text))
    if bad * 10 > len(text) * 3:
        raise ParseError(
            "not_text",
            f"not text: {bad} of {len(text)} characters are control bytes or invalid UTF-8",
        )
    return text


def host_of(sender: str) -> str:
    """The address part of "ip:port", "[v6]:port" or a bare address."""
    if sender.startswith("["):
        return sender[1:].split("]", 1)[0]
    if sender.count(":") == 1:
        return sender.split(":", 1)[0]
    return sender


def parse_syslog(
    data: bytes,
    *,
    received_at: float,
    sender: str,
    receiver: str,
    scheme: SeverityScheme = SeverityScheme.EVENTS_API,
) -> Record:
    """One syslog message (a datagram or a frame) as a Record; raises only `ParseError`."""
    text = decode_text(data)
    facility: int | None = None
    severity_num: int | None = None
    rest = text
    pri = _PRI.match(text)
    if pri is not None and int(pri.group(1)) <= 191:
        value = int(pri.group(1))
        facility, severity_num = value >> 3, value & 7
        rest = text[pri.end() :]
    header = None
    if rest.startswith("1 "):
        header = _rfc5424(rest)
    if header is None:
        header = _rfc3164(rest, received_at)
    host, source, message, device_time, extras = header
    record = Record(
        kind=Kind.LOG,
        received_at=received_at,
        sender=sender,
        receiver=receiver,
        raw=data,
        text=message,
        device=host or host_of(sender),
        source=source,
        facility=facility,
        severity=Severity.INFO if severity_num is None else SYSLOG_SEVERITY[severity_num],
        severity_raw="" if severity_num is None else str(severity_num),
        device_time=device_time,
        extras=frozen_extras(extras),
    )
    return with_alarm(record, scheme)


_Header = tuple[str, str, str, float | None, dict[str, str]]  # host, source, text, time, extras


def _rfc3164(rest: str, received_at: float) -> _Header:
    extras: dict[str, str] = {}
    m = _HEADER_3164.match(rest)
    if m is None:
        # No timestamp, so no host either; a leading "tag[pid]: " is still the tag (Cisco ASA
        # without timestamps, Python's SysLogHandler with a "name: " format).
        source, pos = _read_tag(rest, 0, extras)
        return "", source, rest[pos:], None, extras
    device_time = _time_3164(m, received_at)
    if m.group("mon") is not None and device_time is None:
        # "Foo 12 10:00:00" that is no date: not a header after all.
        return "", "", rest, None, extras
    if m.group("seq"):
        extras["sequence"] = m.group("seq")
    if m.group("mark") == "*":
        extras["clock_unsynced"] = "true"
    pos = m.end()
    host = ""
    h = _HOST.match(rest, pos)
    if h is not None and not h.group(1).endswith(":"):
        host = h.group(1)
        pos = h.end()
    source, pos = _read_tag(rest, pos, extras)
    return host, source, rest[pos:], device_time, extras


def _read_tag(rest: str, pos: int, extras: dict[str, str]) -> tuple[str, int]:
    """The ``tag[pid]:`` at `pos` (the pid into `extras`) and where the text starts after it;
    ``("", pos)`` when there is none: without its colon a word is text, not a tag."""
    t = _TAG.match(rest, pos)
    if t is None:
        return "", pos
    if t.group(2):
        extras["procid"] = t.group(2)
    return t.group(1), t.end()


def _time_3164(m: re.Match[str], received_at: float) -> float | None:
    if m.group("iso") is not None:
        return _iso_time(m.group("iso"))
    month = _MONTHS.get(m.group("mon").lower())
    if month is None:
        return None
    frac = float(m.group("frac") or 0.0)
    day, hh, mm, ss = (int(m.group(g)) for g in ("day", "hh", "mm", "ss"))
    given = m.group("year1") or m.group("year2")
    if given:
        years = [int(given)]
    else:
        try:
            this = dt.datetime.fromtimestamp(received_at, dt.UTC).year
        except (ValueError, OverflowError, OSError):
            this = 1970
        years = [this, this - 1, this + 1]
    best: float | None = None
    for year in years:
        try:
            stamp = dt.datetime(year, month, day, hh, mm, ss, tzinfo=dt.UTC).timestamp() + frac
        except (ValueError, OverflowError):
            continue
        if best is None or abs(stamp - received_at) < abs(best - received_at):
            best = stamp
    return best


def _iso_time(value: str) -> float | None:
    """RFC 3339 time as unix seconds; a time without offset is read as UTC; None if invalid."""
    m = _ISO.match(value)
    if m is None:
        return None
    year, month, day, hh, mm, ss, frac, zone = m.groups()
    try:
        if zone is None or zone in "Zz":
            tz = dt.UTC
        else:
            digits = zone[1:].replace(":", "")
            offset = dt.timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
            tz = dt.timezone(-offset if zone[0] == "-" else offset)
        stamp = dt.datetime(
            int(year), int(month), int(day), int(hh), int(mm), int(ss), tzinfo=tz
        ).timestamp()
    except (ValueError, OverflowError):
        return None
    return stamp + (float("0." + frac) if frac else 0.0)


def _rfc5424(rest: str) -> _Header | None:
    """HEADER SP STRUCTURED-DATA [SP MSG] after the PRI, or None when it is not RFC 5424.

    Structured data that is not quite valid does not cost the header: what can be read of it
    goes to extras, the text from the first unreadable element on is the message, and
    ``extras["sd_error"]`` says what was wrong. Only a header whose timestamp is no timestamp
    as well is not taken for RFC 5424 (``<13>1 apple pie ...`` is text).
    """
    m = _HEADER_5424.match(rest)
    if m is None:
        return None
    stamp, host, app, procid, msgid = m.groups()
    device_time = None if stamp == _NIL else _iso_time(stamp)
    extras, pos, error = _structured_data(rest, m.end())
    if error is None and pos < len(rest) and rest[pos] != " ":
        error = "no space between the structured data and the message"
    if error is not None:
        if device_time is None and stamp != _NIL:
            return None
        extras["sd_error"] = error
        message = rest[pos:]
    else:
        message = rest[pos + 1 :].removeprefix("\ufeff")
    if procid != _NIL:
        extras["procid"] = procid
    if msgid != _NIL:
        extras["msgid"] = msgid
    if device_time is None and stamp != _NIL:
        extras["timestamp"] = stamp
    return (
        "" if host == _NIL else host,
        "" if app == _NIL else app,
        message,
        device_time,
        extras,
    )


def _structured_data(s: str, pos: int) -> tuple[dict[str, str], int, str | None]:
    """SD elements flattened to ``sd.<id>.<param>`` (repeated params joined by ","), the end
    position, and what was wrong: on an error, the position is where the unreadable element
    starts and the params read before it are kept."""
    if s.startswith(_NIL, pos) and (pos + 1 == len(s) or s[pos + 1] == " "):
        return {}, pos + 1, None
    flat: dict[str, str] = {}
    if not s.startswith("[", pos):
        return flat, pos, "structured data is neither '-' nor '[...]'"
    while pos < len(s) and s[pos] == "[":
        start = pos
        ident = _SD_NAME.match(s, pos + 1)
        if ident is None:
            return flat, start, "an SD element without SD-ID"
        element = ident.group()
        prefix = f"sd.{element}"
        pos = ident.end()
        params = 0
        while True:
            if pos >= len(s):
                return flat, start, f"SD element [{element}] is not closed by ']'"
            if s[pos] == "]":
                pos += 1
                break
            if s[pos] != " ":
                return flat, start, f"{s[pos]!r} where a space or ']' belongs in [{element}]"
            name = _SD_NAME.match(s, pos + 1)
            if name is None or not s.startswith('="', name.end()):
                param = "" if name is None else f" {name.group()}"
                return flat, start, f'SD-PARAM{param} in [{element}] is not name="value"'
            value = _SD_VALUE.match(s, name.end() + 2)
            if value is None:
                return flat, start, f"the value of {name.group()} in [{element}] is not closed"
            key = f"{prefix}.{name.group()}"
            text = _SD_UNESCAPE.sub(r"\1", value.group(1))
            flat[key] = f"{flat[key]},{text}" if key in flat else text
            pos = value.end()
            params += 1
        if not params:  # an element without params still says something ([timeQuality])
            flat.setdefault(prefix, "")
    return flat, pos, None
