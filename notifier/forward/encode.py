"""Records in the shapes other servers read: innovaphone HTTP fields, syslog lines, alarm XML.

Pure functions, no I/O. Every shape carries the hop marker: the names of the notifier
instances a record was forwarded by, so a notifier never forwards again what already passed
through it (a loop of forwards stops after one round).

- RFC 5424: an SD element ``[notifier@32473 hop="a,b"]``; the receiving parser keeps it as
  ``extras["sd.notifier@32473.hop"]``.
- RFC 3164 has no structured data: the same element written at the start of the message
  text, found again in the raw bytes the record keeps.
- HTTP: a form field ``notifier_hop``; the receiving parser keeps unknown fields in `extras`.

Alarms, clears and events travel as one XML element whose attributes are the Events API
fields (the shape `notifier.ingest.parse.alarmxml` reads back to the same fields)::

    <alarm type="alarm" severity="major" severity_raw="2" code="0x00010002" date="1764496800"
     host="gw01" serial="009033000000" source="RELAY/RECH" text="Registration down">
     <details><relay prot="SH323"/></details></alarm>
"""

from __future__ import annotations

import datetime as dt
import functools
import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from urllib.parse import quote_plus
from xml.sax.saxutils import escape, quoteattr

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

from notifier.records import Kind, Record, Severity

# 32473 is the private enterprise number RFC 5612 reserves for examples and documentation.
HOP_SD_ID = "notifier@32473"
HOP_FIELD = "notifier_hop"
_HOP_EXTRAS = (f"sd.{HOP_SD_ID}.hop", HOP_FIELD)
_HOP_IN_RAW = re.compile(rb"\[" + re.escape(HOP_SD_ID.encode()) + rb' hop="((?:[^"\\]|\\.)*)"\]')

# Syslog severity for our normalised severities (innovaphone devices always send 6).
_SYSLOG_SEVERITY = {
    Severity.CRITICAL: 2,
    Severity.MAJOR: 3,
    Severity.MINOR: 4,
    Severity.WARNING: 4,
    Severity.INDETERMINATE: 5,
    Severity.INFO: 6,
}
_TYPE = {Kind.ALARM: "alarm", Kind.CLEAR: "clear", Kind.EVENT: "error"}
# Characters XML 1.0 cannot carry at all, even escaped.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_NOT_PRINTUSASCII = re.compile(r"[^\x21-\x7e]")
_TAG_CHARS = re.compile(r"[^\w./-]")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


# --- hop marker ---------------------------------------------------------------------------------


def hops_of(record: Record) -> tuple[str, ...]:
    """The instances `record` was forwarded by, oldest first (empty: it came from a device)."""
    for key in _HOP_EXTRAS:
        if value := record.extras.get(key):
            return _split_hops(value)
    # RFC 3164 carries the marker in the text; alarm parsing replaces the text, raw keeps it.
    if HOP_SD_ID.encode() in record.raw:
        found = _HOP_IN_RAW.search(record.raw)
        if found is not None:
            return _split_hops(_sd_unescape(found.group(1).decode("utf-8", "replace")))
    return ()


def passed_through(record: Record, instance: str) -> bool:
    """Whether `instance` forwarded `record` before: then forwarding it again would loop."""
    return instance in hops_of(record)


def next_hops(record: Record, instance: str) -> str:
    """The marker value `instance` sends `record` on with: earlier hops, then itself."""
    return ",".join((*hops_of(record), instance))


def _split_hops(value: str) -> tuple[str, ...]:
    return tuple(h.strip() for h in value.split(",") if h.strip())


def _sd_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def _sd_unescape(value: str) -> str:
    return re.sub(r'\\(["\\\]])', r"\1", value)


@functools.lru_cache(maxsize=256)
def hop_element(hops: str) -> str:
    """The SD element that carries the hop marker (a few distinct values: cached)."""
    return f'[{HOP_SD_ID} hop="{_sd_escape(hops)}"]'


# --- alarm XML ----------------------------------------------------------------------------------


def is_alarm_like(record: Record) -> bool:
    """Alarms, clears and Events API events travel as alarm fields; log lines and gateway
    CDR events (an event name as source, no code) as the device's log fields."""
    if record.kind in (Kind.ALARM, Kind.CLEAR):
        return True
    if record.kind is Kind.EVENT:
        return bool(record.code or record.extras.get("type") or not record.source)
    return False


def alarm_fields(record: Record) -> dict[str, str]:
    """The Events API fields of an alarm, clear or event, "" left out; severity as a name,
    the value the device sent as `severity_raw`."""
    fields = {
        "type": _TYPE.get(record.kind, "error"),
        "severity": record.severity.value,
        "severity_raw": record.severity_raw,
        "code": record.code,
        "date": _seconds(record.time),
        "host": record.device,
        "serial": record.serial,
        "source": record.source,
        "text": record.text,
        "xsl": record.extras.get("xsl", ""),
    }
    return {k: _xml_safe(v) for k, v in fields.items() if v}


def alarm_xml(record: Record) -> str:
    """One XML element that `notifier.ingest.parse.alarmxml` reads back to the same fields.

    Details that are well-formed XML go in as they are; anything else as escaped text."""
    attributes = " ".join(f"{k}={quoteattr(v)}" for k, v in alarm_fields(record).items())
    details = _xml_safe(record.details)
    inner = f"<details>{_details_xml(details)}</details>" if details else ""
    return f"<alarm {attributes}>{inner}</alarm>" if inner else f"<alarm {attributes}/>"


def _details_xml(details: str) -> str:
    try:
        fromstring(f"<details>{details}</details>")
    except (ET.ParseError, DefusedXmlException, ValueError):
        return escape(details)
    return details


def _xml_safe(text: str) -> str:
    return _NOT_XML.sub("\ufffd", text)


def _seconds(t: float) -> str:
    """Unix seconds, whole when whole: what the Events API sends."""
    return str(int(t)) if t == int(t) else repr(t)


# --- syslog -------------------------------------------------------------------------------------


def syslog_severity(record: Record) -> int:
    """The syslog severity: the sender's own for a syslog line, else from the severity."""
    raw = record.severity_raw
    if record.kind is Kind.LOG and len(raw) == 1 and raw in "01234567":
        return int(raw)
    return _SYSLOG_SEVERITY[record.severity]


def syslog_message(record: Record) -> str:
    """The MSG part: alarm XML for alarms, clears and events; the text for log lines."""
    return alarm_xml(record) if is_alarm_like(record) else record.text


def syslog_line(
    record: Record,
    *,
    facility_class: int,
    hops: str,
    rfc5424: bool = True,
) -> str:
    """One syslog message (without framing) for facility local<class>.

    RFC 5424 carries the hop marker as structured data; RFC 3164 at the start of the text.
    """
    pri = (16 + facility_class) * 8 + syslog_severity(record)
    host = _header_token(record.device, 255)
    message = syslog_message(record)
    seconds = math.floor(record.time)
    if rfc5424:
        app = _header_token(record.source, 48)
        procid = _header_token(record.extras.get("procid", ""), 128)
        micros = min(round((record.time - seconds) * 1e6), 999_999)
        stamp = f"{_stamp_5424(seconds)}.{micros:06d}Z"
        return f"<{pri}>1 {stamp} {host} {app} {procid} - {hop_element(hops)} {message}"
    # RFC 3164: the tag is at most 32 characters of what syslog calls the program name.
    tag = _TAG_CHARS.sub("_", record.source)[:32] or "notifier"
    return f"<{pri}>{_stamp_3164(seconds)} {host} {tag}: {hop_element(hops)} {message}"


# Records come in bursts of the same second: the formatted second is cached.
@functools.lru_cache(maxsize=1024)
def _stamp_5424(seconds: int) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")


@functools.lru_cache(maxsize=1024)
def _stamp_3164(seconds: int) -> str:
    when = dt.datetime.fromtimestamp(seconds, dt.UTC)
    return f"{_MONTHS[when.month - 1]} {when.day:2d} {when:%H:%M:%S}"


def _header_token(value: str, limit: int) -> str:
    """A header field of RFC 5424 (PRINTUSASCII, no space), "-" when empty."""
    if value.isascii() and value.isprintable() and " " not in value:
        return value[:limit] or "-"  # the usual case, without a regex
    return _NOT_PRINTUSASCII.sub("_", value)[:limit] or "-"


def frame(message: str, octet_counted: bool) -> bytes:
    """A message as one TCP/TLS frame: RFC 6587 octet counting, or ended by LF (a line break
    inside the message would end the frame early, so it becomes a space)."""
    data = message.encode("utf-8")
    if octet_counted:
        return b"%d %s" % (len(data), data)
    return data.replace(b"\r\n", b" ").replace(b"\n", b" ") + b"\n"


# --- innovaphone HTTP ---------------------------------------------------------------------------


def http_fields(record: Record, hops: str) -> dict[str, str]:
    """The fields an innovaphone device sends (event, time, date, from, msg), plus the Events
    API fields for alarms, clears and events, plus the hop marker."""
    alarm = is_alarm_like(record)
    fields = {
        # Log lines and alarms are event=syslog on the device; a gateway CDR names its event.
        "event": "syslog" if alarm or record.kind is Kind.LOG else record.source,
        "time": str(int(record.time)),
        "date": dt.datetime.fromtimestamp(record.time, dt.UTC).strftime("%Y%m%d-%H%M%S"),
        "from": record.device,
        "msg": record.text,
    }
    if alarm:
        # `date` stays the device's YYYYMMDD-HHMMSS: the alarm's time is in `time` already.
        fields.update({k: v for k, v in alarm_fields(record).items() if k != "date"})
        if record.details:
            fields["details"] = record.details
    fields[HOP_FIELD] = hops
    return {k: v for k, v in fields.items() if v}


def form_body(fields: Mapping[str, str]) -> str:
    """``k=v&k=v``, the External(POST) body and the External(GET) query."""
    return "&".join(f"{quote_plus(k)}={quote_plus(v)}" for k, v in fields.items())
