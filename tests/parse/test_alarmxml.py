"""innovaphone XML alarm records inside syslog messages become alarm / clear / event Records."""

from __future__ import annotations

import pytest

from notifier.ingest.parse.alarmxml import AlarmFields, parse_alarm_xml
from notifier.ingest.parse.syslog import parse_syslog
from notifier.records import Kind, Severity, SeverityScheme

NOW = 1_773_144_000.0


def syslog(message: str, scheme: SeverityScheme = SeverityScheme.EVENTS_API):  # type: ignore[no-untyped-def]
    return parse_syslog(
        b"<134>" + message.encode(),
        received_at=NOW,
        sender="192.0.2.7:514",
        receiver="syslog-udp",
        scheme=scheme,
    )


def test_alarm_in_attributes_becomes_an_alarm_record() -> None:
    r = syslog(
        'Mar 10 11:00:00 IP0011 ALARM: <alarm type="alarm" severity="2" active="true" '
        'code="0x00010002" date="1773140400" host="IP0011-42-04-a7" serial="009033000000" '
        'source="RELAY/RECH" text="Registration down" xsl="reg.xsl">'
        '<details><relay prot="SH323"/><peer>gk1</peer></details></alarm>'
    )
    assert r.kind is Kind.ALARM
    assert (r.severity, r.severity_raw) == (Severity.MAJOR, "2")
    assert (r.code, r.device, r.serial, r.source) == (
        "0x00010002",
        "IP0011-42-04-a7",
        "009033000000",
        "RELAY/RECH",
    )
    assert r.text == "Registration down"
    assert r.details == '<relay prot="SH323" /><peer>gk1</peer>'
    assert r.device_time == 1773140400.0
    assert r.facility == 16
    assert dict(r.extras) == {"type": "alarm", "active": "true", "xsl": "reg.xsl", "tag": "ALARM"}


def test_child_elements_with_clear_type_make_a_clear() -> None:
    r = syslog(
        "<event><type>clear</type><severity>Major</severity><code>0x00010002</code>"
        "<source>RELAY/RECH</source><text>Registration up</text></event>"
    )
    assert (r.kind, r.severity, r.code, r.text) == (
        Kind.CLEAR,
        Severity.MAJOR,
        "0x00010002",
        "Registration up",
    )
    assert r.device == "192.0.2.7"  # no host in the record: the sender


@pytest.mark.parametrize(
    ("attrs", "kind"),
    [
        ('type="error"', Kind.EVENT),
        ('type="alarm" active="false"', Kind.CLEAR),
        ('type="clear"', Kind.CLEAR),
        ('type="alarm"', Kind.ALARM),
        ('severity="Major"', Kind.ALARM),
    ],
)
def test_type_and_active_decide_the_kind(attrs: str, kind: Kind) -> None:
    assert syslog(f"<a {attrs} code='0x1'/>").kind is kind


def test_severity_numbers_follow_the_configured_scheme() -> None:
    assert syslog('<a type="alarm" code="1" severity="2"/>').severity is Severity.MAJOR
    sdk = syslog('<a type="alarm" code="1" severity="2"/>', SeverityScheme.SDK)
    assert sdk.severity is Severity.CRITICAL


def test_unknown_severity_keeps_the_alarm_as_indeterminate() -> None:
    r = syslog('<alarm type="alarm" code="0x7" severity="purple"/>')
    assert (r.kind, r.severity, r.severity_raw) == (Kind.ALARM, Severity.INDETERMINATE, "purple")
    assert "purple" in r.extras["severity_error"]


def test_broken_alarm_xml_stays_a_log_line_with_its_text() -> None:
    r = syslog('<alarm type="alarm" code="0x7" text="cut off')
    assert r.kind is Kind.LOG
    assert r.text == '<alarm type="alarm" code="0x7" text="cut off'
    assert "does not parse" in r.extras["xml_error"]


def test_entity_expansion_is_refused_not_expanded() -> None:
    bomb = (
        '<!DOCTYPE a [<!ENTITY x "xxxxxxxxxx"><!ENTITY y "&x;&x;&x;&x;">]>'
        '<alarm type="alarm" code="1" text="&y;"/>'
    )
    r = syslog(bomb)
    assert r.kind is Kind.LOG
    assert "xml_error" in r.extras


def test_angle_brackets_that_are_no_alarm_are_just_text() -> None:
    r = syslog("user <john> logged in")
    assert (r.kind, r.text, dict(r.extras)) == (Kind.LOG, "user <john> logged in", {})
    assert parse_alarm_xml("<b>bold</b>") is None
    assert parse_alarm_xml("no xml") is None


def test_fields_read_case_insensitively_from_a_nested_record() -> None:
    assert parse_alarm_xml('<log><Alarm Type="alarm" CODE="0x2" Host="h"/></log>') == AlarmFields(
        type="alarm", code="0x2", host="h"
    )
