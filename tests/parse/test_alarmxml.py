"""innovaphone XML alarm records inside syslog messages become alarm / clear / event Records."""

from __future__ import annotations

import contextlib
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from notifier.ingest.parse.alarmxml import MAX_DETAILS_DEPTH, AlarmFields, parse_alarm_xml
from notifier.ingest.parse.innovaphone import parse_form
from notifier.ingest.parse.line import parse_line
from notifier.ingest.parse.syslog import parse_syslog
from notifier.records import Kind, ParseError, Severity, SeverityScheme

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


def test_the_alarm_elements_own_text_is_its_text_when_no_text_field_is_given() -> None:
    r = syslog('ALARM: <alarm type="alarm" code="0x00020001" host="pbx01">Trunk down</alarm>')
    assert (r.kind, r.device, r.text) == (Kind.ALARM, "pbx01", "Trunk down")
    both = syslog('<alarm code="0x1" text="from the field">from the element</alarm>')
    assert both.text == "from the field"


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


def deep_details(levels: int, tag: str = "a") -> str:
    """An alarm whose <details> nests `levels` elements, "leaf" in the innermost."""
    nested = f"<{tag}>" * levels + "leaf" + f"</{tag}>" * levels
    return (
        '<alarm type="alarm" severity="Major" code="0x00010002" source="RELAY/RECH" '
        f'text="Registration down"><details>{nested}</details></alarm>'
    )


def test_details_nested_1000_deep_keep_the_alarm_with_its_details_as_text() -> None:
    r = syslog(deep_details(1000))
    assert (r.kind, r.severity, r.code, r.text) == (
        Kind.ALARM,
        Severity.MAJOR,
        "0x00010002",
        "Registration down",
    )
    assert r.details == "leaf"
    assert "more than 64 elements deep" in r.extras["details_error"]


def test_details_at_the_depth_limit_stay_xml() -> None:
    r = syslog(deep_details(MAX_DETAILS_DEPTH))
    assert r.details == "<a>" * MAX_DETAILS_DEPTH + "leaf" + "</a>" * MAX_DETAILS_DEPTH
    assert "details_error" not in r.extras
    assert "details_error" in syslog(deep_details(MAX_DETAILS_DEPTH + 1)).extras


def test_deep_details_in_an_http_msg_field_keep_the_alarm() -> None:
    form = f"event=syslog&from=gw&msg={quote(deep_details(3000))}"
    r = parse_form(form, received_at=NOW, sender="192.0.2.7:80", receiver="http")
    assert (r.kind, r.code, r.details) == (Kind.ALARM, "0x00010002", "leaf")
    assert "details_error" in r.extras


_tags = st.sampled_from(["a", "details", "alarm", "text", "code", "x:y"])
_attrs = st.sampled_from(["", ' type="alarm"', ' code="0x1"', ' type="clear" code="2"', ' k="v"'])
# Where the deep chain goes: (opening tags around it, closing tags after it).
_places = st.sampled_from(
    [
        ('<alarm type="alarm" code="1"><details>', "</details></alarm>"),
        ('<alarm type="alarm" code="1"><details><p/>', "<p/></details></alarm>"),
        ('<event><type>alarm</type><code>2</code><details x="1">', "</details></event>"),
        ('<alarm type="alarm" code="1"><text>', "</text></alarm>"),
        ('<log><alarm code="3"><details>', "</details></alarm></log>"),
        ("", ""),
    ]
)


@st.composite
def deep_trees(draw: st.DrawFn) -> str:
    """Alarm-like XML with a chain of up to 9,000 nested elements in it, whole or cut off:
    in <details>, in other fields, around the record, among random elements."""
    before, after = draw(_places)
    outer = draw(st.lists(st.tuples(_tags, _attrs), max_size=3))
    levels = draw(st.integers(min_value=0, max_value=9000))
    tag = draw(_tags)
    leaf = draw(st.sampled_from(["", "leaf", "<b/>", "&amp;", "<alarm type='alarm' code='9'/>"]))
    text = (
        before
        + "".join(f"<{t}{a}>" for t, a in outer)
        + f"<{tag}>" * levels
        + leaf
        + f"</{tag}>" * levels
        + "".join(f"</{t}>" for t, _ in reversed(outer))
        + after
    )
    cut = draw(st.one_of(st.none(), st.integers(min_value=0, max_value=len(text))))
    return text if cut is None else text[:cut]


@settings(max_examples=200, deadline=None)
@given(xml=deep_trees())
def test_deep_trees_give_a_record_or_a_parse_error_in_every_parser(xml: str) -> None:
    form = b"event=syslog&msg=" + quote(xml).encode()
    for parse in (
        lambda: parse_alarm_xml(xml),
        lambda: syslog(xml),
        lambda: parse_line(xml.encode(), received_at=NOW, sender="192.0.2.7:1", receiver="tcp"),
        lambda: parse_form(form, received_at=NOW, sender="192.0.2.7:80", receiver="http"),
    ):
        with contextlib.suppress(ParseError):
            parse()
    # Any depth, whole or cut off: the message is kept, as an alarm or as a log line.
    assert syslog("x " + xml).raw == b"<134>x " + xml.encode()
