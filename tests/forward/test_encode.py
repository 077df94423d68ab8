"""The shapes a forward sends, read back by notifier's own parsers: the same fields arrive."""

from __future__ import annotations

import pytest

from notifier.forward.encode import (
    alarm_xml,
    form_body,
    frame,
    hops_of,
    http_fields,
    next_hops,
    passed_through,
    syslog_line,
)
from notifier.ingest.parse.alarmxml import parse_alarm_xml
from notifier.ingest.parse.innovaphone import parse_form
from notifier.ingest.parse.syslog import parse_syslog
from notifier.records import Kind, Record, Severity

T = 1764496800.0  # 2025-11-30 10:00:00 UTC


def alarm(kind: Kind = Kind.ALARM, **changes: object) -> Record:
    base = Record(
        kind=kind,
        received_at=T + 5,
        sender="192.0.2.7:40000",
        receiver="http",
        raw=b"",
        text='Registration down "quoted" & <angled>\nsecond line',
        device="gw01",
        serial="009033000000",
        code="0x00010002",
        severity=Severity.MAJOR if kind is Kind.ALARM else Severity.INFO,
        severity_raw="2",
        source="RELAY/RECH",
        details='<relay prot="SH323" />',  # as notifier's parser writes it
        device_time=T,
    )
    return base.evolve(**changes)


def log_line(**changes: object) -> Record:
    """An innovaphone syslog line (an alarm's fields emptied, syslog's set)."""
    base = alarm(Kind.LOG).evolve(
        receiver="syslog-udp",
        text="LOG_HTTP 3 TCP-Up  172.16.10.14:7793 172.16.0.17:471",
        serial="",
        code="",
        severity=Severity.INFO,
        severity_raw="6",
        source="gwlog",
        details="",
        facility=16,
    )
    return base.evolve(**changes)


SAME = ("kind", "severity", "code", "device", "serial", "source", "text", "details", "device_time")


def assert_same_fields(sent: Record, got: Record) -> None:
    assert {f: getattr(got, f) for f in SAME} == {f: getattr(sent, f) for f in SAME}


ALARMS = [
    alarm(),
    alarm(Kind.CLEAR),
    alarm(Kind.EVENT, severity=Severity.MINOR),
    alarm(details="not <xml", text="plain"),
    alarm(severity=Severity.CRITICAL, serial="", details=""),
]


@pytest.mark.parametrize("record", ALARMS, ids=lambda r: f"{r.kind}-{r.details[:3]}")
@pytest.mark.parametrize("rfc5424", [True, False], ids=["rfc5424", "rfc3164"])
def test_alarm_sent_by_syslog_parses_back_to_the_same_fields(record: Record, rfc5424: bool) -> None:
    line = syslog_line(record, facility_class=3, hops="a:8080", rfc5424=rfc5424)
    got = parse_syslog(line.encode(), received_at=T + 9, sender="127.0.0.1:1", receiver="x")
    assert_same_fields(record, got)
    assert got.facility == 19  # local3
    assert hops_of(got) == ("a:8080",)


@pytest.mark.parametrize("record", ALARMS, ids=lambda r: f"{r.kind}-{r.details[:3]}")
def test_alarm_sent_by_http_parses_back_to_the_same_fields(record: Record) -> None:
    body = form_body(http_fields(record, "a:8080"))
    got = parse_form(body, received_at=T + 9, sender="127.0.0.1:1", receiver="http")
    assert_same_fields(record, got)
    assert got.extras["severity_raw"] == "2"
    assert hops_of(got) == ("a:8080",)


def test_alarm_xml_is_what_the_alarm_parser_reads() -> None:
    fields = parse_alarm_xml(alarm_xml(alarm()))
    assert fields is not None
    assert (fields.type, fields.severity, fields.code, fields.date, fields.details) == (
        "alarm",
        "major",
        "0x00010002",
        "1764496800",
        '<relay prot="SH323" />',
    )


@pytest.mark.parametrize("rfc5424", [True, False], ids=["rfc5424", "rfc3164"])
def test_log_line_sent_by_syslog_keeps_text_host_and_severity(rfc5424: bool) -> None:
    record = log_line(severity_raw="3", severity=Severity.MAJOR)
    line = syslog_line(record, facility_class=0, hops="a", rfc5424=rfc5424)
    got = parse_syslog(line.encode(), received_at=T + 9, sender="127.0.0.1:1", receiver="x")
    assert (got.kind, got.device, got.source, got.severity_raw, got.facility) == (
        Kind.LOG,
        "gw01",
        "gwlog",
        "3",
        16,
    )
    assert got.text.endswith(record.text)
    assert hops_of(got) == ("a",)


def test_log_line_sent_by_http_is_the_device_fields() -> None:
    fields = http_fields(log_line(), "a")
    assert fields == {
        "event": "syslog",
        "time": "1764496800",
        "date": "20251130-100000",
        "from": "gw01",
        "msg": "LOG_HTTP 3 TCP-Up  172.16.10.14:7793 172.16.0.17:471",
        "notifier_hop": "a",
    }
    got = parse_form(form_body(fields), received_at=T, sender="127.0.0.1:1", receiver="http")
    assert (got.kind, got.text, got.device, got.device_time) == (
        Kind.LOG,
        log_line().text,
        "gw01",
        T,
    )


def test_gateway_cdr_event_keeps_its_event_name() -> None:
    cdr = log_line(kind=Kind.EVENT, source="A:Call", text="call 1 -> 2")
    fields = http_fields(cdr, "a")
    assert fields["event"] == "A:Call" and "type" not in fields
    got = parse_form(form_body(fields), received_at=T, sender="127.0.0.1:1", receiver="http")
    assert (got.kind, got.source, got.text) == (Kind.EVENT, "A:Call", "call 1 -> 2")


def test_hops_accumulate_and_a_notifier_recognises_its_own() -> None:
    once = parse_syslog(
        syslog_line(alarm(), facility_class=0, hops="a").encode(),
        received_at=T,
        sender="127.0.0.1:1",
        receiver="x",
    )
    assert next_hops(once, "b") == "a,b"
    assert passed_through(once, "a")
    assert not passed_through(once, "b")
    assert not passed_through(alarm(), "a")


def test_a_record_from_a_device_has_no_hops() -> None:
    got = parse_syslog(b'<134>hello [not@1 hop="x"]', received_at=T, sender="h", receiver="x")
    assert hops_of(got) == ()


def test_lf_framing_keeps_one_message_on_one_line() -> None:
    assert frame("a\nb\r\nc", octet_counted=False) == b"a b c\n"
    assert frame("a\nb", octet_counted=True) == b"3 a\nb"
