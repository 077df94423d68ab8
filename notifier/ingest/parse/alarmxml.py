"""innovaphone alarm / event records carried as XML inside a log message.

The element names are not public, so this reads leniently: any root element, with the fields
(type, severity, active, code, date, host, serial, source, text, xsl, details) as attributes or
as child elements of that name, in any letter case. defusedxml refuses entity expansion and
external entities: the XML comes from the network.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

from notifier.records import (
    Kind,
    ParseError,
    Record,
    Severity,
    SeverityScheme,
    UnknownSeverity,
    frozen_extras,
    parse_severity,
)

FIELDS = ("type", "severity", "active", "code", "date", "host", "serial", "source", "text", "xsl")

# Something that claims to be an alarm record: a tag carrying a type/code attribute or element.
_LOOKS_LIKE_ALARM = re.compile(r"<\s*[\w:.-]+[^<>]*\b(?:type|code)\s*=|<\s*(?:type|code)\s*>", re.I)
_FIRST_TAG = re.compile(r"<[A-Za-z_]")
_MAX_XML_CHARS = 65536
_FALSE = frozenset({"false", "0", "no", "off", "inactive"})
# innovaphone details nest a few levels. ElementTree serialises with one Python call per level,
# so details nested near the recursion limit (1,000) would fail: deeper ones are kept as text.
MAX_DETAILS_DEPTH = 64


@dataclass(frozen=True, slots=True)
class AlarmFields:
    """The fields of one alarm record as the device wrote them (strings, "" when absent)."""

    type: str = ""
    severity: str = ""
    active: str = ""
    code: str = ""
    date: str = ""
    host: str = ""
    serial: str = ""
    source: str = ""
    text: str = ""
    xsl: str = ""
    details: str = ""  # the inner XML of the details element, as text
    details_error: str = ""  # why `details` holds only the text of the element, "" when whole


def alarm_kind(type_: str, active: str = "") -> Kind:
    """error → EVENT; clear, or not active → CLEAR; anything else → ALARM."""
    t = type_.strip().lower()
    if t == "error":
        return Kind.EVENT
    if t == "clear" or active.strip().lower() in _FALSE:
        return Kind.CLEAR
    return Kind.ALARM


def parse_alarm_xml(text: str) -> AlarmFields | None:
    """The alarm record in `text`, or None when it holds no innovaphone alarm XML.

    Raises `ParseError("bad_xml", ...)` when the text looks like an alarm record (a tag with a
    type or code) but is not well-formed XML; the caller keeps such a message as a log line.
    """
    start = _FIRST_TAG.search(text)
    if start is None:
        return None
    stop = text.rfind(">")
    # Without a closing ">" the record was cut off: still look, to say so.
    snippet = text[start.start() : stop + 1] if stop > start.start() else text[start.start() :]
    if not _LOOKS_LIKE_ALARM.search(snippet):
        return None
    if len(snippet) > _MAX_XML_CHARS:
        raise ParseError("bad_xml", f"alarm XML of {len(snippet)} characters is too long")
    try:
        root = fromstring(snippet)
    except (ET.ParseError, DefusedXmlException, ValueError) as e:
        raise ParseError("bad_xml", f"alarm XML does not parse: {str(e)[:120]}") from None
    for element in (root, *list(root)):
        fields = _fields(element)
        if fields.type or fields.code:
            return fields
    return None


def _fields(element: ET.Element) -> AlarmFields:
    found: dict[str, str] = {}
    for name, value in element.attrib.items():
        key = _local(name).lower()
        if key in FIELDS or key == "details":
            found.setdefault(key, value.strip())
    for child in element:
        key = _local(child.tag).lower() if isinstance(child.tag, str) else ""
        if key == "details":
            found["details"], found["details_error"] = _inner_xml(child)
        elif key in FIELDS and key not in found:
            found[key] = "".join(child.itertext()).strip()
    if "text" not in found and element.text and element.text.strip():
        # <alarm code="..." ...>Registration down</alarm>: the element's own text is the text.
        found["text"] = element.text.strip()
    return AlarmFields(**found)


def _local(name: str) -> str:
    """`{namespace}name` → `name`."""
    return name.rsplit("}", 1)[-1]


def _inner_xml(element: ET.Element) -> tuple[str, str]:
    """The inner XML of `element` and ""; or, nested deeper than `MAX_DETAILS_DEPTH`, only its
    text content and the reason (the alarm matters more than the shape of its details)."""
    depth = _depth(element, MAX_DETAILS_DEPTH)
    if depth > MAX_DETAILS_DEPTH:
        text = "".join(element.itertext()).strip()  # iterative: safe at any depth
        reason = f"details nest more than {MAX_DETAILS_DEPTH} elements deep: kept as text only"
        return text, reason
    parts = [element.text or ""]
    for child in element:
        # tostring includes the child's tail text, which is what inner XML means.
        parts.append(ET.tostring(child, encoding="unicode"))
    return "".join(parts).strip(), ""


def _depth(element: ET.Element, limit: int) -> int:
    """How many levels of elements `element` holds, counted without recursion; stops counting
    past `limit`."""
    deepest = 0
    level = [element]
    while level and deepest <= limit:
        level = [child for node in level for child in node]
        if level:
            deepest += 1
    return deepest


def with_alarm(record: Record, scheme: SeverityScheme = SeverityScheme.EVENTS_API) -> Record:
    """`record` (a log line) as the alarm / clear / event its text carries, if it carries one.

    Never fails: XML that does not parse leaves a log record with ``extras["xml_error"]``;
    details nested too deep are kept as their text, with ``extras["details_error"]``.
    """
    if "<" not in record.text:
        return record
    try:
        fields = parse_alarm_xml(record.text)
    except ParseError as e:
        return record.evolve(extras=frozen_extras({**record.extras, "xml_error": str(e)}))
    if fields is None:
        return record
    return alarm_record(fields, record, scheme)


def alarm_record(
    fields: AlarmFields, base: Record, scheme: SeverityScheme = SeverityScheme.EVENTS_API
) -> Record:
    """`base` (what the transport told: sender, raw, times, host) turned into the alarm record.

    An unknown severity does not drop the alarm: it becomes INDETERMINATE, the value is kept in
    `severity_raw` and the reason in ``extras["severity_error"]``.
    """
    kind = alarm_kind(fields.type, fields.active)
    extras = dict(base.extras)
    for name, value in (("type", fields.type), ("active", fields.active), ("xsl", fields.xsl)):
        if value:
            extras[name] = value
    if fields.details_error:
        extras["details_error"] = fields.details_error
    if fields.source and base.source:
        extras["tag"] = base.source
    if fields.severity:
        try:
            severity = parse_severity(fields.severity, scheme)
        except UnknownSeverity as e:
            severity = Severity.INDETERMINATE
            extras["severity_error"] = str(e)
    else:
        severity = Severity.INFO if kind is Kind.CLEAR else Severity.INDETERMINATE
    device_time = _unix_time(fields.date)
    if device_time is None and fields.date:
        extras["date"] = fields.date
    return base.evolve(
        kind=kind,
        severity=severity,
        severity_raw=fields.severity,
        code=fields.code,
        device=fields.host or base.device,
        serial=fields.serial,
        source=fields.source or base.source,
        text=fields.text,
        details=fields.details,
        device_time=device_time if device_time is not None else base.device_time,
        extras=frozen_extras(extras),
    )


def _unix_time(value: str) -> float | None:
    """Unix seconds as the Events API sends them; 0 means the device clock was not set."""
    try:
        seconds = float(value)
    except ValueError:
        return None
    if not math.isfinite(seconds) or seconds <= 0:
        return None
    return seconds
