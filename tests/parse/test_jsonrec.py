"""The JSON records API body → Records, strictly: bad input is refused with the reason."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from notifier.ingest.parse.jsonrec import parse_json_records
from notifier.records import Kind, ParseError, Record, Severity, SeverityScheme

SENDER = "198.51.100.9:5555"


def parse(body: bytes | Any, scheme: SeverityScheme = SeverityScheme.EVENTS_API) -> list[Record]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return parse_json_records(
        data, received_at=2000.0, sender=SENDER, receiver="json", scheme=scheme, max_records=5
    )


def refused(body: bytes | Any) -> ParseError:
    with pytest.raises(ParseError) as info:
        parse(body)
    return info.value


def test_single_alarm_object_maps_every_events_api_field() -> None:
    body = json.dumps(
        {
            "type": "alarm",
            "severity": "Major",
            "active": True,
            "code": "0x00010002",
            "date": 1700000000,
            "host": "IP0011-42-04-a7",
            "serial": "009033000000",
            "source": "RELAY/RECH",
            "text": "Registration down",
            "xsl": "alarm.xsl",
            "details": '<relay prot="SH323"/>',
            "site": "Berlin",
        }
    ).encode()
    [record] = parse(body)
    assert record.kind is Kind.ALARM
    assert record.severity is Severity.MAJOR
    assert record.severity_raw == "Major"
    assert record.code == "0x00010002"
    assert record.device_time == 1700000000.0
    assert record.device == "IP0011-42-04-a7"
    assert record.serial == "009033000000"
    assert record.source == "RELAY/RECH"
    assert record.text == "Registration down"
    assert record.details == '<relay prot="SH323"/>'
    assert dict(record.extras) == {"active": "true", "xsl": "alarm.xsl", "site": "Berlin"}
    assert record.raw == body
    assert (record.sender, record.receiver, record.received_at) == (SENDER, "json", 2000.0)


def test_batch_keeps_order_and_each_record_has_its_own_raw() -> None:
    records = parse(
        [
            {"kind": "log", "msg": "line one"},
            {"type": "clear", "code": "0x1", "host": "gw"},
            {"type": "error", "text": "oops"},
        ]
    )
    assert [r.kind for r in records] == [Kind.LOG, Kind.CLEAR, Kind.EVENT]
    assert records[0].text == "line one"
    assert json.loads(records[1].raw) == {"type": "clear", "code": "0x1", "host": "gw"}
    assert records[0].device == "198.51.100.9"


def test_numeric_severity_per_scheme() -> None:
    record = {"type": "alarm", "code": "0x1", "severity": 2}
    assert parse(record)[0].severity is Severity.MAJOR
    assert parse(record, SeverityScheme.SDK)[0].severity is Severity.CRITICAL


def test_inactive_alarm_is_a_clear_and_active_alone_decides_the_kind() -> None:
    assert parse({"type": "alarm", "active": False, "code": "0x1"})[0].kind is Kind.CLEAR
    assert parse({"active": True, "code": "0x1"})[0].kind is Kind.ALARM
    assert parse({"text": "no type"})[0].kind is Kind.EVENT


def test_integer_code_is_written_as_the_devices_hex_form() -> None:
    assert parse({"type": "alarm", "code": 65538})[0].code == "0x00010002"


def test_dates_as_device_format_and_iso_8601() -> None:
    expected = dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC).timestamp()
    assert parse({"text": "a", "date": "20240102-030405"})[0].device_time == expected
    assert parse({"text": "a", "date": "2024-01-02T03:04:05Z"})[0].device_time == expected
    unset = parse({"text": "a", "date": 0})[0]
    assert unset.device_time is None
    assert unset.extras["date"] == "0"


def test_defaults_alarm_indeterminate_others_info() -> None:
    assert parse({"type": "alarm", "code": "0x1"})[0].severity is Severity.INDETERMINATE
    assert parse({"type": "log", "text": "x"})[0].severity is Severity.INFO


def test_unknown_severity_names_record_and_value_and_rejects_the_batch() -> None:
    error = refused([{"text": "fine"}, {"text": "bad", "severity": "apocalyptic"}])
    assert error.reason == "unknown_severity"
    assert "record 1" in str(error)
    assert "apocalyptic" in str(error)
    assert "whole batch of 2" in str(error)


def test_numeric_severity_outside_the_scheme_is_unknown() -> None:
    error = refused({"text": "x", "severity": 5})
    assert error.reason == "unknown_severity"
    assert "5" in str(error)


@pytest.mark.parametrize(
    ("record", "field"),
    [
        ({"text": ["a"]}, "'text'"),
        ({"text": "a", "host": {"x": 1}}, "'host'"),
        ({"text": "a", "active": "maybe"}, "'active'"),
        ({"text": "a", "severity": True}, "'severity'"),
        ({"text": "a", "date": "yesterday"}, "'date'"),
        ({"text": "a", "type": 3}, "'type'"),
    ],
)
def test_wrong_field_types_name_the_field_and_index(record: dict[str, Any], field: str) -> None:
    error = refused(record)
    assert error.reason == "bad_field"
    assert field in str(error)
    assert "record 0" in str(error)


def test_unknown_type_is_refused() -> None:
    error = refused({"type": "panic", "text": "x"})
    assert error.reason == "unknown_kind"
    assert "panic" in str(error)


def test_record_without_text_or_code_is_refused() -> None:
    assert refused({"type": "alarm", "host": "gw"}).reason == "empty"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"text": "M\xfcller"}', "invalid_utf8"),
        (b'{"text": "x"', "invalid_json"),
        (b'{"text": NaN}', "invalid_json"),
        (b"", "invalid_json"),
        (b"[]", "empty"),
        (b'"just text"', "bad_record"),
        (b"[1]", "bad_record"),
        (json.dumps([{"text": "x"}] * 6).encode(), "too_many_records"),
    ],
)
def test_bodies_that_are_not_records_are_refused(body: bytes, reason: str) -> None:
    assert refused(body).reason == reason


def test_utf8_bom_is_accepted() -> None:
    assert parse(b'\xef\xbb\xbf{"text": "x"}')[0].text == "x"


@given(st.binary(max_size=300))
def test_arbitrary_bytes_give_records_or_a_parse_error(body: bytes) -> None:
    try:
        parse(body)
    except ParseError as e:
        assert e.reason


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
record_like = st.dictionaries(
    st.sampled_from(
        [
            "type",
            "kind",
            "severity",
            "active",
            "code",
            "date",
            "host",
            "serial",
            "source",
            "text",
            "msg",
            "xsl",
            "details",
            "other",
        ]
    ),
    json_values,
    max_size=8,
)


@given(st.one_of(json_values, record_like, st.lists(record_like, max_size=3)))
def test_arbitrary_json_gives_records_or_a_parse_error(value: Any) -> None:
    try:
        records = parse(json.dumps(value).encode())
    except ParseError as e:
        assert e.reason
    else:
        assert all(r.receiver == "json" for r in records)
