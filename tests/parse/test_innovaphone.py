"""innovaphone form fields (HTTP log server / alarm forwarding) → Record."""

from __future__ import annotations

import datetime as dt
from urllib.parse import urlencode

import pytest
from hypothesis import given
from hypothesis import strategies as st

from notifier.ingest.parse.innovaphone import form_fields, parse_form
from notifier.records import Kind, ParseError, Record, Severity, SeverityScheme

SENDER = "192.0.2.7:40001"


def parse(data: bytes | str, scheme: SeverityScheme = SeverityScheme.EVENTS_API) -> Record:
    return parse_form(data, received_at=1000.0, sender=SENDER, receiver="http", scheme=scheme)


def test_log_line_from_external_get_query() -> None:
    raw = (
        b"event=syslog&time=1700000000&date=20231114-221320&from=IP24-1d-00-8d"
        b"&msg=LOG_HTTP+3+TCP-Up+172.16.10.14%3A7793+172.16.0.17%3A471"
    )
    record = parse(raw)
    assert record.kind is Kind.LOG
    assert record.text == "LOG_HTTP 3 TCP-Up 172.16.10.14:7793 172.16.0.17:471"
    assert record.device == "IP24-1d-00-8d"
    assert record.device_time == 1700000000.0
    assert record.severity is Severity.INFO
    assert record.sender == SENDER
    assert record.receiver == "http"
    assert record.received_at == 1000.0
    assert record.raw == raw
    assert dict(record.extras) == {"date": "20231114-221320"}


def test_runs_of_spaces_in_msg_are_kept_whether_plus_or_percent_encoded() -> None:
    record = parse("event=syslog&from=gw&msg=A++B%20%20%20C+%2B+D")
    assert record.text == "A  B   C + D"


def test_leading_question_mark_and_trailing_newline_are_ignored() -> None:
    record = parse(b"?event=syslog&from=gw&msg=hello\r\n")
    assert record.text == "hello"
    assert record.device == "gw"


def test_time_zero_means_clock_not_set_and_keeps_the_device_value() -> None:
    record = parse("event=syslog&time=0&date=19700101-000005&from=gw&msg=boot")
    assert record.device_time is None
    assert record.extras["time"] == "0"
    assert record.extras["date"] == "19700101-000005"


def test_date_is_the_fallback_device_time_read_as_utc() -> None:
    record = parse("event=syslog&date=20240102-030405&from=gw&msg=x")
    expected = dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC).timestamp()
    assert record.device_time == expected


def test_device_falls_back_to_sender_address() -> None:
    assert parse("event=syslog&msg=x").device == "192.0.2.7"
    v6 = parse_form("msg=x", received_at=1.0, sender="[2001:db8::1]:5000", receiver="http")
    assert v6.device == "2001:db8::1"


def test_gateway_cdr_event_becomes_an_event_with_its_name_as_source() -> None:
    record = parse("event=A:Call&time=1700000000&from=gw&msg=cgpn%3D123+cdpn%3D456&dur=12")
    assert record.kind is Kind.EVENT
    assert record.source == "A:Call"
    assert record.text == "cgpn=123 cdpn=456"
    assert record.extras["dur"] == "12"


def test_unknown_fields_are_kept_in_extras() -> None:
    record = parse("event=syslog&from=gw&msg=x&Class=3&hw=IP811")
    assert dict(record.extras) == {"class": "3", "hw": "IP811"}


def test_events_api_alarm_fields_as_a_form() -> None:
    record = parse(
        "type=alarm&code=0x00010002&severity=2&host=IP0011-42-04-a7&serial=009033000000"
        "&source=RELAY%2FRECH&text=Registration+down&details=%3Crelay+prot%3D%22SH323%22%2F%3E"
        "&time=1700000000&xsl=alarm.xsl"
    )
    assert record.kind is Kind.ALARM
    assert record.code == "0x00010002"
    assert record.severity is Severity.MAJOR
    assert record.severity_raw == "2"
    assert record.device == "IP0011-42-04-a7"
    assert record.serial == "009033000000"
    assert record.source == "RELAY/RECH"
    assert record.text == "Registration down"
    assert record.details == '<relay prot="SH323"/>'
    assert record.device_time == 1700000000.0
    assert record.extras["xsl"] == "alarm.xsl"
    assert record.alarm_key == ("IP0011-42-04-a7", "0x00010002", "RELAY/RECH")


def test_numeric_severity_follows_the_configured_scheme() -> None:
    form = "type=alarm&code=0x1&severity=1&text=t"
    assert parse(form).severity is Severity.INDETERMINATE
    assert parse(form, SeverityScheme.SDK).severity is Severity.MAJOR


def test_clear_and_error_types() -> None:
    assert parse("type=clear&code=0x1&text=up").kind is Kind.CLEAR
    assert parse("type=error&code=0x1&text=oops").kind is Kind.EVENT
    assert parse("type=alarm&active=false&code=0x1&text=up").kind is Kind.CLEAR


def test_unknown_severity_in_a_form_keeps_the_alarm_as_indeterminate() -> None:
    record = parse("type=alarm&code=0x1&severity=Apocalyptic&text=t")
    assert record.kind is Kind.ALARM
    assert record.severity is Severity.INDETERMINATE
    assert record.severity_raw == "Apocalyptic"
    assert "Apocalyptic" in record.extras["severity_error"]


def test_alarm_xml_in_msg_becomes_the_alarm() -> None:
    xml = '<alarm type="alarm" code="0x00010002" severity="Major" source="IP" text="Link down"/>'
    record = parse(urlencode({"event": "syslog", "from": "gw", "msg": xml}))
    assert record.kind is Kind.ALARM
    assert record.code == "0x00010002"
    assert record.severity is Severity.MAJOR
    assert record.text == "Link down"
    assert record.device == "gw"


def test_text_without_type_is_a_one_shot_event() -> None:
    record = parse("text=Disk+almost+full&host=nas")
    assert record.kind is Kind.EVENT
    assert record.text == "Disk almost full"
    assert record.extras["host"] == "nas"


def test_invalid_utf8_is_replaced_not_refused_and_raw_is_kept() -> None:
    raw = b"event=syslog&from=gw&msg=M%FCller"
    record = parse(raw)
    assert record.text == "M\ufffdller"
    assert record.raw == raw


@pytest.mark.parametrize("data", [b"", b"?", b"event=syslog&time=1&from=gw", b"hello", b"msg="])
def test_nothing_usable_is_refused_naming_the_expected_fields(data: bytes) -> None:
    with pytest.raises(ParseError) as info:
        parse(data)
    assert info.value.reason == "empty"
    assert "msg" in str(info.value) and "type" in str(info.value)


def test_form_fields_first_value_wins_and_names_are_case_insensitive() -> None:
    assert form_fields(b"MSG=a&msg=b&x") == {"msg": "a", "x": ""}


@given(st.binary(max_size=300))
def test_arbitrary_bytes_give_a_record_or_a_parse_error(data: bytes) -> None:
    try:
        record = parse(data)
    except ParseError as e:
        assert e.reason
    else:
        assert record.raw == data


@given(
    st.dictionaries(
        st.sampled_from(
            [
                "event",
                "time",
                "date",
                "from",
                "msg",
                "type",
                "code",
                "severity",
                "active",
                "host",
                "text",
                "details",
                "serial",
                "source",
                "xsl",
                "zz",
            ]
        ),
        st.text(max_size=40),
        max_size=8,
    )
)
def test_arbitrary_field_values_give_a_record_or_a_parse_error(fields: dict[str, str]) -> None:
    try:
        parse(urlencode(fields))
    except ParseError as e:
        assert e.reason
