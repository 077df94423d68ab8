"""RFC 6587 framing: octet counting and LF / CRLF / NUL lines, decided per frame."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from notifier.ingest.parse.framing import FrameDecoder
from notifier.records import ParseError


def frames(items: list[bytes | ParseError]) -> list[bytes | tuple[str, str]]:
    """Errors as (reason, detail), so results compare by value."""
    return [(i.reason, str(i)) if isinstance(i, ParseError) else i for i in items]


def decode(data: bytes, max_frame_bytes: int = 65536, **kw: bool) -> list[bytes | tuple[str, str]]:
    d = FrameDecoder(max_frame_bytes, **kw)
    return frames(d.feed(data) + d.close())


def test_octet_counted_and_delimited_frames_mix_in_one_stream() -> None:
    stream = b"9 <13>hello<13>lf line\n<13>crlf line\r\n<13>nul line\x0015 <13>octet\ncount"
    assert decode(stream) == [
        b"<13>hello",
        b"<13>lf line",
        b"<13>crlf line",
        b"<13>nul line",
        b"<13>octet\ncount",
    ]


def test_frames_split_across_feeds_come_out_whole() -> None:
    d = FrameDecoder()
    assert d.feed(b"1") == []
    assert d.feed(b"3 <13>hel") == []
    assert d.feed(b"lo wo") == []
    assert d.feed(b"r<13>next li") == [b"<13>hello wor"]
    assert d.feed(b"ne\r") == []
    assert d.feed(b"\n") == [b"<13>next line"]


def test_empty_lines_are_skipped_silently() -> None:
    assert decode(b"\n\r\n\x00\n<13>a\n\n\n<13>b\n") == [b"<13>a", b"<13>b"]


def test_unterminated_last_line_is_a_frame_at_close() -> None:
    d = FrameDecoder()
    assert d.feed(b"<13>no newline") == []
    assert d.close() == [b"<13>no newline"]


def test_truncated_octet_counted_frame_is_an_error_at_close() -> None:
    assert decode(b"100 <13>short") == [
        ("truncated_frame", "connection closed 9 bytes into a frame of 100 bytes")
    ]


def test_oversized_line_is_refused_once_and_the_next_frame_still_arrives() -> None:
    out = decode(b"<13>" + b"x" * 100 + b"\n<13>next\n", max_frame_bytes=50)
    assert out == [("frame_too_large", "line is over the 50-byte limit"), b"<13>next"]


def test_oversized_octet_counted_frame_is_skipped_by_its_count() -> None:
    body = b"<13>" + b"y\n" * 40  # holds LFs that must not be read as frame ends
    out = decode(b"%d " % len(body) + body + b"8 <13>next", max_frame_bytes=50)
    assert out == [
        ("frame_too_large", "octet-counted frame of 84 bytes is over the 50-byte limit"),
        b"<13>next",
    ]


def test_endless_line_never_buffers_more_than_a_frame() -> None:
    d = FrameDecoder(1000)
    errors = []
    for _ in range(1000):
        errors += d.feed(b"z" * 997)
        assert d.buffered <= 1002
    assert frames(errors) == [("frame_too_large", "line is over the 1000-byte limit")]
    assert d.feed(b"\n<13>after\n") == [b"<13>after"]


def test_bad_octet_count_resyncs_at_the_next_line() -> None:
    assert decode(b"99999999999 <13>x y z\n<13>good\n") == [
        ("bad_octet_count", "octet count '99999999999' is not usable"),
        b"<13>good",
    ]


def test_digits_without_space_are_a_plain_line() -> None:
    assert decode(b"123abc\n") == [b"123abc"]


def test_a_line_starting_with_a_number_is_a_line_and_swallows_nothing() -> None:
    """A count is a count only when the "<" of a syslog PRI follows its space."""
    stream = b"2026 year line\n<13>next\n70000 calls dropped\r\nthird\n12 \n0 x\n4 <13>"
    assert decode(stream) == [
        b"2026 year line",
        b"<13>next",
        b"70000 calls dropped",
        b"third",
        b"12 ",
        b"0 x",
        b"<13>",
    ]


def test_a_number_and_space_at_the_end_of_a_read_waits_for_the_next_byte() -> None:
    d = FrameDecoder()
    assert d.feed(b"2026 ") == []
    assert d.feed(b"year line\n") == [b"2026 year line"]
    assert d.feed(b"7 ") == []
    assert d.feed(b"<13>a\nb") == [b"<13>a\nb"]
    assert d.feed(b"2026 ") == []
    assert d.close() == [b"2026 "]


def test_line_mode_keeps_a_leading_number_as_text() -> None:
    assert decode(b"12 apples\r\n3 pears\n", octet_counting=False) == [b"12 apples", b"3 pears"]


def test_line_of_exactly_the_limit_with_crlf_is_accepted_in_any_chunking() -> None:
    line = b"a" * 10
    assert decode(line + b"\r\n", max_frame_bytes=10) == [line]
    d = FrameDecoder(10)
    assert d.feed(line + b"\r") == []
    assert d.feed(b"\n") == [line]


_pieces = st.sampled_from(
    [b"\n", b"\r\n", b"\x00", b" ", b"5 ", b"12 <", b"0 ", b"99999999999 ", b"<13>", b"abc", b"7"]
)
_streams = st.lists(st.one_of(_pieces, st.binary(max_size=40)), max_size=30).map(b"".join)


@settings(max_examples=300, deadline=None)
@given(data=_streams, cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=12))
def test_any_chunking_gives_the_same_frames_as_one_feed(data: bytes, cuts: list[int]) -> None:
    whole = decode(data, max_frame_bytes=16)
    d = FrameDecoder(16)
    out: list[bytes | ParseError] = []
    start = 0
    for cut in sorted({c % (len(data) + 1) for c in cuts}):
        out += d.feed(data[start:cut])
        start = cut
    out += d.feed(data[start:])
    out += d.close()
    assert frames(out) == whole
    assert all(len(f) <= 16 for f in whole if isinstance(f, bytes))
