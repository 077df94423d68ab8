"""Syslog messages as devices send them become Records, field by field."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from notifier.ingest.parse.line import parse_line
from notifier.ingest.parse.syslog import parse_syslog
from notifier.records import Kind, ParseError, Record, Severity

NOW = dt.datetime(2026, 3, 10, 12, 0, 0, tzinfo=dt.UTC).timestamp()


def utc(
    year: int, month: int, day: int, hh: int = 0, mm: int = 0, ss: int = 0, *, micro: int = 0
) -> float:
    return dt.datetime(year, month, day, hh, mm, ss, micro, tzinfo=dt.UTC).timestamp()


def syslog(data: bytes, sender: str = "192.0.2.7:5140") -> Record:
    return parse_syslog(data, received_at=NOW, sender=sender, receiver="syslog-udp")


def test_rfc3164_with_host_tag_and_pid() -> None:
    r = syslog(b"<13>Mar 10 11:59:58 gw01 mytag[4242]: hello  world")
    assert r.kind is Kind.LOG
    assert (r.device, r.source, r.text) == ("gw01", "mytag", "hello  world")
    assert (r.facility, r.severity, r.severity_raw) == (1, Severity.INFO, "5")
    assert r.device_time == utc(2026, 3, 10, 11, 59, 58)
    assert dict(r.extras) == {"procid": "4242"}
    assert (r.sender, r.receiver, r.received_at) == ("192.0.2.7:5140", "syslog-udp", NOW)
    assert r.raw == b"<13>Mar 10 11:59:58 gw01 mytag[4242]: hello  world"


def test_rfc3164_december_message_received_in_january_is_last_year() -> None:
    r = parse_syslog(
        b"<13>Dec 31 23:59:59 gw01 tag: x",
        received_at=utc(2027, 1, 1, 0, 0, 5),
        sender="192.0.2.7",
        receiver="t",
    )
    assert r.device_time == utc(2026, 12, 31, 23, 59, 59)


def test_rfc3164_without_timestamp_keeps_the_whole_message_and_the_sender_as_device() -> None:
    r = syslog(b"<134>LOG_HTTP 3 TCP-Up 172.16.10.14:7793 172.16.0.17:471")
    assert r.text == "LOG_HTTP 3 TCP-Up 172.16.10.14:7793 172.16.0.17:471"
    assert (r.device, r.source, r.device_time) == ("192.0.2.7", "", None)
    # innovaphone: local0, severity always 6
    assert (r.facility, r.severity_raw, r.severity) == (16, "6", Severity.INFO)


@pytest.mark.parametrize(
    ("data", "source", "procid", "text"),
    [
        (
            b"<166>%ASA-6-302014: Teardown TCP connection 76118",
            "%ASA-6-302014",
            "",
            "Teardown TCP connection 76118",
        ),
        (b"<14>myapp[42]: worker 3 restarted", "myapp", "42", "worker 3 restarted"),
    ],
)
def test_message_without_timestamp_keeps_a_leading_tag_but_names_no_host(
    data: bytes, source: str, procid: str, text: str
) -> None:
    r = syslog(data)
    assert (r.device, r.source, r.extras.get("procid", ""), r.text) == (
        "192.0.2.7",
        source,
        procid,
        text,
    )


def test_rfc3164_with_year_and_iso_timestamps() -> None:
    with_year = syslog(b"<14>Mar  1 2025 18:46:11 host1 app: a")
    assert (with_year.device_time, with_year.device, with_year.text) == (
        utc(2025, 3, 1, 18, 46, 11),
        "host1",
        "a",
    )
    iso = syslog(b"<14>2025-03-01T18:46:11.250+01:00 host2 app: b")
    assert iso.device_time == utc(2025, 3, 1, 17, 46, 11) + 0.25
    assert (iso.device, iso.source, iso.text) == ("host2", "app", "b")


def test_cisco_sequence_number_and_unsynced_clock() -> None:
    r = syslog(b"<189>123: *Mar 10 11:46:11.123: %SYS-5-CONFIG_I: Configured from console")
    assert (r.facility, r.severity_raw, r.severity) == (23, "5", Severity.INFO)
    assert (r.source, r.text) == ("%SYS-5-CONFIG_I", "Configured from console")
    assert r.device_time == pytest.approx(utc(2026, 3, 10, 11, 46, 11) + 0.123)
    assert dict(r.extras) == {"sequence": "123", "clock_unsynced": "true"}


def test_rfc5424_with_structured_data_escapes_bom_and_offset() -> None:
    r = syslog(
        b"<165>1 2026-03-10T12:00:01.123456+02:00 host.example.com evntslog 77 ID47 "
        b'[exampleSDID@32473 iut="3" eventSource="App\\"li\\]ca\\\\tion"][origin ip="192.0.2.1"]'
        b" \xef\xbb\xbfAn application event"
    )
    assert (r.device, r.source, r.text) == ("host.example.com", "evntslog", "An application event")
    assert (r.facility, r.severity_raw, r.severity) == (20, "5", Severity.INFO)
    assert r.device_time == pytest.approx(utc(2026, 3, 10, 10, 0, 1, micro=123456))
    assert dict(r.extras) == {
        "sd.exampleSDID@32473.iut": "3",
        "sd.exampleSDID@32473.eventSource": 'App"li]ca\\tion',
        "sd.origin.ip": "192.0.2.1",
        "procid": "77",
        "msgid": "ID47",
    }


def test_rfc5424_nil_values_and_no_message() -> None:
    r = syslog(b"<11>1 - - - - - -", sender="[2001:db8::5]:514")
    assert (r.device, r.source, r.text, r.device_time) == ("2001:db8::5", "", "", None)
    assert (r.severity, r.severity_raw) == (Severity.MAJOR, "3")
    assert dict(r.extras) == {}


def test_rfc5424_zulu_time_with_nanoseconds() -> None:
    r = syslog(b"<14>1 2026-03-10T12:00:00.000000001Z h a - - - m")
    assert r.device_time == pytest.approx(utc(2026, 3, 10, 12, 0, 0), abs=1e-6)


def test_rfc5424_with_a_space_after_equals_in_sd_keeps_every_header_field() -> None:
    r = syslog(
        b"<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog 42 ID47 "
        b'[exampleSDID@32473 iut= "3" eventSource="Application"] An application event'
    )
    assert (r.device, r.source) == ("mymachine.example.com", "evntslog")
    assert r.device_time == pytest.approx(utc(2003, 10, 11, 22, 14, 15, micro=3000))
    # The unreadable element is not thrown away: it is the start of the text.
    assert r.text == '[exampleSDID@32473 iut= "3" eventSource="Application"] An application event'
    assert dict(r.extras) == {
        "procid": "42",
        "msgid": "ID47",
        "sd_error": 'SD-PARAM iut in [exampleSDID@32473] is not name="value"',
    }


def test_rfc5424_sd_error_keeps_what_was_read_before_it() -> None:
    r = syslog(b'<14>1 - gw01 app - - [ok x="1"][bad x="2" y] trunk down')
    assert (r.device, r.source, r.text) == ("gw01", "app", '[bad x="2" y] trunk down')
    assert dict(r.extras) == {
        "sd.ok.x": "1",
        "sd.bad.x": "2",
        "sd_error": 'SD-PARAM y in [bad] is not name="value"',
    }


@pytest.mark.parametrize(
    ("data", "text", "error"),
    [
        (
            b'<14>1 - gw01 app - - [a b="c"]no space',
            "no space",
            "no space between the structured data and the message",
        ),
        (
            b"<14>1 - gw01 app - - trunk down",
            "trunk down",
            "structured data is neither '-' nor '[...]'",
        ),
        (b'<14>1 - gw01 app - - [a b="c', '[a b="c', "the value of b in [a] is not closed"),
        (b"<14>1 - gw01 app - - [a", "[a", "SD element [a] is not closed by ']'"),
        (b"<14>1 - gw01 app - - -x", "-x", "structured data is neither '-' nor '[...]'"),
        (b"<14>1 - gw01 app - - [ x]", "[ x]", "an SD element without SD-ID"),
    ],
)
def test_rfc5424_with_broken_structured_data_keeps_the_header(
    data: bytes, text: str, error: str
) -> None:
    r = syslog(data)
    assert (r.device, r.source, r.text, r.extras["sd_error"]) == ("gw01", "app", text, error)


def test_text_after_1_and_no_timestamp_is_not_rfc5424() -> None:
    r = syslog(b"<13>1 apple pie is good and tasty")
    assert (r.device, r.source, r.text) == ("192.0.2.7", "", "1 apple pie is good and tasty")
    assert dict(r.extras) == {}


def test_space_between_pri_and_timestamp() -> None:
    r = syslog(b"<167> Mar  7 19:06:53 host tag: lease renewed")
    assert (r.device, r.source, r.text) == ("host", "tag", "lease renewed")
    assert r.device_time == utc(2026, 3, 7, 19, 6, 53)


def test_rfc3164_with_a_year_and_only_a_hostname() -> None:
    r = syslog(b"<14>Jan  6 2009 15:22:26 localhost")
    assert (r.device, r.source, r.text) == ("localhost", "", "")
    assert r.device_time == utc(2009, 1, 6, 15, 22, 26)


@pytest.mark.parametrize(
    ("data", "device_time"),
    [
        (b"<14>Aug 30 23:00:05 X4711", utc(2026, 8, 30, 23, 0, 5)),
        (b"<14>2003-08-24T05:14:15.000003-07:00 X4711", utc(2003, 8, 24, 12, 14, 15) + 3e-6),
    ],
)
def test_line_that_ends_right_after_the_hostname(data: bytes, device_time: float) -> None:
    r = syslog(data)
    assert (r.device, r.source, r.text) == ("X4711", "", "")
    assert r.device_time == pytest.approx(device_time)


def test_message_without_pri_is_still_a_log_line() -> None:
    r = syslog(b"Mar 10 11:00:00 host tag: no pri here")
    assert (r.kind, r.facility, r.severity, r.severity_raw) == (Kind.LOG, None, Severity.INFO, "")
    assert (r.device, r.source, r.text) == ("host", "tag", "no pri here")


def test_pri_out_of_range_is_kept_as_text() -> None:
    r = syslog(b"<192>hello")
    assert (r.facility, r.text) == (None, "<192>hello")


def test_invalid_utf8_is_replaced_in_text_and_kept_in_raw() -> None:
    r = syslog(b"<13>Mar 10 11:00:00 host tag: M\xfcller")
    assert r.text == "M\ufffdller"
    assert r.raw.endswith(b"M\xfcller")


@pytest.mark.parametrize(
    ("data", "reason"),
    [(b"", "empty"), (b"  \r\n", "empty"), (bytes(range(1, 32)) * 3, "not_text")],
)
def test_empty_or_binary_input_is_a_parse_error(data: bytes, reason: str) -> None:
    with pytest.raises(ParseError) as e:
        syslog(data)
    assert e.value.reason == reason


def test_raw_line_without_pri_is_plain_text() -> None:
    r = parse_line(
        b"12 apples  and pears", received_at=NOW, sender="192.0.2.9:41000", receiver="tcp"
    )
    assert (r.kind, r.text, r.device, r.facility, r.source) == (
        Kind.LOG,
        "12 apples  and pears",
        "192.0.2.9",
        None,
        "",
    )


def test_raw_line_with_pri_is_syslog() -> None:
    r = parse_line(
        b"<134>Mar 10 11:00:00 pbx1 LOG: up", received_at=NOW, sender="x", receiver="tcp"
    )
    assert (r.facility, r.device, r.source, r.text) == (16, "pbx1", "LOG", "up")


def _never_raises_but_parse_error(parse: object, data: bytes) -> None:
    try:
        r = parse(data, received_at=NOW, sender="192.0.2.1:1", receiver="t")  # type: ignore[operator]
    except ParseError as e:
        assert e.reason
        return
    assert isinstance(r, Record)
    assert r.raw == data


_syslogish = st.lists(
    st.one_of(
        st.sampled_from(
            [
                b"<13>",
                b"<134>",
                b"1 ",
                b"- ",
                b'[a b="c\\""]',
                b"Mar 10 11:00:00 ",
                b"*",
                b"123: ",
                b'<alarm type="alarm" code="1" severity="x"/>',
                b"<event><type>clear",
                b"\xef\xbb\xbf",
                b"2026-03-10T12:00:00Z ",
                b"host ",
                b"tag[1]: ",
                b"]",
                b"\xff",
            ]
        ),
        st.binary(max_size=20),
    ),
    max_size=12,
).map(b"".join)


@settings(max_examples=400, deadline=None)
@given(data=st.one_of(st.binary(max_size=300), _syslogish))
def test_any_bytes_give_a_record_or_a_parse_error(data: bytes) -> None:
    _never_raises_but_parse_error(parse_syslog, data)
    _never_raises_but_parse_error(parse_line, data)
