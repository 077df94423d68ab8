"""The fast syslog parser reads every message exactly as the original, straightforward one did.

`syslog_reference` is the parser before it was optimised. For generated messages, mostly of
the RFC 3164 shape the fast path takes, with the near misses that must not take it (a host
that looks like a year, a tag too long, a date that does not exist), both give the same Record
field for field (all but the id, which is new for every Record).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import subprocess
import sys
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from notifier.ingest.parse import syslog
from notifier.ingest.parse.line import parse_line
from notifier.ingest.parse.syslog import (
    decode_text,
    parse_fast_3164,
    parse_fast_3164_python,
    parse_syslog,
)
from notifier.records import ParseError, Record
from tests.parse import syslog_reference as reference

NOW = dt.datetime(2026, 3, 10, 12, 0, 0, tzinfo=dt.UTC).timestamp()
FIELDS = [f.name for f in dataclasses.fields(Record) if f.name != "id"]


def fields(record: Record) -> dict[str, object]:
    return {name: getattr(record, name) for name in FIELDS}


def outcome(parse: object, data: bytes, received_at: float) -> object:
    """The Record's fields, or the ParseError's (reason, detail)."""
    try:
        r = parse(data, received_at=received_at, sender="192.0.2.7:514", receiver="t")  # type: ignore[operator]
    except ParseError as e:
        return (e.reason, str(e))
    return fields(r)


def same_as_reference(data: bytes, received_at: float = NOW) -> None:
    assert outcome(parse_syslog, data, received_at) == outcome(
        reference.parse_syslog, data, received_at
    ), data


def utc(year: int, month: int, day: int, hh: int = 0, mm: int = 0, ss: int = 0) -> float:
    return dt.datetime(year, month, day, hh, mm, ss, tzinfo=dt.UTC).timestamp()


@pytest.mark.parametrize(
    "data",
    [
        b"<134>Mar 10 11:59:58 gw01 SIP[1000]: seq=1 REGISTER",
        b"<134>Mar  1 11:59:58 gw01 SIP: two spaces before a one-digit day",
        b"<13>mar 10 11:59:58 gw01 tag: month in lower case",
        b"<13>Mar 10 11:59:58 2025 tag: a host that is a year is a year",
        b"<13>Mar 10 11:59:58 UTC host tag: a zone, not a host",
        b"<13>Mar 10 11:59:58 tag: no host",
        b"<13>Mar 10 11:59:58 host: tag",
        b"<13>Mar 10 11:59:58 host: tag: a tag where a host would be",
        b"<13>Feb 30 11:59:58 host tag: no such date",
        b"<13>Mar 10 24:00:00 host tag: no such time",
        b"<13>Foo 10 11:59:58 host tag: no such month",
        b"<192>Mar 10 11:59:58 host tag: PRI out of range",
        b"<13>Mar 10 11:59:58 host tag[]: empty pid",
        b"<13>Mar 10 11:59:58 host tag[1 2]: space in pid",
        b"<13>Mar 10 11:59:58 host " + b"t" * 65 + b": tag too long",
        b"<13>Mar 10 11:59:58 host tag:",
        b"<13>Mar 10 11:59:58 host tag:\tafter a tab",
        b"<13>Mar 10 11:59:58 host tag:no space",
        b"<13>Mar 10 11:59:58 h\xc3\xb4st t\xc3\xa4g: unicode host and tag",
        b"<13>Mar 10 11:59:58 host tag: M\xfcller",
        b'<13>Mar 10 11:59:58 host tag: <alarm type="alarm" code="0x1" severity="major"/>',
        b"<13>Mar 10 11:59:58 host tag: <broken",
        b"<13>Mar 10 11:59:58 1234:5 tag: host with a colon after four digits",
        b"<167> Mar  7 19:06:53 host tag: a space after the PRI",
        b"<14>Jan  6 2009 15:22:26 localhost",
        b"<14>Aug 30 23:00:05 X4711",
        b"<14>Aug 30 23:00:05 X4711 \t",
        b"<14>2003-08-24T05:14:15.000003-07:00 X4711",
        b"<14>Aug 30 23:00:05 tag:",
    ],
)
def test_edge_cases_read_as_before(data: bytes) -> None:
    same_as_reference(data)


@pytest.mark.parametrize(
    ("data", "received_at"),
    [
        (b"<13>Dec 31 23:59:59 gw01 tag: x", utc(2027, 1, 1, 0, 0, 5)),
        (b"<13>Jan  1 00:00:01 gw01 tag: x", utc(2026, 12, 31, 23, 59, 50)),
        (b"<13>Feb 29 12:00:00 gw01 tag: leap day", utc(2025, 3, 1)),
        (b"<13>Feb 29 12:00:00 gw01 tag: leap day", utc(2028, 3, 1)),
        (b"<13>Jul  2 12:00:00 gw01 tag: half a year away", utc(2026, 1, 1)),
        (b"<13>Jan  1 00:00:00 gw01 tag: x", utc(1, 1, 1)),
        (b"<13>Dec 31 23:59:59 gw01 tag: x", utc(9999, 12, 31)),
        (b"<13>Mar 10 11:59:58 gw01 tag: x", float("nan")),
        (b"<13>Mar 10 11:59:58 gw01 tag: x", 1e300),
    ],
)
def test_year_choice_reads_as_before(data: bytes, received_at: float) -> None:
    same_as_reference(data, received_at)


@pytest.mark.parametrize(
    "stamp", [b"Jan  1 00:00:00", b"Jul  2 12:00:00", b"Dec 31 23:59:59", b"Feb 29 06:00:00"]
)
def test_the_same_stamp_over_three_years_of_arrivals_reads_as_before(stamp: bytes) -> None:
    """A timestamp seen before is remembered; arriving months later it must not be stale."""
    data = b"<13>" + stamp + b" gw01 tag: x"
    start = utc(2025, 1, 1)
    for step in range(3 * 365 * 4):  # every 6 hours, forwards and then backwards
        same_as_reference(data, start + step * 6 * 3600 + 0.25)
    for step in reversed(range(0, 3 * 365 * 4, 7)):
        same_as_reference(data, start + step * 6 * 3600 - 0.25)


def mostly(usual: str, *others: str) -> st.SearchStrategy[str]:
    """`usual` six times in seven: most lines are the fast shape, with one or two near misses."""
    return st.sampled_from([usual] * 6 * len(others) + list(others))


_parts = [
    mostly("<134>", "<13>", "<0>", "<191>", "<192>", "<999>", "<013>", "", "<1>1 ", "<13> "),
    mostly("Mar", "Feb", "Jun", "Jul", "Dec", "dec", "FEB", "Foo", "Ma"),
    mostly(" ", "  ", "\t", "   "),
    st.integers(0, 39).map(str),
    mostly(" ", "  ", " 2025 ", "\t"),
    st.integers(0, 29).map("{:02d}".format),
    st.just(":"),
    st.integers(0, 69).map("{:02d}".format),
    st.just(":"),
    st.integers(0, 69).map("{:02d}".format),
    mostly("", ".5", ":", " 2025", " UTC"),
    mostly(" ", "  ", "\t", ": "),
    mostly("gw01", "192.0.2.7", "2025", "20255", "UTC", "GMT", "host:", "a:b", "h%1", "hôst", "-"),
    mostly(" ", "  ", "\t", ""),
    mostly("SIP", "tag", "x" * 64, "x" * 65, "%SYS-5-CONFIG_I", "t[1", "a]b", "[1]", "", "a b"),
    mostly("[1000]", "", "[]", "[1 2]", "[" + "9" * 33 + "]", "[x]"),
    mostly(": ", ":", ":\t", " ", "::", ": <x>", ': <alarm type="clear" code="1"/>'),
]


_HOST_PART = 12  # the index of the host in `_parts`


@st.composite
def rfc3164_lines(draw: st.DrawFn) -> bytes:
    parts = [draw(part) for part in _parts]
    if draw(st.integers(0, 9)) == 0:  # a line that ends after the host (and maybe a space)
        return "".join(parts[: _HOST_PART + draw(st.integers(1, 2))]).encode()
    return "".join(parts).encode() + draw(st.binary(max_size=40))


_sd_pieces = st.sampled_from(
    [
        "-",
        '[a b="c"]',
        '[exampleSDID@32473 iut="3" eventSource="App\\"li\\]ca"]',
        "[timeQuality]",
        '[a b= "c"]',
        '[a b="c" d]',
        '[a b="c',
        "[a",
        "[ x]",
        '[a b="c"]',
        "no-sd",
        "-x",
        "",
        " ",
        "\ufeff",
    ]
)


@st.composite
def rfc5424_lines(draw: st.DrawFn) -> bytes:
    """RFC 5424 with structured data valid, not quite valid, or missing."""
    stamp = draw(st.sampled_from(["-", "2026-03-10T12:00:01.5+02:00", "2026-13-40T99:00:00Z", "x"]))
    fields = draw(st.sampled_from(["host app 77 ID47", "- - - -", "h a p m"]))
    sd = "".join(draw(st.lists(_sd_pieces, min_size=1, max_size=3)))
    tail = draw(st.sampled_from(["", " msg", "msg", " \ufeffmsg", "  two"]))
    return f"<165>1 {stamp} {fields} {sd}{tail}".encode()


@settings(max_examples=1000, deadline=None)
@given(data=rfc5424_lines())
def test_generated_rfc5424_lines_read_as_before(data: bytes) -> None:
    same_as_reference(data)


_received = st.one_of(
    st.just(NOW),
    st.floats(min_value=0, max_value=4e9),
    st.sampled_from([utc(2026, 1, 1), utc(2026, 1, 1) - 1e-6, utc(2026, 7, 2, 12)]),
)


@settings(max_examples=2000, deadline=None)
@given(data=rfc3164_lines(), received_at=_received)
def test_generated_rfc3164_lines_read_as_before(data: bytes, received_at: float) -> None:
    same_as_reference(data, received_at)


@settings(max_examples=500, deadline=None)
@given(data=st.binary(max_size=120))
def test_any_bytes_read_as_before(data: bytes) -> None:
    same_as_reference(data)


@settings(max_examples=500, deadline=None)
@given(text=st.text(max_size=60))
def test_decode_text_refuses_and_keeps_what_it_did(text: str) -> None:
    data = text.encode("utf-8", "surrogatepass")
    assert decoded(decode_text, data) == decoded(reference.decode_text, data)


def decoded(decode: Callable[[bytes], str], data: bytes) -> object:
    try:
        return decode(data)
    except ParseError as e:
        return (e.reason, str(e))


def test_raw_tcp_line_with_pri_takes_the_same_fast_path() -> None:
    data = b"<134>Mar 10 11:59:58 gw01 SIP[7]: up"
    line = parse_line(data, received_at=NOW, sender="192.0.2.7:514", receiver="t")
    assert fields(line) == outcome(reference.parse_syslog, data, NOW)


# Both batch readers: the compiled one (what `parse_fast_3164` runs) and the Python one (what
# runs where nothing was compiled). Each is held to the reference parser on its own.
BatchReader = Callable[..., list[Record | None]]
READERS = [
    pytest.param(parse_fast_3164, id="compiled"),
    pytest.param(parse_fast_3164_python, id="python"),
]


def read_in_one_batch(
    messages: list[bytes], received_at: float = NOW, read: BatchReader = parse_fast_3164
) -> list[Record | None]:
    frames = [(data, "192.0.2.7:514") for data in messages]
    ids = [f"id{i}" for i in range(len(messages))]
    return read(frames, ids, received_at=received_at, receiver="t")


def batch_reads_as_reference(
    messages: list[bytes], received_at: float, read: BatchReader = parse_fast_3164
) -> None:
    """Each message the batch takes is read as the original parser read it, with its own id;
    the ones it leaves (None) are for `parse_syslog`, which the tests above hold to the same."""
    records = read_in_one_batch(messages, received_at, read)
    for i, (data, record) in enumerate(zip(messages, records, strict=True)):
        if record is not None:
            assert fields(record) == outcome(reference.parse_syslog, data, received_at), data
            assert record.id == f"id{i}"


def test_the_compiled_reader_is_built_and_used() -> None:
    """`pip install` compiles it where there is a C compiler, as on every machine the tests
    run on: without this, the tests below would test the Python reader twice."""
    assert syslog._native is not None, "the compiled hot loops were not built"
    assert parse_fast_3164 is syslog.parse_fast_3164


def test_pure_python_in_the_environment_chooses_the_python_reader() -> None:
    code = (
        "from notifier.ingest.parse import framing, syslog; from notifier import speedups; "
        "print(syslog._native is None and speedups.native is None "
        "and framing._split_lines is framing.split_lines_python)"
    )
    for env, python in (({}, "False"), ({"PURE_PYTHON": "1"}, "True")):
        run = subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            check=True,
        )
        assert run.stdout.strip() == python, env


_batches = st.lists(st.one_of(rfc3164_lines(), rfc5424_lines(), st.binary(max_size=80)))


@pytest.mark.parametrize("read", READERS)
@settings(max_examples=500, deadline=None)
@given(messages=_batches, received_at=_received)
def test_a_read_of_many_generated_lines_in_one_batch_reads_as_before(
    read: BatchReader, messages: list[bytes], received_at: float
) -> None:
    batch_reads_as_reference(messages, received_at, read)


@settings(max_examples=1000, deadline=None)
@given(messages=_batches, received_at=_received)
def test_the_compiled_reader_takes_every_line_the_python_reader_takes(
    messages: list[bytes], received_at: float
) -> None:
    """Not only the same Records: the same lines left to the full parser, so the compiled
    path is never slower by sending a line the long way."""
    compiled = read_in_one_batch(messages, received_at, parse_fast_3164)
    python = read_in_one_batch(messages, received_at, parse_fast_3164_python)
    assert [r is None for r in compiled] == [r is None for r in python], messages
    assert compiled == python


@pytest.mark.parametrize("read", READERS)
def test_a_bench_read_is_taken_whole_with_shared_fields_and_own_texts(read: BatchReader) -> None:
    """A read of many lines from one host: every line taken, each with its own text and id."""
    lines = [
        f"<134>Mar 10 11:59:{i % 60:02d} gw01 SIP[{i % 3}]: seq={i}".encode() for i in range(300)
    ]
    records = read_in_one_batch(lines, NOW, read)
    assert all(r is not None for r in records)
    assert [r.text for r in records if r] == [f"seq={i}" for i in range(300)]
    assert [r.extras for r in records[:3] if r] == [
        {"procid": "0"},
        {"procid": "1"},
        {"procid": "2"},
    ]
    batch_reads_as_reference(lines, NOW, read)


@pytest.mark.parametrize(
    "data",
    [
        b"<134>Mar 10 11:59:58 gw01 SIP[1000]: seq=1 REGISTER\r\n",
        b"<13>Mar 10 11:59:58 host tag: M\xfcller",
        b"<13>Mar 10 11:59:58 host tag: tab\there",
        b"<13>Mar 10 11:59:58 host tag: \x00\x01\x02\x03\x04\x05",
        b'<13>Mar 10 11:59:58 host tag: <alarm type="alarm" code="0x1" severity="major"/>',
        b"<013>Mar 10 11:59:58 host tag: x",
        b"",
    ],
)
@pytest.mark.parametrize("read", READERS)
def test_edge_cases_in_a_batch_read_as_before(read: BatchReader, data: bytes) -> None:
    batch_reads_as_reference([data], NOW, read)


@pytest.mark.parametrize("read", READERS)
def test_the_usual_line_is_read_by_the_batch_and_an_alarm_is_left_to_the_full_parser(
    read: BatchReader,
) -> None:
    usual = b"<134>Mar 10 11:59:58 gw01 SIP[1000]: seq=1 REGISTER"
    alarm = b'<134>Mar 10 11:59:58 gw01 ALARM: <alarm type="alarm" code="0x1" severity="major"/>'
    taken, left = read_in_one_batch([usual, alarm], NOW, read)
    assert taken is not None and taken.source == "SIP" and taken.extras == {"procid": "1000"}
    assert left is None
    full = parse_syslog(alarm, received_at=NOW, sender="192.0.2.7:514", receiver="t")
    assert full.kind == "alarm"
