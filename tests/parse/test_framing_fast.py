"""The frame decoder with its bulk line path frames every stream exactly as the original did.

`framing_reference` is the decoder before it split many lines at once. For generated streams
(lines, CR LF, NUL, octet counts good and bad, oversized frames) fed in generated chunks, both
give the same frames and errors in the same order, with and without octet counting; with the
bulk split compiled (notifier/_speedups.c, what runs) and in Python (where nothing is built).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from notifier.ingest.parse import framing
from notifier.ingest.parse.framing import FrameDecoder
from notifier.records import ParseError
from tests.parse import framing_reference as reference


def run(decoder: FrameDecoder | reference.FrameDecoder, chunks: list[bytes]) -> list[object]:
    """Frames and (reason, detail) of errors, each feed's output apart, then close's."""
    out: list[object] = []
    for chunk in [*chunks, None]:
        got = decoder.feed(chunk) if chunk is not None else decoder.close()
        out.append([(f.reason, str(f)) if isinstance(f, ParseError) else f for f in got])
    out.append(decoder.buffered)
    return out


def same_as_reference(chunks: list[bytes], max_frame_bytes: int, octet_counting: bool) -> None:
    ours = FrameDecoder(max_frame_bytes, octet_counting=octet_counting)
    theirs = reference.FrameDecoder(max_frame_bytes, octet_counting=octet_counting)
    assert run(ours, chunks) == run(theirs, chunks), chunks


SPLITTERS = [
    pytest.param(framing._split_lines, id="compiled"),
    pytest.param(framing.split_lines_python, id="python"),
]


@pytest.fixture(params=SPLITTERS)
def splitter(request: pytest.FixtureRequest) -> Iterator[None]:
    """Runs the test with the decoder's bulk split set to each implementation."""
    before = framing._split_lines
    framing._split_lines = request.param
    yield
    framing._split_lines = before


def test_the_compiled_split_is_built_and_used() -> None:
    assert framing.native is not None, "the compiled hot loops were not built"
    assert framing._split_lines is framing.native.lines


@pytest.mark.usefixtures("splitter")
def test_many_lines_in_one_read_with_blank_and_counted_frames_between() -> None:
    stream = (
        b"<13>one\n<13>two\r\n\r\n\x00<13>three\x00\r\r<13>four\r\n"
        b"11 <13>counted<13>five\n12abc\n<13>six"
    )
    for octet_counting in (True, False):
        same_as_reference([stream], 65536, octet_counting)
        same_as_reference([stream[:17], stream[17:40], stream[40:]], 8, octet_counting)


_pieces = st.sampled_from(
    [
        b"\n",
        b"\r\n",
        b"\r",
        b"\x00",
        b" ",
        b"5 ",
        b"12 ",
        b"3 <",
        b"2026 year line",
        b"0 ",
        b"99999999999 ",
        b"<13>",
        b"<134>Mar 10 11:59:58 gw01 SIP[1000]: line",
        b"abc",
        b"7",
        b"x" * 20,
    ]
)
_streams = st.lists(st.one_of(_pieces, st.binary(max_size=30)), max_size=40).map(b"".join)


@pytest.mark.usefixtures("splitter")
@settings(
    max_examples=600, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    data=_streams,
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=10),
    max_frame_bytes=st.sampled_from([1, 8, 16, 64, 65536]),
    octet_counting=st.booleans(),
)
def test_any_stream_in_any_chunks_frames_as_before(
    data: bytes, cuts: list[int], max_frame_bytes: int, octet_counting: bool
) -> None:
    points = [0, *sorted({c % (len(data) + 1) for c in cuts}), len(data)]
    chunks = [data[a:b] for a, b in itertools.pairwise(points)]
    same_as_reference(chunks, max_frame_bytes, octet_counting)
