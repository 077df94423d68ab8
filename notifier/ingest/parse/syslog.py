"""Syslog messages → Records: PRI, RFC 3164 (and what devices really send), RFC 5424.

Lenient like rsyslog: a message without PRI or header is still a log line. Choices a reader of
the Records must know:

- Bytes that are not UTF-8 are decoded with U+FFFD replacement; `Record.raw` keeps them intact.
  Input that is mostly control bytes or invalid UTF-8 is refused (``not_text``), as is empty
  input (``empty``).
- RFC 3164 timestamps carry no year and no zone: the year that puts the time nearest to
  `received_at` is taken, and the time is read as UTC (devices are told to log in UTC; a device
  on local time shows up as an offset, never as a wrong day).
- Without a timestamp there is no RFC 3164 host either: the whole message is the text, so
  ``<134>LOG_HTTP 3 TCP-Up ...`` from an innovaphone box stays intact. Only a leading
  ``tag[pid]: `` (colon and space) is read as the tag: ``<166>%ASA-6-302014: Teardown ...``.
- Slightly malformed headers keep their host: a space between PRI and timestamp
  (``<167> Mar  7 19:06:53 host tag: ...``), a line that ends right after the host
  (``<14>Aug 30 23:00:05 X4711``), RFC 5424 with structured data that is not quite valid
  (header kept, the text from the unreadable SD element on is the message, ``extras["sd_error"]``
  says what was wrong).
- Where this reading differs from rsyslog's, and why: the README's table "Where notifier reads
  syslog differently from rsyslog" (tests/parse/test_rsyslog_oracle.py checks it).
- A message that carries an innovaphone XML alarm record becomes an alarm / clear / event
  record (see `alarmxml`).

Speed: one event-loop thread parses every datagram, so the common shape
``<PRI>Mmm dd hh:mm:ss host tag[pid]: msg`` takes a single-regex fast path that gives exactly
what the lenient path gives (tests/parse/test_syslog_fast.py checks this against the original
parser); anything else, or anything the fast path is unsure of, goes the lenient way.
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
from collections.abc import Mapping, Sequence
from dataclasses import fields
from types import MappingProxyType
from typing import Any

from notifier.ingest.parse.alarmxml import with_alarm
from notifier.records import (
    SYSLOG_SEVERITY,
    Kind,
    ParseError,
    Record,
    Severity,
    SeverityScheme,
    frozen_extras,
    new_record,
)
from notifier.speedups import native

_PRI = re.compile(r"<(\d{1,3})>")
_NOT_TEXT = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffd]")
_MONTHS = {m.lower(): i for i, m in enumerate(calendar.month_abbr) if m}

# tag[pid]: as RFC 3164 has it; possessive, as a tag never ends before a tag character.
_TAG_RE = r"(?P<tag>[^\s\[\]:]{1,64}+)(?:\[(?P<pid>[^\]\s]{0,32})\])?:(?:\s|$)"
_TAG = re.compile(_TAG_RE)
# RFC 3164 as devices send it: a space after the PRI (HP ProCurve), Cisco sequence number and
# "*" (clock not set), optional year before or after the time, fractional seconds, a trailing
# ":" after the time (Cisco). Or no timestamp and a tag (`_TAG_RE`): one match decides both,
# as the usual headerless line (innovaphone's "LOG_HTTP 3 TCP-Up ...") must stay cheap.
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
    r"|" + _TAG_RE
)
_HOST = re.compile(r"([\w.%:-]+)(?:\s+|$)")  # a line may end with the host
# The usual shape in one match: <PRI>Mmm dd hh:mm:ss host tag[pid]: msg. A subset of what the
# lenient path reads, and read the same way; the lookahead leaves a host the lenient header
# would take for a year or a zone ("2025", "UTC") to the lenient path.
_FAST_3164 = re.compile(
    r"<(\d{1,3})>([A-Za-z]{3} {1,2}\d{1,2} \d{1,2}:\d{2}:\d{2}) "
    r"(?!\d{4}[\s:]|UTC[\s:]|GMT[\s:])([\w.%:-]*[\w.%-]) "
    r"([^\s\[\]:]{1,64})(?:\[([^\]\s]{0,32})\])?:(?:\s|$)"
)
_FAST_STAMP = re.compile(r"([A-Za-z]{3}) +(\d{1,2}) (\d{1,2}):(\d{2}):(\d{2})")
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
    if not text or text.isspace():  # the same test as `not text.strip()`, without a copy
        raise ParseError("empty", "empty message")
    if text.isprintable() and "\ufffd" not in text:
        return text  # no control character, no replacement: nothing to count (the usual case)
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
    id: str | None = None,
) -> Record:
    """One syslog message (a datagram or a frame) as a Record; raises only `ParseError`.

    `id`: the record's id when the caller took one for it (`new_record_ids`), else a new one.
    """
    text = decode_text(data)
    fast = _FAST_3164.match(text)
    if fast is not None:
        record = _fast_3164(fast, text, data, received_at, sender, receiver, id)
        if record is not None:
            return with_alarm(record, scheme) if "<" in record.text else record
    facility, severity, severity_raw = None, Severity.INFO, ""
    rest = text
    pri = _PRI.match(text)
    if pri is not None:
        digits = pri.group(1)
        # "<013>" is PRI 13 too; "<192>" and above are no PRI and stay in the text.
        by_pri = _BY_PRI.get(digits) or _BY_PRI.get(str(int(digits)))
        if by_pri is not None:
            facility, severity, severity_raw = by_pri
            rest = text[pri.end() :]
    header = None
    if rest.startswith("1 "):
        header = _rfc5424(rest)
    if header is None:
        header = _rfc3164(rest, received_at)
    host, source, message, device_time, extras = header
    record = new_record(
        Kind.LOG,
        received_at,
        sender,
        receiver,
        data,
        text=message,
        device=host or host_of(sender),
        source=source,
        facility=facility,
        severity=severity,
        severity_raw=severity_raw,
        device_time=device_time,
        extras=frozen_extras(extras),
        id=id,
    )
    return with_alarm(record, scheme) if "<" in message else record


def parse_fast_3164(
    frames: Sequence[tuple[bytes, str]], ids: Sequence[str], *, received_at: float, receiver: str
) -> list[Record | None]:
    """(message, sender) pairs of one read, each as `parse_syslog` reads it when it has the
    usual ``<PRI>Mmm dd hh:mm:ss host tag[pid]: msg`` shape and no alarm record in it, else
    None: those are for `parse_syslog` (or `parse_line`) to read, one at a time. `ids[i]` is
    the id of the record of `frames[i]`. Never raises for any input.

    The compiled reader (`notifier/_speedups.c`, built by `pip install`) where there is one, else
    `parse_fast_3164_python`; both read every line alike (tests/parse/test_syslog_fast.py).
    """
    if _native is None:
        return parse_fast_3164_python(frames, ids, received_at=received_at, receiver=receiver)
    return _native.parse(frames, ids, float(received_at), receiver)  # type: ignore[no-any-return]


def parse_fast_3164_python(
    frames: Sequence[tuple[bytes, str]], ids: Sequence[str], *, received_at: float, receiver: str
) -> list[Record | None]:
    """`parse_fast_3164` in Python.

    One loop over the whole read, with no call per line but the regex and the Record: the
    calls and keyword arguments of the line-by-line path, and its `str.isprintable` check, were
    a fifth of the parse (BENCHMARKS.md, issue #12).
    """
    match = _FAST_3164.match
    out: list[Record | None] = []
    append = out.append
    for (data, sender), id in zip(frames, ids, strict=True):
        # What `decode_text` returns for text that has nothing to count or refuse; "" else.
        if data.isascii():
            # The usual case, checked on the bytes: twice as fast as `str.isprintable`.
            line = data.rstrip(b"\r\n\x00")
            clean = len(line.translate(None, _CONTROL_BYTES)) == len(line)
            text = line.decode("ascii") if clean else ""
        else:
            text = data.decode("utf-8", "replace").rstrip("\r\n\x00")
            if not text.isprintable() or "\ufffd" in text:
                text = ""
        m = match(text) if text else None
        record = None
        if m is not None:
            record = _fast_3164(m, text, data, received_at, sender, receiver, id)
            if record is not None and "<" in record.text:  # maybe an alarm: the full path
                record = None
        append(record)
    return out


# The ASCII characters `str.isprintable` refuses.
_CONTROL_BYTES = bytes(range(0x20)) + b"\x7f"


def _fast_3164(
    m: re.Match[str],
    text: str,
    data: bytes,
    received_at: float,
    sender: str,
    receiver: str,
    id: str | None,
) -> Record | None:
    """The Record of a `_FAST_3164` match, or None to let the lenient path decide."""
    pri, stamp, host, tag, procid = m.groups()
    by_pri = _BY_PRI.get(pri)  # None for "<013>" or "<192>": the lenient path decides
    if by_pri is None:
        return None
    device_time = _DATES.of_stamp(stamp, received_at)
    if device_time is None:
        return None
    facility, severity, severity_raw = by_pri
    return new_record(
        Kind.LOG,
        received_at,
        sender,
        receiver,
        data,
        text=text[m.end() :],
        device=host,
        source=tag,
        facility=facility,
        severity=severity,
        severity_raw=severity_raw,
        device_time=device_time,
        extras=_procid_extras(procid) if procid else _NO_EXTRAS,
        id=id,
    )


def _procid_extras(procid: str) -> Mapping[str, str]:
    """``{"procid": procid}``, one immutable mapping shared by every record of that process:
    a device logs from a few processes, and fewer objects per record is less work for the
    garbage collector."""
    extras = _PROCID_EXTRAS.get(procid)
    if extras is None:
        if len(_PROCID_EXTRAS) >= _MAX_PROCIDS:
            _PROCID_EXTRAS.clear()
        extras = _PROCID_EXTRAS[procid] = MappingProxyType({"procid": procid})
    return extras


_PROCID_EXTRAS: dict[str, Mapping[str, str]] = {}
_MAX_PROCIDS = 1024


def _one_line(
    data: bytes, sender: str, id: str, received_at: float, receiver: str
) -> Record | None:
    """The compiled reader's way back for a line with a byte above 0x7f: the Python loop."""
    return parse_fast_3164_python(
        [(data, sender)], (id,), received_at=received_at, receiver=receiver
    )[0]


# PRI as written → (facility, severity, severity as written)
_BY_PRI = {str(v): (v >> 3, SYSLOG_SEVERITY[v & 7], str(v & 7)) for v in range(192)}
_NO_EXTRAS = frozen_extras({})


_Header = tuple[str, str, str, float | None, dict[str, str]]  # host, source, text, time, extras


def _rfc3164(rest: str, received_at: float) -> _Header:
    extras: dict[str, str] = {}
    m = _HEADER_3164.match(rest)
    if m is None:
        return "", "", rest, None, extras
    if m.group("tag") is not None:
        # No timestamp, so no host either; a leading "tag[pid]: " is still the tag (Cisco ASA
        # without timestamps, Python's SysLogHandler with a "name: " format).
        if m.group("pid"):
            extras["procid"] = m.group("pid")
        return "", m.group("tag"), rest[m.end() :], None, extras
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
    if t.group("pid"):
        extras["procid"] = t.group("pid")
    return t.group("tag"), t.end()


def _time_3164(m: re.Match[str], received_at: float) -> float | None:
    if m.group("iso") is not None:
        return _iso_time(m.group("iso"))
    month = _MONTHS.get(m.group("mon").lower())
    if month is None:
        return None
    frac = float(m.group("frac") or 0.0)
    day, hh, mm, ss = (int(m.group(g)) for g in ("day", "hh", "mm", "ss"))
    given = m.group("year1") or m.group("year2")
    return _DATES.stamp(int(given) if given else None, month, day, hh, mm, ss, received_at, frac)


class _Dates:
    """RFC 3164 times as unix seconds, with the slow calendar work cached.

    The same value `datetime(year, month, day, hh, mm, ss, tzinfo=UTC).timestamp() + frac`
    gives, for the year asked or, without one, the year around `received_at` that puts the
    time nearest to it (this year, last year, next year: the first of equals wins). What is
    cached: the UTC year `received_at` falls in, and the unix time of each date's midnight.
    """

    _MAX_DATES = 4096
    # A time this near `received_at` is the nearest of its candidates: the others are a year
    # (365 days or more) away from it, so more than 185 days from `received_at`.
    _NEAR_S = 180 * 86400.0

    def __init__(self) -> None:
        # [start, end) in unix seconds away from whose ends the year of a time is `year`
        self._span = (1.0, 0.0, 1970)
        self._midnights: dict[tuple[int, int, int], float | None] = {}
        self._stamps: dict[str, float] = {}  # "Mar 10 11:59:58" -> the time last found for it

    def of_stamp(self, stamp: str, received_at: float) -> float | None:
        """`stamp` in the `_FAST_STAMP` shape as unix seconds: `stamp` without a year.

        The same timestamp text arrives many times a second at high rates: the time found
        for it is kept while it stays near enough to `received_at` to be the answer again.
        """
        known = self._stamps.get(stamp)
        near = self._NEAR_S
        if known is not None and -near < known - received_at < near:
            return known
        m = _FAST_STAMP.fullmatch(stamp)
        month = None if m is None else _MONTHS.get(m.group(1).lower())
        if m is None or month is None:
            return None
        day, hh, mm, ss = (int(g) for g in m.group(2, 3, 4, 5))
        found = self.stamp(None, month, day, hh, mm, ss, received_at)
        if found is not None:
            if len(self._stamps) >= self._MAX_DATES:
                self._stamps.clear()
            self._stamps[stamp] = found
        return found

    def stamp(
        self,
        year: int | None,
        month: int,
        day: int,
        hh: int,
        mm: int,
        ss: int,
        received_at: float,
        frac: float = 0.0,
    ) -> float | None:
        """None when no candidate year has that date and time (Feb 30, 25:00:00)."""
        if hh > 23 or mm > 59 or ss > 59:
            return None
        seconds = hh * 3600 + mm * 60 + ss
        if year is not None:
            midnight = self._midnight(year, month, day)
            return None if midnight is None else midnight + seconds + frac
        this = self._year_of(received_at)
        best: float | None = None
        for candidate in (this, this - 1, this + 1):
            midnight = self._midnight(candidate, month, day)
            if midnight is None:
                continue
            stamp = midnight + seconds + frac
            if best is None or abs(stamp - received_at) < abs(best - received_at):
                best = stamp
        return best

    def _year_of(self, t: float) -> int:
        start, end, year = self._span
        # A second's margin: near New Year, `fromtimestamp` rounding decides, as it did.
        if start + 1.0 <= t < end - 1.0:
            return year
        try:
            year = dt.datetime.fromtimestamp(t, dt.UTC).year
        except (ValueError, OverflowError, OSError):
            return 1970
        first = self._midnight(year, 1, 1)
        after = self._midnight(year + 1, 1, 1)
        if first is not None and after is not None:
            self._span = (first, after, year)
        return year

    def _midnight(self, year: int, month: int, day: int) -> float | None:
        key = (year, month, day)
        try:
            return self._midnights[key]
        except KeyError:
            pass
        try:
            midnight: float | None = dt.datetime(year, month, day, tzinfo=dt.UTC).timestamp()
        except (ValueError, OverflowError):
            midnight = None
        if len(self._midnights) >= self._MAX_DATES:
            self._midnights.clear()
        self._midnights[key] = midnight
        return midnight


_DATES = _Dates()


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


def _configured() -> Any:
    """The compiled reader (`notifier/_speedups.c`), given what it builds Records with; None
    when it was built for other Record fields than these (it fills each one; the tests say
    so: `test_the_compiled_reader_is_built_and_used`)."""
    if native is None or set(native.RECORD_FIELDS) != {f.name for f in fields(Record)}:
        return None
    native.configure(
        Record,
        Kind.LOG,
        tuple(_BY_PRI[str(pri)] for pri in range(192)),
        _DATES.of_stamp,
        _procid_extras,
        _PROCID_EXTRAS,
        _NO_EXTRAS,
        _NO_EXTRAS,  # no labels: the same empty mapping `new_record` gives
        _one_line,
    )
    return native


_native = _configured()
